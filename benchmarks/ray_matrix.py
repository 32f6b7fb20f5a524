"""A matrix of 8 small models on the local executor, one Ray node and two loopback Ray nodes,
and a cold vs warm shared-cache build; one run, side by side.

The models are the sample's architecture (converters/inputs/sample.py) at 8 widths, random weights,
each built for the four TFLite modes on the sample images: one job (one Ray task) per model.
Every build is a real ``invoke convert`` command line (Python start-up included). The machine
has 2 cores: both Ray set-ups offer 2 CPU slots (one node with 2, or two nodes with 1 each)
against the local executor's one job at a time with the same jobs (``-j 1``; ``-j 2`` would
split each model into one process per mode, other jobs), so the figures show Ray's cost per
task, not more hardware. The machine is shared, so the three set-ups run in turn, ``ROUNDS``
times, and the table takes each one's fastest run (all runs are listed).

    python benchmarks/ray_matrix.py > benchmarks/ray_matrix.out.md
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ray_cluster import Cluster, NodeSpec, loopback_cluster  # noqa: E402

WIDTHS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
SLOTS = 2
ROUNDS = 2
NOOP_TASKS = 40
NOOP_PROBE = """
import json, sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
noop = ray.remote(num_cpus=1)(lambda: 0)
ray.get(noop.remote())  # a worker is up
start = time.perf_counter()
for _ in range(int(sys.argv[2])):
    ray.get(noop.remote())
print(json.dumps((time.perf_counter() - start) / int(sys.argv[2])))
"""


def make_models(folder: Path) -> list[Path]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from converters.inputs.sample import build_model

    models = []
    for index, width in enumerate(WIDTHS):
        keras.utils.set_random_seed(index)
        models.append(folder / f"sample_w{int(width * 100):03d}.h5")
        build_model(width).save(models[-1])  # type: ignore[attr-defined]
    return models


def convert(models: list[Path], out: Path, *extra: str, env: dict[str, str] | None = None) -> float:
    command = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert",
               *[arg for model in models for arg in ("--model", str(model))],
               "--dataset", str(ROOT / "dataset"), "--out", str(out), "--threads", "1",
               "--runner", "local", "--calibration-size", "32", "--validation-size", "64",
               "--latency-runs", "5", *extra]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                 "PYTHONPATH": str(ROOT), **(env or {})})
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def nodes_used(out: Path) -> int:
    return len({json.loads(p.read_text()).get("ray_node") for p in out.glob("*/.stages/*.json")
                if p.name != "_build.json"} - {None})


def noop_round_trip(cluster: Cluster) -> float:
    result = subprocess.run([sys.executable, "-c", NOOP_PROBE, cluster.address, str(NOOP_TASKS)],
                            capture_output=True, text=True, check=True,
                            env={**os.environ, **cluster.env})
    return float(result.stdout.strip().splitlines()[-1])


def row(name: str, runs: list[float], slots: int, local_serial: float, note: str) -> str:
    tasks, seconds = len(WIDTHS), min(runs)
    extra = (seconds * slots - local_serial) / tasks
    return (f"| {name} | {slots} | {seconds:.1f} ({', '.join(f'{r:.1f}' for r in runs)}) | "
            f"{tasks / seconds:.3f} | {seconds * slots / tasks:.1f} | {extra:+.1f} | {note} |")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ray-matrix-") as folder:
        work = Path(folder)
        models = make_models(work)
        layouts = {"Ray, one node (2 CPUs)": [NodeSpec(SLOTS)],
                   "Ray, two loopback nodes (1 CPU each)": [NodeSpec(1), NodeSpec(1)]}
        runs: dict[str, list[float]] = {"local executor (-j 1)": []} | {n: [] for n in layouts}
        notes = {"local executor (-j 1)": ""}
        noop: dict[str, float] = {}
        for round_index in range(ROUNDS):
            runs["local executor (-j 1)"].append(convert(models, work / f"local-{round_index}"))
            for name, specs in layouts.items():
                with loopback_cluster(specs, ROOT) as cluster:
                    out = work / f"{len(specs)}-nodes-{round_index}"
                    runs[name].append(convert(models, out, "--executor", "ray", "--ray-address",
                                              cluster.address, env=cluster.env))
                    notes[name] = f"stages ran on {nodes_used(out)} node(s)"
                    noop[name] = noop_round_trip(cluster)
        serial = min(runs["local executor (-j 1)"])
        rows = [row(name, times, SLOTS if name in layouts else 1, serial, notes[name])
                for name, times in runs.items()]
        cache_dir = work / "cache"
        cold = convert(models, work / "cold", "--cache-dir", str(cache_dir))
        warm = convert(models, work / "warm", "--cache-dir", str(cache_dir))
        cache_size = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file())

    print(f"{len(WIDTHS)} models (the sample at widths {', '.join(map(str, WIDTHS))}) x the four "
          "TFLite modes, validated and reported: one job / Ray task per model; `--threads 1`, "
          f"2-core machine shared with other work; fastest of {ROUNDS} runs (all runs in brackets)."
          "\n")
    print("| set-up | CPU slots | wall s | tasks/s | slot-seconds per task | overhead s per task "
          "| |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nslot-seconds per task = wall x slots / tasks; overhead per task = that minus the "
          "local executor's seconds per task: what Ray's scheduling, the archives in and out, "
          "the worker processes and two jobs sharing the machine cost each task.\n")
    print(f"Ray's own round trip for an empty task (submit, run, get; {NOOP_TASKS} in a row): "
          + "; ".join(f"{name}: {seconds * 1000:.1f} ms" for name, seconds in noop.items()) + ".\n")
    print("| shared cache (local executor, a fresh build folder each) | wall s | ratio |")
    print("|---|---|---|")
    print(f"| cold (empty --cache-dir: every stage runs and is stored) | {cold:.1f} | 1.00 |")
    print(f"| warm (every stage restored) | {warm:.1f} | {warm / cold:.3f} |")
    print(f"\nThe cache then held {cache_size / 2**20:.1f} MiB.")


if __name__ == "__main__":
    main()
