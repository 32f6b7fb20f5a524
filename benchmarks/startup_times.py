"""What a user waits for before any conversion work: ``invoke --list``, a no-op rebuild of the
bundled sample, and the sample's first build, against a baseline commit, alternated in one run.

Each figure is the median of real command lines (``python -m invoke``, Python's start-up
included) run from a checkout: this one, and the baseline commit's in a temporary git worktree
(the same virtual environment; the worktree's own ``converters`` package is imported, since
Python searches the working folder first). The sample builds with ``--runner local``: what
README's first command does in a fresh clone, where no toolchain image is built yet.

    python benchmarks/startup_times.py [--baseline REF] [--rounds N]

``PYTHONDONTWRITEBYTECODE`` is reported: when it is set, Python compiles the project's modules
on every start (site-packages keep their bytecode from pip), which is part of what is measured.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import checkouts  # noqa: E402

ROOT = checkouts.ROOT
GOALS = {"invoke --list": 0.3, "no-op rebuild": 0.5, "first build": 8.0}


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - start


def convert(out: Path) -> list[str]:
    return [sys.executable, "-m", "invoke", "convert", "--out", str(out), "--runner", "local"]


def measurements(checkout: Path, work: Path) -> dict[str, Callable[[int], float]]:
    """Each measurement of one checkout, as a function of the round number."""
    noop_out = work / f"{checkout.name}-noop"

    def listing(_: int) -> float:
        return timed([sys.executable, "-m", "invoke", "--list"], checkout)

    def noop(_: int) -> float:
        if not noop_out.exists():
            timed(convert(noop_out), checkout)  # the build the rebuilds find fresh
        return timed(convert(noop_out), checkout)

    def first(round_number: int) -> float:
        out = work / f"{checkout.name}-first-{round_number}"
        took = timed(convert(out), checkout)
        shutil.rmtree(out)
        return took

    return {"invoke --list": listing, "no-op rebuild": noop, "first build": first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="3911402",
                        help="the commit to compare with (default: before the start-up work)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        with checkouts.earlier_commit(args.baseline, work / "baseline") as baseline:
            measured = {"baseline": measurements(baseline, work), "now": measurements(ROOT, work)}
            times: dict[tuple[str, str], list[float]] = {}
            for round_number in range(args.rounds):
                for name in GOALS:
                    for which in ("baseline", "now"):  # alternated: both see the same machine
                        took = measured[which][name](round_number)
                        times.setdefault((which, name), []).append(took)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, PYTHONDONTWRITEBYTECODE="
          f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '') or 'unset'}; baseline {args.baseline}; "
          f"median of {args.rounds} alternated runs, seconds.\n")
    print("| measure | baseline s | now s | now / baseline | goal s |")
    print("|---|---|---|---|---|")
    for name, goal in GOALS.items():
        before = statistics.median(times[("baseline", name)])
        after = statistics.median(times[("now", name)])
        print(f"| {name} | {before:.2f} | {after:.2f} | {after / before:.2f} | {goal} |")


if __name__ == "__main__":
    main()
