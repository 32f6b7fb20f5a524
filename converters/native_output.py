"""Lines that native code (TensorFlow's and LiteRT's C++) writes straight to file descriptor 2,
dropped by pattern while everything else still reaches the user. Standard library only: the
build uses it (converters.console) and bundles ship it beside run.py."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

XNNPACK_NOTICE = r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."


@contextmanager
def lines_dropped(pattern: re.Pattern[str]) -> Iterator[None]:
    """Capture what is written to descriptor 2 inside the block, then write it back without the
    lines ``pattern`` matches (warnings and errors still reach the user, after the block)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not pattern.match(line)))
            sys.stderr.flush()
