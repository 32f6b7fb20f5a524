"""Console output shared by the host and stage processes: messages, warnings, progress bars."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from functools import cache
from typing import TYPE_CHECKING, TypeVar

from converters.native_output import XNNPACK_NOTICE, lines_dropped

if TYPE_CHECKING:
    from rich.console import Console

T = TypeVar("T")

# A stage process writes into a pipe that the build copies to its terminal: the build sets this
# variable when it is on a terminal, so the stage's progress bars still animate.
FORCE_TERMINAL = "CONVERTERS_FORCE_TERMINAL"
_forced = bool(os.environ.get(FORCE_TERMINAL))


# rich is imported when the first line is printed, not when a command starts (listing the
# tasks or deciding that nothing changed prints through print() alone).
@cache
def standard() -> Console:
    """The console on stdout. Off a terminal (CI logs, pipes) rich would assume 80 columns;
    tables need more, unless COLUMNS says how wide the output is."""
    from rich.console import Console

    return Console(stderr=False, highlight=False, soft_wrap=True,
                   force_terminal=True if _forced else None,
                   width=None if sys.stdout.isatty() or _forced or os.environ.get("COLUMNS")
                   else 120)


@cache
def errors() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def info(message: str) -> None:
    standard().print(message, markup=False)


def warn(message: str) -> None:
    errors().print(f"warning: {message}", style="yellow", markup=False)


def error(message: str) -> None:
    errors().print(f"error: {message}", style="bold red", markup=False)


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (plain, non-animated output when not on a terminal)."""
    if not standard().is_terminal:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=standard(), transient=True) as bar:
        yield from bar.track(items, description=description, total=total)


def flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


# Informational lines that TensorFlow's and LiteRT's C++ code writes straight to file
# descriptor 2. TF_CPP_MIN_LOG_LEVEL does not reach them: TensorFlow 2.21 logs the oneDNN line
# through absl before absl::InitializeLog() runs (absl then writes every message to stderr), and
# LiteRT prints the XNNPACK line with its own logger. Also ai-edge-quantizer's progress bars
# (tqdm: whole bars, each ending in a carriage return; text written onto a bar's line is kept),
# which it shows for 100 tensors or more to quantize even when asked not to. Nothing else is
# dropped.
NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|[IW]\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on"
    rf"|{XNNPACK_NOTICE}"
    r"|fully_quantize: \d+, inference_type: \d+"
    r"|(Applying Transformations to tensors|Running Calibration):: +\d+%\|[^|\r\n]*\| *\d+/\d+ "
    r"\[[^\]\r\n]*\]\s*$"
    r"|\s*\r$")


def native_noise_filtered() -> AbstractContextManager[None]:
    """Native code's informational lines (NATIVE_NOISE) dropped from what the block writes to
    stderr; warnings and errors still reach the user, after the block."""
    return lines_dropped(NATIVE_NOISE)
