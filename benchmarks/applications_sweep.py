"""The default build on keras.applications architectures nobody on the team wrote: does every
artifact build, and how close is each to Keras?

Per architecture (weights=None, 64x64 input, 3 classes): ``invoke convert`` with the TFLite,
Edge TPU and ONNX targets and the fp32 and int8 modes, on a 3-class image folder of 20 images
per class (local runner, 1 thread). One row per artifact: built or why not, top-1 agreement
with Keras, max |error|, float ops; and the Edge TPU pre-check's prediction. Untrained weights:
agreement is over near-uniform scores, so an int8 row's agreement says little; fp32 rows are
exact or not, and every row says whether the artifact was made. The Edge TPU compile does not
run here (no compiler), so those builds exit non-zero by design; the pre-check still runs.

    python benchmarks/applications_sweep.py > benchmarks/applications_sweep.out.md
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ARCHITECTURES = ("MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "ResNet50", "DenseNet121",
                 "NASNetMobile", "ConvNeXtTiny")
SIZE, CLASSES = 64, 3


def save_model(name: str, path: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    builder = getattr(keras.applications, name)
    shape = (96, 96, 3) if name == "NASNetMobile" else (SIZE, SIZE, 3)  # NASNet: 32 px minimum
    builder(weights=None, input_shape=shape, classes=CLASSES).save(path)


def write_images(root: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for index in range(20):
            base = np.full((SIZE, SIZE, 3), 40 + 80 * label, np.float64)
            pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{index:03d}.png")


def convert(model: Path, dataset: Path, out: Path) -> tuple[int, float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(ROOT), "convert", "--model",
         str(model), "--dataset", str(dataset), "--out", str(out), "--target", "tflite,edgetpu,onnx",
         "--quant", "fp32,int8", "--calibration-size", "30", "--validation-size", "30",
         "--latency-runs", "3", "--threads", "1", "--runner", "local"],
        capture_output=True, text=True, check=False)
    last = (result.stderr.strip().splitlines() or [""])[-1]
    return result.returncode, time.perf_counter() - started, last


def rows(name: str, report: dict) -> list[str]:
    found = []
    for artifact in report["artifacts"]:
        metrics = artifact["metrics"]
        floats = ", ".join(f"{o['op']}x{o['count']}" for o in artifact["float_ops"]) or "none"
        state = "failed: " + str(artifact["failed"])[:60] if artifact.get("failed") else "built"
        found.append(f"| {name} | {artifact['target']} {artifact['variant']} | {state} | "
                     f"{metrics['top1_agreement']:.3f} | {metrics['max_abs_error']:.2e} | {floats} |")
    for missing in report.get("not_built", []):
        found.append(f"| {name} | {missing['target']} {missing['variant']} | not built: "
                     f"{missing['reason'][:70]} | - | - | - |")
    return found


def main() -> None:
    import onnxruntime
    import tensorflow as tf

    print(f"# keras.applications sweep ({time.strftime('%Y-%m-%d')}, {platform.machine()}, "
          f"{os.cpu_count()} cores, TF {tf.__version__}, onnxruntime {onnxruntime.__version__})\n")
    print("| model | artifact | state | top-1 agreement | max abs error | float ops |")
    print("|---|---|---|---|---|---|")
    summary = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        write_images(work / "images")
        for name in ARCHITECTURES:
            model = work / f"{name}.keras"
            save_model(name, model)
            code, seconds, last = convert(model, work / "images", work / "out")
            report_path = work / "out" / name / "report.json"
            if not report_path.exists():
                print(f"| {name} | - | build failed (exit {code}): {last[:90]} | - | - | - |")
                continue
            report = json.loads(report_path.read_text())
            for line in rows(name, report):
                print(line)
            check = (report.get("edgetpu") or {}).get("precheck") or {}
            summary.append(f"- {name}: exit {code} in {seconds:.0f} s; Edge TPU pre-check: "
                           f"{check.get('tpu_ops')} ops on the Edge TPU, {check.get('cpu_ops')} "
                           f"on the CPU, {check.get('edgetpu_subgraphs')} Edge TPU subgraph(s)")
    print("\n" + "\n".join(summary))


if __name__ == "__main__":
    main()
