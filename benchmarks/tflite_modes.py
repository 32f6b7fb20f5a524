"""Export-once conversion against four independent from_keras_model conversions, one run.

MobileNetV2 (keras.applications, weights=None, 224x224) is converted to fp32, fp16, dynamic and
int8 twice in this process: (a) the project's way until session 7, model.export() once then
from_saved_model per mode; (b) four TFLiteConverter.from_keras_model conversions. Then each
artifact's size and median LiteRT latency against the Keras model on the same input. Prints
markdown tables and writes exactly those (nothing else: no log line, no exit status) to --out.

    python benchmarks/tflite_modes.py [--size 224] [--runs 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from converters.validation.compare import TFLiteRuntime  # noqa: E402
from converters.validation.latency import median_latency_ms  # noqa: E402

MODES = ("fp32", "fp16", "dynamic", "int8")


def configure(converter: object, mode: str, calibration: np.ndarray) -> object:
    import tensorflow as tf

    if mode in ("fp16", "dynamic", "int8"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # type: ignore[attr-defined]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]  # type: ignore[attr-defined]
    if mode == "int8":
        def representative() -> Iterator[list[np.ndarray]]:
            for sample in calibration:
                yield [sample[None]]
        converter.representative_dataset = representative  # type: ignore[attr-defined]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # type: ignore[attr-defined]
        converter.inference_input_type = tf.uint8  # type: ignore[attr-defined]
        converter.inference_output_type = tf.uint8  # type: ignore[attr-defined]
    return converter


def timed(function: Callable[[], bytes]) -> tuple[bytes, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".out.md"),
                        help="markdown file the tables are written to (README quotes it)")
    args = parser.parse_args()
    lines: list[str] = []

    def emit(text: str = "") -> None:
        """Print one line of the tables and keep it for --out."""
        print(text)
        lines.append(text)


    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(args.size, args.size, 3), weights=None)
    rng = np.random.default_rng(0)
    calibration = rng.random((args.calibration, args.size, args.size, 3), dtype=np.float32)
    export_dir = Path(tempfile.mkdtemp()) / "saved_model"
    spec = tf.TensorSpec((None, args.size, args.size, 3), tf.float32)

    start = time.perf_counter()
    model.export(str(export_dir), format="tf_saved_model", input_signature=[spec], verbose=False)
    export_seconds = time.perf_counter() - start
    export_once: dict[str, tuple[bytes, float]] = {}
    for mode in MODES:
        export_once[mode] = timed(lambda mode=mode: configure(
            tf.lite.TFLiteConverter.from_saved_model(str(export_dir)), mode,
            calibration).convert())  # type: ignore[attr-defined]
    independent: dict[str, float] = {}
    for mode in MODES:
        # from_keras_model prints every captured variable of the SavedModel it exports.
        with contextlib.redirect_stdout(io.StringIO()):
            independent[mode] = timed(lambda mode=mode: configure(
                tf.lite.TFLiteConverter.from_keras_model(model), mode,
                calibration).convert())[1]  # type: ignore[attr-defined]

    emit(f"MobileNetV2 {args.size}x{args.size}, weights=None, {model.count_params():,} "
         f"parameters; {args.threads} threads; median of {args.runs} runs\n")
    emit("| mode | export once: convert s | from_keras_model s |")
    emit("|---|---|---|")
    emit(f"| (export) | {export_seconds:.1f} | - |")
    for mode in MODES:
        emit(f"| {mode} | {export_once[mode][1]:.1f} | {independent[mode]:.1f} |")
    total_once = export_seconds + sum(t for _, t in export_once.values())
    total_independent = sum(independent.values())
    emit(f"| **total** | **{total_once:.1f}** | **{total_independent:.1f}** |")
    emit(f"\nexport-once / independent = {total_once / total_independent:.2f}\n")

    image = calibration[:1]
    tensor = tf.constant(image)
    graph = tf.function(lambda x: model(x, training=False))
    keras_ms = median_latency_ms(lambda: graph(tensor), args.runs)
    emit("| artifact | size MB | latency ms | latency / Keras |")
    emit("|---|---|---|---|")
    emit(f"| Keras (tf.function) | {sum(v.numpy().nbytes for v in model.weights) / 1e6:.2f} "
         f"(weights) | {keras_ms:.2f} | 1.00 |")
    with tempfile.TemporaryDirectory() as folder:
        for mode in MODES:
            path = Path(folder) / f"{mode}.tflite"
            path.write_bytes(export_once[mode][0])
            runner = TFLiteRuntime(path, threads=args.threads)
            ms = runner.latency_named({runner.input_names[0]: image[0]}, args.runs).median_ms
            emit(f"| tflite {mode} | {path.stat().st_size / 1e6:.2f} | {ms:.2f} | "
                 f"{ms / keras_ms:.2f} |")
    args.out.write_text("\n".join(lines).strip() + "\n")


if __name__ == "__main__":
    main()
