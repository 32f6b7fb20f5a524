"""The TF converter's int8 calibrated by TF's calibrator against calibrated by LiteRT, side by side.

For trained models (the bundled sample; MobileNetV2 alpha 0.35 96x96 trained --epochs on the
sample's generated shapes; the outlier classifier of benchmarks/outlier_model.py, a wide-range
activation), the int8 the build makes (TF converter, uint8 I/O, 100 calibration images) three
ways, each twice (determinism):

* ``tf``: ``converter.convert()`` with TF's own calibrator (``--quant-engine tflite-converter``);
* ``litert``: the same conversion, ranges computed by LiteRT
  (converters/targets/tflite/litert_calibration.py);
* ``litert+fp32``: as the build does by default, also quantized from the fp32 artifact instead
  of a second conversion (converters/targets/tflite/int8_from_fp32.py).

All three convert through a SavedModel (the build's route until session 7; the build now
freezes the model's serving function instead: converters/targets/tflite/frozen.py, the same
operators and outputs, tests/test_frozen.py).

Per artifact: seconds (first run), accuracy on labelled validation images, top-1 agreement and
mean/max |diff| against Keras, calibrated tensors whose range differs from TF's calibrator's.

    python benchmarks/litert_calibration.py [--epochs 4] > benchmarks/litert_calibration.out.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import outlier_model, quantizer_engines  # noqa: E402
from converters.targets.tflite import (  # noqa: E402
    calibration_share,
    int8_from_fp32,
    litert_calibration,
)
from converters.targets.tflite import quantizer_engine as engine  # noqa: E402

Case = quantizer_engines.Case


def outlier_case() -> Case:
    data = outlier_model.generate()
    return Case("outlier classifier (wide-range channel)", outlier_model.build(data),
                data.calibration_x, data.validation_x, data.validation_y)


def _configured(converter: Any, calibration: np.ndarray) -> Any:
    import tensorflow as tf

    def representative() -> Iterator[list[np.ndarray]]:
        for one in calibration:
            yield [one[None].astype(np.float32)]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    return converter


def make(way: str, saved_model: str, fp32: bytes, calibration: np.ndarray
         ) -> tuple[bytes, dict[str, Any], float]:
    import tensorflow as tf

    started = time.perf_counter()
    calibrating = (contextlib.nullcontext() if way == "tf"
                   else litert_calibration.calibrating_with_litert(2))
    with calibrating, calibration_share.recording_ranges() as recording:
        if way == "litert+fp32":
            flatbuffer = int8_from_fp32.quantize(
                _configured(tf.lite.TFLiteConverter.from_saved_model(saved_model), calibration), fp32)
        else:
            flatbuffer = _configured(tf.lite.TFLiteConverter.from_saved_model(saved_model),
                                     calibration).convert()
    assert recording.ranges is not None
    return flatbuffer, recording.ranges, time.perf_counter() - started


def differing(ranges: dict[str, Any], reference: dict[str, Any]) -> int:
    count = 0
    for ours, theirs in zip(ranges["outputs"], reference["outputs"], strict=True):
        scale = max(abs(v) for v in theirs["range"][0] + theirs["range"][1]) or 1.0
        if max(abs(a - b) for a, b in zip(ours["range"][0] + ours["range"][1],
                                          theirs["range"][0] + theirs["range"][1],
                                          strict=True)) > 1e-4 * scale:
            count += 1
    return count


def compare(case: Case, workdir: Path) -> str:
    import tensorflow as tf

    saved_model = str(workdir / case.name.split()[0])
    case.model.export(saved_model, verbose=False)
    fp32 = tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()
    keras_outputs = np.asarray(case.model.predict(case.validation, verbose=0))
    rows = [f"### {case.name}", "",
            f"{len(case.calibration)} calibration, {len(case.validation)} validation images, "
            f"TF {tf.__version__}.", "",
            "| calibrated by | seconds | same bytes twice | accuracy | top-1 agreement | mean abs diff "
            "| max abs diff | ranges differing from TF's |", "|---|---|---|---|---|---|---|---|"]
    reference_ranges: dict[str, Any] | None = None
    for way in ("tf", "litert", "litert+fp32"):
        flatbuffer, ranges, seconds = make(way, saved_model, fp32, case.calibration)
        again, _, _ = make(way, saved_model, fp32, case.calibration)
        reference_ranges = reference_ranges or ranges
        outputs = engine.predict(flatbuffer, case.validation, 2)
        diff = np.abs(outputs - keras_outputs)
        rows.append(
            f"| {way} | {seconds:.2f} | {'yes' if again == flatbuffer else '**no**'} "
            f"| {engine.score(outputs, case.labels, None):.3f} "
            f"| {engine.score(outputs, None, keras_outputs):.3f} | {diff.mean():.4f} "
            f"| {diff.max():.4f} | {differing(ranges, reference_ranges)} "
            f"of {len(ranges['outputs'])} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    cases: list[Callable[[], Case]] = [quantizer_engines.sample_case,
                                       lambda: quantizer_engines.mobilenet_case(args.epochs),
                                       outlier_case]
    print("## int8 calibration: TF's calibrator against LiteRT\n")
    with tempfile.TemporaryDirectory(prefix="litert-calibration-") as folder:
        for build_case in cases:
            case = build_case()
            quantizer_engines.log(f"comparing {case.name}")
            print(compare(case, Path(folder)))


if __name__ == "__main__":
    main()
