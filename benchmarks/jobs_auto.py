"""``--jobs auto`` against ``--jobs 1`` and ``--jobs 2``, on every core of this machine and on one
core (``taskset``), alternated in one run; and how many cores one stage process keeps busy,
which is what the rule for larger machines rests on.

Each build is a real ``invoke convert`` of two models (the bundled sample and MobileNetV2 alpha
0.35 96x96, keras.applications, weights=None) into a fresh folder with the local runner: with
``--jobs 2`` the two models run in parallel stage processes, one each.

    python benchmarks/jobs_auto.py [--rounds 2]

A stage process's CPU use is its user + system time over its wall time (``/usr/bin/time`` of a
``--jobs 1`` build, whose stage processes run one at a time): below 2 cores means that one
process per two cores (the rule on machines with more than two) leaves no core idle for long
and, with each process's TensorFlow threads set to ``--threads / --jobs``, does not
oversubscribe them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.models import mobilenet_96  # noqa: E402

JOBS = ("1", "auto", "2")


def build(cores: str, jobs: str, models: list[Path], out: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, every process) of one build."""
    command = ["taskset", "-c", cores, "/usr/bin/time", "-f", "%U %S", sys.executable, "-m",
               "invoke", "convert", *[f"--model={model}" for model in models], "--out", str(out),
               "--dataset", "dataset", "--runner", "local", "--jobs", jobs]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    wall = time.perf_counter() - start
    user, system = (float(v) for v in re.findall(r"^([\d.]+) ([\d.]+)$", result.stderr,
                                                  re.MULTILINE)[-1])
    shutil.rmtree(out)
    return wall, user + system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    every = sorted(os.sched_getaffinity(0))
    settings = {f"{len(every)} cores": ",".join(map(str, every)), "1 core": str(every[0])}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        models = [ROOT / "model" / "sample.h5", mobilenet_96(work)]
        walls: dict[tuple[str, str], list[float]] = {}
        cpu: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for name, cores in settings.items():
                for jobs in JOBS:  # alternated: every setting sees the same machine
                    wall, seconds = build(cores, jobs, models, work / "build")
                    walls.setdefault((name, jobs), []).append(wall)
                    if jobs == "1":
                        cpu.setdefault(name, []).append(seconds / wall)
    print(f"{os.cpu_count()}-core machine, {os.cpu_count()} usable here; two models (sample, "
          f"MobileNetV2 0.35 96x96), local runner; median of {args.rounds} alternated rounds.\n")
    print("| cores | --jobs 1 s | --jobs auto s | --jobs 2 s | auto / 1 | 2 / 1 | CPU use of -j 1 "
          "(cores) |")
    print("|---|---|---|---|---|---|---|")
    for name in settings:
        one, auto, two = (statistics.median(walls[(name, jobs)]) for jobs in JOBS)
        print(f"| {name} | {one:.1f} | {auto:.1f} | {two:.1f} | {auto / one:.2f} | "
              f"{two / one:.2f} | {statistics.median(cpu[name]):.2f} |")


if __name__ == "__main__":
    main()
