"""LiteRT validation of a split: one interpreter with the validation's threads against as many
single-threaded interpreters side by side (what ``TFLiteRuntime.predict_named`` does), wall time
and outputs, alternated in one run.

For MobileNetV2 96x96 alpha 0.35 and 224x224 alpha 1.0 (keras.applications, weights=None, 1000
classes, saved as .keras), each TFLite artifact of a default build from this checkout (fp32, fp16,
dynamic, int8) runs the build's own validation split (200 images of the bundled dataset) both ways
with ``--threads`` threads; the rounds alternate the two ways, medians and the ratio are printed,
and whether every output is bit for bit the same.

    python benchmarks/side_by_side.py [--threads 2] [--rounds 3] > benchmarks/side_by_side.out.md
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import checkouts  # noqa: E402
from benchmarks.models import mobilenet  # noqa: E402

MODELS = ((96, 0.35), (224, 1.0))
MODES = ("fp32", "fp16", "dynamic", "int8")


def measure(build_dir: Path, artifact: Path, threads: int, rounds: int) -> str:
    from converters.stages import data
    from converters.validation.compare import TFLiteRuntime

    inputs = data.load_inputs(build_dir, data.VALIDATION)
    one, side = TFLiteRuntime(artifact, threads), TFLiteRuntime(artifact, threads)
    one.side_by_side = lambda samples: [one.interpreter]  # type: ignore[method-assign]
    seconds: dict[str, list[float]] = {"one": [], "side": []}
    outputs = {}
    for _ in range(rounds + 1):  # the first round warms both up and is not counted
        for name, runtime in (("one", one), ("side", side)):
            started = time.perf_counter()
            outputs[name] = runtime.predict_named(inputs)
            seconds[name].append(time.perf_counter() - started)
    same = all(np.array_equal(outputs["one"][key], outputs["side"][key]) for key in outputs["one"])
    one_s, side_s = (statistics.median(seconds[name][1:]) for name in ("one", "side"))
    return (f"| {artifact.name} | {one_s:.2f} | {side_s:.2f} | {side_s / one_s:.2f}x | "
            f"{'yes' if same else 'NO'} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print("## One LiteRT interpreter vs single-threaded interpreters side by side\n")
    print(f"{platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; median of "
          f"{args.rounds} alternating runs over the build's 200 validation images.\n")
    print(f"| artifact | one interpreter, {args.threads} threads, s | {args.threads} x 1 thread "
          "side by side, s | ratio | same outputs |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="side-by-side-") as folder:
        work = Path(folder)
        for size, alpha in MODELS:
            model = mobilenet(size, alpha, work)
            out = work / f"build-{size}"
            checkouts.convert_from(checkouts.ROOT, [model], out, "--allow-class-mismatch",
                                   "--threads", str(args.threads))
            build_dir = out / model.stem
            for mode in MODES:
                print(measure(build_dir, build_dir / "tflite" / f"{model.stem}_{mode}.tflite",
                              args.threads, args.rounds), flush=True)


if __name__ == "__main__":
    main()
