"""An earlier commit of the project checked out beside this one, for benchmarks that compare."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
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


def convert_from(checkout: Path, models: list[Path], out: Path, *flags: str) -> None:
    """``invoke convert`` of ``models`` on the bundled dataset with the local runner, run from
    ``checkout`` (its own ``converters`` first on the path); the output's end if it fails."""
    command = [sys.executable, "-m", "invoke", "convert", *[f"--model={m}" for m in models],
               "--out", str(out), "--dataset", str(ROOT / "dataset"), "--runner", "local", *flags]
    run = subprocess.run(command, cwd=checkout, capture_output=True, text=True,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(checkout)})
    if run.returncode:
        raise SystemExit(f"the build from {checkout} failed (exit {run.returncode}):\n"
                         f"{(run.stdout + run.stderr)[-3000:]}")
