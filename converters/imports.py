"""Importing a library without the optional modules it would pull in."""

from __future__ import annotations

import contextlib
import sys
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
