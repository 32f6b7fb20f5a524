"""TF converter against ai-edge-quantizer for the quantized TFLite modes, one run each.

For each model, the fp32 artifact is made through a SavedModel (``model.export`` once, then
``TFLiteConverter.from_saved_model``: the project's route until session 7, the same model as
its frozen route now, benchmarks/frozen_vs_saved_model.out.md). Each quantized mode is then made
twice by each engine: the TF converter from the SavedModel (float32 I/O for int8 here so both
engines take the same input) and ai-edge-quantizer from the fp32 bytes
(converters/targets/tflite/quantizer_engine.py). Per artifact: seconds (first run), size, LiteRT latency
(median of --runs, --threads), accuracy on labelled validation images, top-1 agreement and max
|diff| against Keras, whether LiteRT loads and runs it, whether both runs gave the same bytes,
the ops still computing in float, and the I/O types.

Models: the bundled sample (model/sample.h5 on dataset/, 0..1) and MobileNetV2 alpha 0.35 at
96x96 (weights=None, trained --epochs on generated shape images). Then the accuracy-aware
search on the outlier classifier (benchmarks/outlier_model.py). Prints markdown.

    python benchmarks/quantizer_engines.py [--runs 30] [--threads 2] [--epochs 4] \
        > benchmarks/quantizer_engines.out.md
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import outlier_model  # noqa: E402
from converters.inputs import dataset, sample  # noqa: E402
from converters.targets.tflite import flatbuffer as tflite_inspect  # noqa: E402
from converters.targets.tflite import quantizer_engine as engine  # noqa: E402
from converters.validation.latency import median_latency_ms  # noqa: E402

LATENCY_ROUNDS = 3


@dataclass(frozen=True)
class Case:
    """A Keras model with its calibration and labelled validation arrays (preprocessed)."""

    name: str
    model: Any
    calibration: np.ndarray
    validation: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Artifact:
    engine: str
    mode: str
    flatbuffer: bytes
    seconds: float
    deterministic: bool | None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sample_case() -> Case:
    import keras

    model = keras.models.load_model(ROOT / "model" / "sample.h5", compile=False)
    listing = dataset.discover(ROOT / "dataset")
    chosen = dataset.split(listing.entries, calibration_size=100, validation_size=200, seed=0)
    shape = (32, 32, 3)
    calibration = dataset.load_images(chosen.calibration, shape, "calibration")[0]
    validation, labels, _ = dataset.load_images(chosen.validation, shape, "validation")
    return Case("sample (32x32, 4 classes)", model, calibration.astype(np.float32) / 255.0,
                validation.astype(np.float32) / 255.0, labels)


def mobilenet_case(epochs: int) -> Case:
    """MobileNetV2 alpha 0.35, 96x96, 4 classes, trained on the sample's generated shapes."""
    import keras

    keras.utils.set_random_seed(0)
    images, labels = sample.generate(300, seed=11)
    upscaled = np.repeat(np.repeat(images, 3, axis=1), 3, axis=2).astype(np.float32) / 127.5 - 1.0
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                           classes=len(sample.CLASSES))
    train = slice(0, 900)
    for layer in model.layers:  # 4 epochs of 0.99 momentum leave the moving statistics at init
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    if epochs:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(upscaled[train], labels[train], epochs=epochs, batch_size=32, verbose=0)
    return Case("MobileNetV2 0.35 (96x96, 4 classes)", model, upscaled[900:1000],
                upscaled[1000:1200], labels[1000:1200])


def timed(make: Callable[[], bytes]) -> tuple[bytes, float]:
    started = time.perf_counter()
    result = make()
    return result, time.perf_counter() - started


def twice(engine_name: str, mode: str, make: Callable[[], bytes]) -> Artifact:
    first, seconds = timed(make)
    second, _ = timed(make)
    return Artifact(engine_name, mode, first, seconds, first == second)


def tf_converter(saved_model: str, mode: str, calibration: np.ndarray) -> bytes:
    """One TF converter run, configured as converters/stages/tflite.py does (float32 I/O)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        def representative() -> Iterator[list[np.ndarray]]:
            for one in calibration:
                yield [one[None].astype(np.float32)]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    flatbuffer: bytes = converter.convert()
    return flatbuffer


def artifacts(case: Case, workdir: Path) -> list[Artifact]:
    saved_model = str(workdir / "saved_model")
    exported, export_seconds = timed(lambda: case.model.export(saved_model, verbose=False) or b"")
    log(f"{case.name}: export {export_seconds:.1f} s")
    fp32 = twice("TF converter", "fp32", lambda: tf_converter(saved_model, "fp32", case.calibration))
    made = [Artifact("Keras export", "SavedModel", exported, export_seconds, None), fp32]
    for mode in ("fp16", "dynamic", "int8"):
        log(f"{case.name}: TF converter {mode}")
        made.append(twice("TF converter", mode,
                          functools.partial(tf_converter, saved_model, mode, case.calibration)))
    quantizers: dict[str, Callable[[], bytes]] = {
        "fp16": lambda: engine.quantize_fp16(fp32.flatbuffer).flatbuffer,
        "dynamic": lambda: engine.quantize_dynamic(fp32.flatbuffer).flatbuffer,
        "dynamic (all weights)": lambda: engine.quantize_dynamic(fp32.flatbuffer, "int8").flatbuffer,
        "int8": lambda: engine.quantize_int8(fp32.flatbuffer, case.calibration).flatbuffer,
    }
    for mode, make in quantizers.items():
        log(f"{case.name}: ai-edge-quantizer {mode}")
        made.append(twice("ai-edge-quantizer", mode, make))
    return made


def measure(case: Case, artifact: Artifact, keras_outputs: np.ndarray, runs: int,
            threads: int) -> dict[str, str]:
    row = {"engine": artifact.engine, "mode": artifact.mode, "seconds": f"{artifact.seconds:.2f}",
           "size": f"{len(artifact.flatbuffer) / 1024:.1f}",
           "deterministic": {None: "-", True: "yes", False: "**no**"}[artifact.deterministic]}
    if artifact.mode == "SavedModel":
        return row | {"runs": "-", "latency": "-", "latency_one": "-", "accuracy": "-", "top1": "-",
                      "max_diff": "-",
                      "float_ops": "-", "io": "-", "size": "-"}
    try:
        outputs = engine.predict(artifact.flatbuffer, case.validation, threads)
        latency = _latency(artifact.flatbuffer, case.validation[0], runs, threads)
        latency_one = _latency(artifact.flatbuffer, case.validation[0], runs, 1)
    except (RuntimeError, ValueError) as error:
        return row | {"runs": f"**no**: {str(error)[:60]}", "latency": "-", "latency_one": "-",
                      "accuracy": "-",
                      "top1": "-", "max_diff": "-", "float_ops": "-", "io": "-"}
    graph = tflite_inspect.parse(artifact.flatbuffer)
    floats = ", ".join(f"{i['op']}x{i['count']}" for i in graph.float_ops()) or "none"
    return row | {
        "runs": "yes", "latency": f"{latency:.3f}", "latency_one": f"{latency_one:.3f}",
        "accuracy": f"{engine.score(outputs, case.labels, None):.3f}",
        "top1": f"{engine.score(outputs, None, keras_outputs):.3f}",
        "max_diff": f"{float(np.abs(outputs - keras_outputs).max()):.4f}",
        "float_ops": floats if artifact.mode == "int8" else "(float mode)",
        "io": f"{graph.inputs[0].type}/{graph.outputs[0].type}",
    }


def _latency(flatbuffer: bytes, image: np.ndarray, runs: int, threads: int) -> float:
    interpreter = engine.litert_interpreter(flatbuffer, threads)
    detail = interpreter.get_input_details()[0]
    one = engine.to_input(image[None], detail)

    def call() -> None:
        interpreter.set_tensor(detail["index"], one)
        interpreter.invoke()

    # Other sessions share the 2 cores: the best of three medians is the least disturbed one.
    return min(median_latency_ms(call, runs) for _ in range(LATENCY_ROUNDS))


COLUMNS = (("engine", "engine"), ("mode", "mode"), ("seconds", "time s"), ("size", "size KiB"),
           ("latency", "latency ms"), ("latency_one", "1 thread ms"), ("accuracy", "accuracy"),
           ("top1", "top-1 vs Keras"),
           ("max_diff", "max abs diff"), ("runs", "LiteRT loads+runs"),
           ("deterministic", "same bytes twice"), ("float_ops", "ops in float"), ("io", "I/O"))


def table(rows: list[dict[str, str]]) -> str:
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row[key] for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def compare(case: Case, runs: int, threads: int) -> str:
    keras_outputs = np.asarray(case.model.predict(case.validation, verbose=0))
    keras_accuracy = engine.score(keras_outputs, case.labels, None)
    with tempfile.TemporaryDirectory() as workdir:
        made = artifacts(case, Path(workdir))
    rows = [measure(case, artifact, keras_outputs, runs, threads) for artifact in made]
    return (f"### {case.name}\n\nKeras accuracy {keras_accuracy:.3f} on {len(case.labels)} "
            f"validation images; {len(case.calibration)} calibration images.\n\n{table(rows)}\n")


def mixed_section(runs: int, threads: int) -> str:
    """Accuracy-aware int8 on the outlier classifier: plain int8 (both engines) against mixed."""
    data = outlier_model.generate(seed=0)
    model = outlier_model.build(data, seed=0)
    with tempfile.TemporaryDirectory() as workdir:
        fp32 = outlier_model.to_tflite_fp32(model, str(Path(workdir) / "fp32"))
        model.export(str(Path(workdir) / "sm"), verbose=False)
        tf_int8, _ = timed(lambda: tf_converter(str(Path(workdir) / "sm"), "int8", data.calibration_x))
    started = time.perf_counter()
    result = engine.accuracy_aware_int8(fp32, data.calibration_x, data.validation_x,
                                        labels=data.validation_y, max_drop=0.01)
    seconds = time.perf_counter() - started
    plain = result.int8_model.flatbuffer
    lines = ["| model | accuracy | drop vs fp32 | size B | latency ms | ops kept float |",
             "|---|---|---|---|---|---|"]
    for name, flatbuffer, kept in (("fp32", fp32, "all"), ("TF converter int8", tf_int8, "-"),
                                   ("ai-edge-quantizer int8", plain, "0"),
                                   ("ai-edge-quantizer int8-mixed", result.model.flatbuffer,
                                    f"{len(result.kept_float)}: " + ", ".join(
                                        f"#{e.index} {e.op} ({_short(e.scope)})"
                                        for e in result.kept_float))):
        outputs = engine.predict(flatbuffer, data.validation_x, threads)
        accuracy = engine.score(outputs, data.validation_y, None)
        latency = _latency(flatbuffer, data.validation_x[0], runs, threads)
        lines.append(f"| {name} | {accuracy:.4f} | {result.fp32_score - accuracy:+.4f} | "
                     f"{len(flatbuffer)} | {latency:.4f} | {kept} |")
    steps = "; ".join(f"{len(s.kept_float)} float: accuracy {s.score:.4f}" for s in result.steps)
    return ("### Accuracy-aware int8 on the outlier classifier (benchmarks/outlier_model.py)\n\n"
            f"Bound: drop at most {result.max_drop:.2f} on {len(data.validation_y)} validation "
            f"points; search {seconds:.2f} s ({steps}); within bound: {result.within_bound}.\n\n"
            + "\n".join(lines) + "\n")


def _short(scope: str) -> str:
    """An op scope without the model-name prefix of each tensor name."""
    return "; ".join(part.split("/", 1)[-1] for part in scope.rstrip(";").split(";"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="MobileNetV2 training epochs")
    parser.add_argument("--mixed-only", action="store_true",
                        help="only the accuracy-aware int8 section (seconds, not minutes)")
    args = parser.parse_args()
    if args.mixed_only:
        print(mixed_section(args.runs, args.threads))
        return
    import ai_edge_litert
    import ai_edge_quantizer
    import tensorflow as tf

    print("## Quantization engines: TF converter vs ai-edge-quantizer\n")
    print(f"TF {tf.__version__}, ai-edge-quantizer {getattr(ai_edge_quantizer, '__version__', '0.10.0')}, "
          f"ai-edge-litert {getattr(ai_edge_litert, '__version__', '?')}; LiteRT latency: "
          f"{args.threads} threads (and 1 thread), batch 1, best of {LATENCY_ROUNDS} medians of "
          f"{args.runs} (the machine is shared with other sessions' builds). One run on a shared 2-core "
          "machine. time s: first of two runs; TF converter times include reading the "
          "SavedModel; ai-edge-quantizer times start from the fp32 bytes (int8: calibration "
          "included).\n")
    for case in (sample_case(), mobilenet_case(args.epochs)):
        print(compare(case, args.runs, args.threads), flush=True)
    print(mixed_section(args.runs, args.threads))


if __name__ == "__main__":
    main()
