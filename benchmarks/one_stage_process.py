"""``--jobs 1`` builds of several models: this checkout (the jobs share one stage process, one
TensorFlow import) against an earlier commit of the project (``--before``, a git ref: a stage
process per model), alternated in one run.

Two model sets, each built into a fresh folder with the local runner and the default modes:
four copies of the bundled sample (small models, where the import dominates) and the sample
with MobileNetV2 alpha 0.35 96x96 (keras.applications, weights=None).

    python benchmarks/one_stage_process.py --before <ref> [--rounds 3]

The earlier commit runs from a temporary ``git worktree`` with this interpreter (its own
``converters`` package comes first on the path: the command runs in its folder).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import checkouts  # noqa: E402
from benchmarks.models import mobilenet_96  # noqa: E402

ROOT = checkouts.ROOT


def build(checkout: Path, models: list[Path], out: Path) -> float:
    """Wall seconds of one ``invoke convert --jobs 1`` run from ``checkout``."""
    start = time.perf_counter()
    checkouts.convert_from(checkout, models, out, "--jobs", "1")
    wall = time.perf_counter() - start
    shutil.rmtree(out)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="git ref of the earlier commit")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        with checkouts.earlier_commit(args.before, work / "earlier") as earlier:
            mobilenet = mobilenet_96(work)
            copies = []
            for index in range(4):
                copies.append(work / f"sample{index}.h5")
                shutil.copy(ROOT / "model" / "sample.h5", copies[-1])
            sets = {"four sample models": copies,
                    "sample + MobileNetV2 0.35 96x96": [ROOT / "model" / "sample.h5", mobilenet]}
            walls: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for name, models in sets.items():
                    for label, checkout in (("before", earlier), ("now", ROOT)):  # alternated
                        walls.setdefault((name, label), []).append(
                            build(checkout, models, work / "build"))
    print(f"--jobs 1, local runner, {os.cpu_count()} cores; median of {args.rounds} alternated "
          f"rounds; before: {args.before}\n")
    print("| models | a stage process per model s | one stage process s | ratio | rounds now/before |")
    print("|---|---|---|---|---|")
    for name in sets:
        before, now = walls[(name, "before")], walls[(name, "now")]
        rounds = ", ".join(f"{n / b:.2f}" for b, n in zip(before, now, strict=True))
        print(f"| {name} | {statistics.median(before):.1f} | {statistics.median(now):.1f} | "
              f"{statistics.median(now) / statistics.median(before):.2f} | {rounds} |")


if __name__ == "__main__":
    main()
