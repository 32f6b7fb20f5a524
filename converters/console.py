"""Console output shared by the host and stage processes: messages, warnings, progress bars."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

T = TypeVar("T")

# A stage process writes into a pipe that the build copies to its terminal: the build sets this
# variable when it is on a terminal, so the stage's progress bars still animate.
FORCE_TERMINAL = "CONVERTERS_FORCE_TERMINAL"
_forced = bool(os.environ.get(FORCE_TERMINAL))
# Off a terminal (CI logs, pipes) rich would assume 80 columns; tables need more.
console = Console(stderr=False, highlight=False, soft_wrap=True,
                  force_terminal=True if _forced else None,
                  width=None if sys.stdout.isatty() or _forced else 120)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


def info(message: str) -> None:
    console.print(message, markup=False)


def warn(message: str) -> None:
    error_console.print(f"warning: {message}", style="yellow", markup=False)


def error(message: str) -> None:
    error_console.print(f"error: {message}", style="bold red", markup=False)


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (plain, non-animated output when not on a terminal)."""
    if not console.is_terminal:
        yield from items
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        yield from bar.track(items, description=description, total=total)


def flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
