"""Importing a library without the optional modules it would pull in."""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import types
from collections.abc import Iterator


def refused(*names: str) -> contextlib.AbstractContextManager[None]:
    """While the block runs, importing one of ``names`` (top-level packages not imported yet)
    raises ModuleNotFoundError, as when it is not installed: for a library that imports an
    optional package for something no stage uses and goes on without it. Afterwards the
    packages import as usual. Not for use while another thread imports."""
    return _in_place_of(dict.fromkeys(names))


def stood_in(*names: str) -> contextlib.AbstractContextManager[None]:
    """While the block runs, importing one of ``names`` (dotted module names, none imported
    yet) gives an empty module instead: for a library that imports a module at its top only
    to use it in functions no stage calls. Touching the empty module's attributes raises
    AttributeError. Afterwards the modules import as usual (the library keeps its empty
    one). Not for use while another thread imports."""
    return _in_place_of({name: _stand_in(name) for name in names})


def _stand_in(name: str) -> types.ModuleType:
    module = types.ModuleType(name, "an empty stand-in (converters.imports.stood_in)")
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__path__ = []  # a package, so that its submodules' stand-ins import
    return module


@contextlib.contextmanager
def _in_place_of(entries: dict[str, types.ModuleType | None]) -> Iterator[None]:
    """``sys.modules`` holds ``entries`` (None: import refused) for the modules not imported
    yet while the block runs, and forgets them afterwards."""
    placed = {name: module for name, module in entries.items() if name not in sys.modules}
    sys.modules.update(placed)  # type: ignore[arg-type]  # None refuses the import
    try:
        yield
    finally:
        for name in placed:
            del sys.modules[name]
