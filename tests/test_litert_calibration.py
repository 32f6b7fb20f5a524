"""The two speed-ups of the TF converter's int8, against the plain converter on real models:
calibration ranges computed by LiteRT (converters.targets.tflite.litert_calibration) and the int8
quantized from the fp32 artifact instead of a second SavedModel conversion
(converters.targets.tflite.int8_from_fp32)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from converters.inputs.model import load  # noqa: E402
from converters.targets.tflite import (  # noqa: E402
    calibration_share,
    frozen,
    int8_from_fp32,
    litert_calibration,
)
from tests.conftest import ROOT, save_function_model  # noqa: E402
from tests.multi_io_models import two_input_model, two_input_samples  # noqa: E402


def _mobilenet() -> Any:
    """Residual ADDs after "project" convolutions: where TF's calibrator widens ranges."""
    import keras

    keras.utils.set_random_seed(3)
    return keras.applications.MobileNetV2(input_shape=(48, 48, 3), alpha=0.35, weights=None,
                                          classes=5)


def _images(count: int) -> np.ndarray:
    return np.random.default_rng(0).random((count, 48, 48, 3), dtype=np.float32)


def _int8(converter: Any, samples: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """The TF converter's int8 of ``converter`` calibrated on ``samples``, and its ranges."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([sample[None]] for sample in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    with calibration_share.recording_ranges() as recording:
        flatbuffer = converter.convert()
    assert recording.ranges is not None
    return flatbuffer, recording.ranges


@pytest.fixture(scope="module")
def mobilenet_conversions() -> Iterator[dict[str, Any]]:
    model, samples = _mobilenet(), _images(24)
    results: dict[str, Any] = {"tf": _int8(tf.lite.TFLiteConverter.from_keras_model(model), samples)}
    for threads in (1, 2):
        with litert_calibration.calibrating_with_litert(threads) as outcome:
            results[threads] = _int8(tf.lite.TFLiteConverter.from_keras_model(model), samples)
        results[f"outcome{threads}"] = outcome
    yield results


def test_litert_ranges_are_the_tensors_true_ranges(mobilenet_conversions: dict[str, Any]) -> None:
    """Every tensor's LiteRT range lies within TF's; most are equal; the rest are inputs of
    in-place residual ADDs, whose range TF widens to include the sum."""
    _, tf_ranges = mobilenet_conversions["tf"]
    _, litert_ranges = mobilenet_conversions[2]
    outcome = mobilenet_conversions["outcome2"]
    assert outcome.calibrated_by == litert_calibration.CALIBRATED_BY_LITERT
    assert outcome.fallback_reason is None
    assert litert_ranges["inputs"] == tf_ranges["inputs"]
    equal, narrower = 0, 0
    for ours, theirs in zip(litert_ranges["outputs"], tf_ranges["outputs"], strict=True):
        assert ours["op"] == theirs["op"] and ours["shape"] == theirs["shape"]
        (low,), (high,) = ours["range"]
        (tf_low,), (tf_high,) = theirs["range"]
        tolerance = 1e-4 * max(abs(tf_low), abs(tf_high), 1e-30)
        assert tf_low - tolerance <= low <= high <= tf_high + tolerance, ours
        if abs(low - tf_low) <= tolerance and abs(high - tf_high) <= tolerance:
            equal += 1
        else:
            narrower += 1
    assert equal >= 0.8 * len(tf_ranges["outputs"])
    assert 0 < narrower <= 10  # MobileNetV2 48x48 has 10 residual ADDs


def test_litert_calibration_is_deterministic_across_threads(
        mobilenet_conversions: dict[str, Any]) -> None:
    assert mobilenet_conversions[1][0] == mobilenet_conversions[2][0]
    assert mobilenet_conversions["outcome1"].delegate == "XNNPACK"


def test_the_int8_agrees_with_the_float_model_as_well_as_tf_calibrations(
        mobilenet_conversions: dict[str, Any]) -> None:
    """Both int8 models against the float model on fresh images: LiteRT's ranges lose nothing."""
    from ai_edge_litert.interpreter import Interpreter

    model, images = _mobilenet(), _images(40)[24:]
    expected = np.asarray(model(images, training=False))

    def error(flatbuffer: bytes) -> float:
        runner = Interpreter(model_content=flatbuffer).get_signature_runner()
        outputs = [next(iter(runner(**{runner.get_input_details().popitem()[0]: image[None]}
                                    ).values()))[0] for image in images]
        return float(np.abs(np.stack(outputs) - expected).mean())

    assert error(mobilenet_conversions[2][0]) <= 1.1 * error(mobilenet_conversions["tf"][0])


def test_a_control_flow_graph_is_calibrated_by_tf() -> None:
    """A WHILE body's tensors get ranges LiteRT cannot read: TF's calibrator calibrates."""

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def looped(x: Any) -> Any:
        def body(step: Any, value: Any) -> Any:
            return step + 1, tf.nn.relu(value * 1.5 - 0.1)

        return tf.while_loop(lambda step, _: step < 3, body,
                             [tf.constant(0), x])[1]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([looped.get_concrete_function()],
                                                                looped)
    samples = np.random.default_rng(1).random((6, 8), dtype=np.float32)
    with litert_calibration.calibrating_with_litert(2) as outcome:
        _int8(converter, samples)
    assert outcome.calibrated_by == litert_calibration.CALIBRATED_BY_TF
    assert outcome.fallback_reason is not None and "control flow" in outcome.fallback_reason


def test_a_delegate_that_disagrees_with_the_reference_kernels_is_not_used() -> None:
    reference = np.array([[-1.0, 2.0], [0.0, 1e-6]])
    assert litert_calibration._delegate_agrees(reference + 1e-5, reference) is False
    assert litert_calibration._delegate_agrees(reference * (1 + 1e-5), reference) is True
    assert litert_calibration._delegate_agrees(np.zeros_like(reference), reference) is False


def _configured(converter: Any, samples: list[dict[str, np.ndarray]], strict: bool,
                io_type: Any) -> Any:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: iter(samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
        [] if strict else [tf.lite.OpsSet.TFLITE_BUILTINS])
    converter.inference_input_type = converter.inference_output_type = io_type
    return converter


@pytest.mark.parametrize("case", ["sample-strict-uint8", "mobilenet-int8", "sine-fallback-float",
                                  "two-inputs-uint8"])
def test_int8_from_the_fp32_artifact_is_the_converters_int8(case: str, tmp_path: Path) -> None:
    """The same model as ``converter.convert()`` with the same calibration (the same content;
    the signature is added after either): strict and float fallback graphs, uint8/int8/float
    I/O, one and two inputs, residual ADDs."""
    import keras

    rng = np.random.default_rng(2)
    saved = tmp_path / "saved_model"
    if case.startswith("sample"):
        keras.models.load_model(ROOT / "model" / "sample.h5", compile=False).export(saved, verbose=False)
    elif case.startswith("mobilenet"):
        _mobilenet().export(saved, verbose=False)
    elif case.startswith("sine"):
        save_function_model(saved, lambda x: tf.math.sin(x * 3.0), size=16)
    else:
        two_input_model().export(saved, verbose=False)
    signature = tf.saved_model.load(str(saved)).signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    samples = [{name: rng.random([1, *spec.shape[1:]], dtype=np.float32)
                for name, spec in specs.items()} for _ in range(4)]
    if case.startswith("two-inputs"):
        images, vectors, _ = two_input_samples(4, seed=1)
        samples = [{"image": images[i:i + 1], "vector": vectors[i:i + 1]} for i in range(4)]
    strict, io_type = "strict" in case, getattr(tf, case.rsplit("-", 1)[1].replace("float", "float32"))
    model = load(saved, unsafe=False, input_shape=None)
    serving = frozen.serving_function(model, None)
    fp32 = serving.signed(serving.converter.convert())
    assert int8_from_fp32.unfit(fp32) is None
    direct = frozen.serving_function(model, None)
    # Samples as the stage gives them: by name to a graph with a signature (TF's SavedModel
    # lowering, used for a SavedModel: its input order is its own), else in the function's order
    assert direct.lowered
    converted = direct.signed(_configured(direct.converter, samples, strict, io_type).convert())
    quantized = int8_from_fp32.quantize(  # as the stage does: a converter with no model
        _configured(int8_from_fp32.settings_converter(), samples, strict, io_type), fp32)
    assert _canonical(quantized) == _canonical(converted)


def _canonical(flatbuffer: bytes) -> bytes:
    """The model re-serialised through the flatbuffer object API: the same content gives the same
    bytes, whichever step last laid the buffer out."""
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(
        flatbuffer_utils.convert_bytearray_to_object(flatbuffer)))


def test_a_quantized_or_flex_fp32_model_is_converted_again() -> None:
    fp16 = tf.lite.TFLiteConverter.from_keras_model(_mobilenet())
    fp16.optimizations = [tf.lite.Optimize.DEFAULT]
    fp16.target_spec.supported_types = [tf.float16]
    assert "DEQUANTIZE" in (int8_from_fp32.unfit(fp16.convert()) or "")
    without = tf.lite.TFLiteConverter.from_keras_model(_mobilenet())
    without.exclude_conversion_metadata = True
    assert int8_from_fp32.unfit(without.convert()) == "the fp32 model has no conversion metadata"


def _sqrt_converter() -> Any:
    """NaN where an input is under 0.5: TF's calibrator leaves NaN values out of a range."""

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def rooted(x: Any) -> Any:
        return tf.sqrt(x - 0.5) * 2.0 + 1.0

    return tf.lite.TFLiteConverter.from_concrete_functions([rooted.get_concrete_function()],
                                                           rooted)


def test_nan_values_are_left_out_of_the_ranges_as_tf_does() -> None:
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(4)
    samples = np.concatenate([rng.uniform(0.5, 1.0, (1, 8)), rng.uniform(0.0, 1.0, (7, 8))]
                             ).astype(np.float32)  # the first sample has no NaN, later ones do
    _, tf_ranges = _int8(_sqrt_converter(), samples)
    with litert_calibration.calibrating_with_litert(2) as outcome:
        flatbuffer, ranges = _int8(_sqrt_converter(), samples)
    assert outcome.calibrated_by == litert_calibration.CALIBRATED_BY_LITERT
    assert all(np.isfinite(o["range"]).all() for o in ranges["outputs"])
    for ours, theirs in zip(ranges["outputs"], tf_ranges["outputs"], strict=True):
        (low,), (high,) = ours["range"]  # within TF's (which widens in-place inputs, see above)
        (tf_low,), (tf_high,) = theirs["range"]
        assert tf_low - 1e-6 <= low <= high <= tf_high + 1e-6 and high > low, (ours, theirs)
    Interpreter(model_content=flatbuffer).allocate_tensors()  # NaN scales would not load


def test_a_delegate_that_disagrees_switches_to_the_reference_kernels(
        monkeypatch: pytest.MonkeyPatch) -> None:
    samples = np.random.default_rng(5).uniform(0.5, 1.0, (6, 8)).astype(np.float32)
    with litert_calibration.calibrating_with_litert(2) as delegated:
        _, expected = _int8(_sqrt_converter(), samples)
    monkeypatch.setattr(litert_calibration, "_delegate_agrees", lambda *_: False)
    with litert_calibration.calibrating_with_litert(2) as outcome:
        _, ranges = _int8(_sqrt_converter(), samples)
    assert delegated.delegate == "XNNPACK" and outcome.delegate is None
    assert outcome.calibrated_by == litert_calibration.CALIBRATED_BY_LITERT
    for ours, theirs in zip(ranges["outputs"], expected["outputs"], strict=True):
        np.testing.assert_allclose(ours["range"], theirs["range"], rtol=1e-5)


def _vanishing_converter() -> Any:
    """A tensor of zeros (a ReLU that never fires) and tensors of negative numbers only."""

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def vanishing(x: Any) -> Any:
        dead = tf.nn.relu(tf.matmul(x, tf.ones([8, 8])) - 100.0)
        negative = tf.matmul(x, -tf.ones([8, 8])) - 1.0
        return tf.matmul(dead, tf.ones([8, 4])) + tf.matmul(negative, tf.ones([8, 4]))

    return tf.lite.TFLiteConverter.from_concrete_functions([vanishing.get_concrete_function()],
                                                           vanishing)


def test_a_tensor_of_zeros_or_negatives_gets_tfs_max_of_flt_min() -> None:
    """TF's calibrator starts each max at FLT_MIN: a tensor of zeros or of negative numbers
    gets a max of FLT_MIN, not 0 or below, and so do LiteRT's ranges."""
    samples = np.random.default_rng(6).uniform(0.0, 1.0, (6, 8)).astype(np.float32)
    _, tf_ranges = _int8(_vanishing_converter(), samples)
    with litert_calibration.calibrating_with_litert(2) as outcome:
        _, ranges = _int8(_vanishing_converter(), samples)
    assert outcome.calibrated_by == litert_calibration.CALIBRATED_BY_LITERT
    highs = [o["range"][1][0] for o in ranges["outputs"]]
    assert highs == [o["range"][1][0] for o in tf_ranges["outputs"]]
    assert highs.count(float(np.finfo(np.float32).tiny)) >= 3, ranges  # zeros, negatives
    for ours, theirs in zip(ranges["outputs"], tf_ranges["outputs"], strict=True):
        (low,), (high,) = ours["range"]  # within TF's (which widens in-place inputs, see above)
        (tf_low,), (tf_high,) = theirs["range"]
        assert tf_low - 1e-5 * abs(tf_low) <= low <= high <= tf_high, (ours, theirs)
