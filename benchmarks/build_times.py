"""Full build, no-op rebuild and dataset-only rebuild, as ratios to the full build, one run.

Each build is a real ``invoke convert`` command line (Python start-up included), for the bundled
sample and for MobileNetV2 (keras.applications, weights=None, 224x224) on the sample images.

    python benchmarks/build_times.py [--skip-mobilenet]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def invoke_convert(model: Path, dataset: Path, out: Path) -> float:
    command = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert",
               "--model", str(model), "--dataset", str(dataset), "--out", str(out),
               "--threads", "2", "--runner", "local"]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - start


def measure(name: str, model: Path, dataset_source: Path, work: Path) -> list[str]:
    dataset = work / f"{name}-dataset"
    shutil.copytree(dataset_source, dataset)
    out = work / f"{name}-build"
    full = invoke_convert(model, dataset, out)
    noop = invoke_convert(model, dataset, out)
    first_class = sorted(p for p in dataset.iterdir() if p.is_dir())[0]
    image = sorted(first_class.iterdir())[0]
    shutil.copy(image, first_class / f"extra{image.suffix}")  # one more image: dataset changed
    dataset_only = invoke_convert(model, dataset, out)
    return [f"| {name} | {full:.1f} | {noop:.2f} ({noop / full:.3f}) | "
            f"{dataset_only:.1f} ({dataset_only / full:.2f}) |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-mobilenet", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        rows += measure("sample (32x32 CNN)", ROOT / "model" / "sample.h5", ROOT / "dataset", work)
        if not args.skip_mobilenet:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            import keras

            keras.utils.set_random_seed(0)
            mobilenet = work / "mobilenetv2.keras"
            keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None).save(mobilenet)
            rows += measure("MobileNetV2 224x224", mobilenet, ROOT / "dataset", work)
    print("All four TFLite modes, validation and report; seconds (ratio to the full build).\n")
    print("| model | full build s | no-op rebuild s | dataset-only rebuild s |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
