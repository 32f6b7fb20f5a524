"""An earlier commit of the project checked out beside this one, for benchmarks that compare."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def earlier_commit(ref: str, folder: Path) -> Iterator[Path]:
    """``ref`` as a temporary detached ``git worktree`` in ``folder``, removed afterwards."""
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), ref], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=ROOT,
                       check=False, capture_output=True)
