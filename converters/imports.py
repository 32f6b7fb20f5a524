"""Importing a library without the optional modules it would pull in."""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import types
from collections.abc import Iterator


@contextlib.contextmanager
def refused(*names: str) -> Iterator[None]:
    """While the block runs, importing one of ``names`` (top-level packages not imported yet)
    raises ModuleNotFoundError, as when it is not installed: for a library that imports an
    optional package for something no stage uses and goes on without it. Afterwards the
    packages import as usual. Not for use while another thread imports."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # import refused
    try:
        yield
    finally:
        for name in hidden:
            del sys.modules[name]


@contextlib.contextmanager
def stood_in(*names: str) -> Iterator[None]:
    """While the block runs, importing one of ``names`` (dotted module names, none imported
    yet) gives an empty module instead: for a library that imports a module at its top only
    to use it in functions no stage calls. Touching the empty module's attributes raises
    AttributeError. Afterwards the modules import as usual (the library keeps its empty
    one). Not for use while another thread imports."""
    missing = [name for name in names if name not in sys.modules]
    for name in missing:
        stand_in = types.ModuleType(name, "an empty stand-in (converters.imports.stood_in)")
        stand_in.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        stand_in.__path__ = []  # a package, so that its submodules' stand-ins import
        sys.modules[name] = stand_in
    try:
        yield
    finally:
        for name in missing:
            del sys.modules[name]
