"""ai-edge-quantizer engine: artifacts run in LiteRT and agree with Keras, bytes are
deterministic, the per-op report is numeric, and the accuracy-aware search meets its bound on a
model built to need it (benchmarks/outlier_model.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks import outlier_model
from converters.config import IODType, QuantEngine, Quantization
from converters.errors import ConfigError
from converters.inputs import dataset
from converters.targets.tflite import engine_choice
from converters.targets.tflite import flatbuffer as tflite_inspect
from converters.targets.tflite import quantizer_engine as engine

ROOT = Path(__file__).resolve().parent.parent
# The quantizer's calibration and comparison interpreters preserve every tensor on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Warning. Enabling `experimental_preserve_all_tensors`")


@dataclass(frozen=True)
class Sample:
    fp32: bytes
    calibration: np.ndarray
    validation: np.ndarray
    labels: np.ndarray
    keras: np.ndarray  # Keras outputs on the validation images


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    """The bundled trained sample model (model/sample.h5) on the bundled images, 0..1 scaled."""
    import keras

    model: Any = keras.models.load_model(ROOT / "model" / "sample.h5", compile=False)
    listing = dataset.discover(ROOT / "dataset")
    chosen = dataset.split(listing.entries, calibration_size=40, validation_size=80, seed=0)
    shape = tuple(int(v) for v in model.input_shape[1:])
    calibration = dataset.load_images(chosen.calibration, shape, "calibration")[0]  # type: ignore[arg-type]
    validation, labels, _ = dataset.load_images(chosen.validation, shape, "validation")  # type: ignore[arg-type]
    validation_x = validation.astype(np.float32) / 255.0
    fp32 = outlier_model.to_tflite_fp32(model, str(tmp_path_factory.mktemp("sample") / "saved"))
    return Sample(fp32, calibration.astype(np.float32) / 255.0, validation_x, labels,
                  np.asarray(model.predict(validation_x, verbose=0)))


def _agreement(outputs: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    top1 = float(np.mean(outputs.argmax(axis=1) == reference.argmax(axis=1)))
    return top1, float(np.abs(outputs - reference).max())


def test_dynamic_runs_in_litert_and_agrees_with_keras(sample: Sample) -> None:
    model = engine.quantize_dynamic(sample.fp32)
    outputs = engine.predict(model.flatbuffer, sample.validation)
    top1, max_error = _agreement(outputs, sample.keras)
    assert (model.mode, model.input_type, model.output_type) == ("dynamic", "float32", "float32")
    assert model.size < 0.35 * len(sample.fp32)
    assert top1 >= 0.98 and max_error <= 0.05, (top1, max_error)
    keras_accuracy = engine.score(sample.keras, sample.labels, None)
    assert engine.score(outputs, sample.labels, None) >= keras_accuracy - 0.02


def test_fp16_halves_the_size_and_matches_keras(sample: Sample) -> None:
    model = engine.quantize_fp16(sample.fp32)
    top1, max_error = _agreement(engine.predict(model.flatbuffer, sample.validation), sample.keras)
    assert model.mode == "fp16" and 0.45 * len(sample.fp32) < model.size < 0.55 * len(sample.fp32)
    assert top1 == 1.0 and max_error <= 0.01, (top1, max_error)


def test_int8_runs_in_litert_and_agrees_with_keras(sample: Sample) -> None:
    model = engine.quantize_int8(sample.fp32, sample.calibration)
    outputs = engine.predict(model.flatbuffer, sample.validation)
    top1, max_error = _agreement(outputs, sample.keras)
    assert (model.mode, model.input_type, model.output_type) == ("int8", "float32", "float32")
    assert top1 >= 0.95 and max_error <= 0.15, (top1, max_error)
    ops = tflite_inspect.parse(model.flatbuffer).op_counts()
    assert ops.get("QUANTIZE") == 1 and ops.get("DEQUANTIZE", 0) >= 1  # float I/O around int8


def test_int8_io_is_what_the_quantizer_makes_by_default(sample: Sample) -> None:
    model = engine.quantize_int8(sample.fp32, sample.calibration, io_type="int8")
    assert (model.input_type, model.output_type) == ("int8", "int8")
    top1, _ = _agreement(engine.predict(model.flatbuffer, sample.validation), sample.keras)
    assert top1 >= 0.95


def test_bytes_are_deterministic(sample: Sample) -> None:
    assert engine.quantize_dynamic(sample.fp32).flatbuffer == engine.quantize_dynamic(sample.fp32).flatbuffer
    first = engine.quantize_int8(sample.fp32, sample.calibration).flatbuffer
    assert first == engine.quantize_int8(sample.fp32, sample.calibration).flatbuffer


def test_keep_float_by_index_or_tensor_name(sample: Sample) -> None:
    ops = engine.list_ops(sample.fp32)
    last_dense = max(op.index for op in ops if op.op == "FULLY_CONNECTED")
    by_index = engine.quantize_int8(sample.fp32, sample.calibration, keep_float=[last_dense])
    by_name = engine.quantize_int8(sample.fp32, sample.calibration,
                                   keep_float=[ops[last_dense].outputs[0]])
    assert by_index.flatbuffer == by_name.flatbuffer
    assert by_index.mode == "int8-mixed" and by_index.kept_float == (ops[last_dense].scope,)
    float_ops = {item["op"] for item in tflite_inspect.parse(by_index.flatbuffer).float_ops()}
    assert "FULLY_CONNECTED" in float_ops
    with pytest.raises(ValueError, match="out of range"):
        engine.quantize_int8(sample.fp32, sample.calibration, keep_float=[len(ops)])


def test_per_op_report_lists_ops_with_a_numeric_error(sample: Sample) -> None:
    model = engine.quantize_int8(sample.fp32, sample.calibration)
    report = engine.op_sensitivity(sample.fp32, model.flatbuffer, sample.calibration[:16], top=5)
    assert 1 <= len(report) <= 5
    names = {op.op for op in engine.list_ops(sample.fp32)}
    for entry in report:
        row = entry.as_dict()
        assert row["op"] in names and row["tensor"]
        assert math.isfinite(row["output_nmse"]) and row["output_nmse"] >= 0
        assert math.isfinite(row["added_nmse"]) and row["added_nmse"] >= 0
    assert [e.added_nmse for e in report] == sorted((e.added_nmse for e in report), reverse=True)
    assert report[0].added_nmse > 0


def test_per_op_report_reads_a_tf_converter_int8_model(sample: Sample, tmp_path: Path) -> None:
    """The Edge TPU keeps the TF converter's int8: its tensors carry the fp32 model's names."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(_export(sample, tmp_path)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([one[None]] for one in sample.calibration[:20])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    report = engine.op_sensitivity(sample.fp32, converter.convert(), sample.calibration[:16], top=None)
    assert len(report) == len(engine.list_ops(sample.fp32))
    assert all(math.isfinite(e.added_nmse) for e in report)


def _export(sample: Sample, folder: Path) -> Path:
    import keras

    model: Any = keras.models.load_model(ROOT / "model" / "sample.h5", compile=False)
    model.export(str(folder / "saved"), verbose=False)
    return folder / "saved"


def test_channel_nmse_sees_an_outlier_channel() -> None:
    reference = np.ones((8, 4), np.float64)
    reference[:, 0] = 1000.0
    crushed = reference.copy()
    crushed[:, 1:] = 0.0  # what a per-tensor int8 scale does to the small channels
    assert engine.channel_nmse(crushed, reference) == pytest.approx(0.75)
    assert engine.channel_nmse(reference, reference) == 0.0


def test_accuracy_aware_search_meets_the_bound_plain_int8_misses(tmp_path: Path) -> None:
    data = outlier_model.generate(seed=0)
    model: Any = outlier_model.build(data, seed=0)
    fp32 = outlier_model.to_tflite_fp32(model, str(tmp_path / "saved"))
    keras_score = engine.score(np.asarray(model.predict(data.validation_x, verbose=0)),
                               data.validation_y, None)
    result = engine.accuracy_aware_int8(fp32, data.calibration_x, data.validation_x,
                                        labels=data.validation_y, max_drop=0.01)
    assert result.fp32_score == pytest.approx(keras_score, abs=0.005) and keras_score >= 0.9
    assert result.int8_drop > 0.05  # plain int8 loses far more than the bound
    assert result.within_bound and result.drop <= 0.01
    ops = engine.list_ops(fp32)
    assert 0 < len(result.kept_float) < len(ops)  # mixed, not all float
    wide = next(op.scope for op in ops if "wide" in op.scope and op.op == "FULLY_CONNECTED")
    assert wide in {e.scope for e in result.kept_float}
    assert result.model.kept_float == tuple(sorted(e.scope for e in result.kept_float))
    assert result.int8_size < result.model.size < len(fp32)
    rerun = engine.quantize_int8(fp32, data.calibration_x, keep_float=result.model.kept_float)
    outputs = engine.predict(rerun.flatbuffer, data.validation_x)
    assert engine.score(outputs, data.validation_y, None) == pytest.approx(result.score)


@pytest.mark.parametrize("mode,io_dtype,flex,fixed,choice,expected", [
    ("fp32", "float32", False, False, "auto", "tf.lite.TFLiteConverter"),
    ("fp16", "uint8", False, False, "auto", "ai-edge-quantizer"),
    ("dynamic", "uint8", False, False, "auto", "ai-edge-quantizer"),
    ("dynamic", "uint8", True, False, "auto", "tf.lite.TFLiteConverter"),  # Flex ops
    ("int8", "float32", False, False, "auto", "tf.lite.TFLiteConverter"),
    ("int8", "float32", False, False, "ai-edge-quantizer", "ai-edge-quantizer"),
    ("int8", "int8", False, True, "ai-edge-quantizer", "tf.lite.TFLiteConverter"),  # Edge TPU
    ("fp16", "uint8", False, False, "tflite-converter", "tf.lite.TFLiteConverter"),
    ("int8-mixed", "uint8", False, False, "auto", "ai-edge-quantizer"),
])
def test_engine_choice(mode: str, io_dtype: str, flex: bool, fixed: bool, choice: str,
                       expected: str) -> None:
    request = engine_choice.ModeRequest(Quantization(mode), IODType(io_dtype), False, flex, fixed)
    assert engine_choice.engine_for(request, QuantEngine(choice)) == expected


@pytest.mark.parametrize("mode,io_dtype,choice,message", [
    ("int8", "uint8", "ai-edge-quantizer", "not uint8"),
    ("int8-mixed", "float32", "tflite-converter", "made by ai-edge-quantizer"),
])
def test_engine_choice_refuses_what_an_engine_cannot_make(mode: str, io_dtype: str, choice: str,
                                                          message: str) -> None:
    request = engine_choice.ModeRequest(Quantization(mode), IODType(io_dtype), False, False, False)
    with pytest.raises(ConfigError, match=message):
        engine_choice.engine_for(request, QuantEngine(choice))
