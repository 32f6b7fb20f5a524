"""Docker runner against local runner: the sample's full build (four TFLite modes, validation,
report) as a real ``invoke convert`` command line, runs alternated in one session, medians and
their ratio; then the toolchain images' sizes.

All stages of a model run in one container (one job), not one container per mode.
Needs a running Docker engine and the tflite image (``invoke images --target tflite``).

    python benchmarks/docker_overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from converters.runners import docker_cli  # noqa: E402
from converters.runners.images import IMAGES  # noqa: E402


def full_build(runner: str, out: Path) -> float:
    command = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert",
               "--out", str(out), "--runner", runner, "--threads", "2"]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    docker_cli.require_engine()
    times: dict[str, list[float]] = {"local": [], "docker": []}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for runner in ("local", "docker") if repeat % 2 == 0 else ("docker", "local"):
                times[runner].append(full_build(runner, Path(folder) / f"{runner}-{repeat}"))
    local, container = statistics.median(times["local"]), statistics.median(times["docker"])
    print(f"Sample full build (4 TFLite modes + validation + report), median of {args.repeats}, "
          "runs alternated:\n")
    print("| runner | median s | all runs s | ratio to local |")
    print("|---|---|---|---|")
    for name, median in (("local", local), ("docker", container)):
        runs = ", ".join(f"{t:.2f}" for t in times[name])
        print(f"| {name} | {median:.2f} | {runs} | {median / local:.2f} |")
    print("\n| image | size MB |")
    print("|---|---|")
    for definition in IMAGES.values():
        inspected = docker_cli.image_inspect(definition.tag)
        size = f"{int(str(inspected['Size'])) / 1e6:.0f}" if inspected else "not built here"
        print(f"| {definition.tag} | {size} |")


if __name__ == "__main__":
    main()
