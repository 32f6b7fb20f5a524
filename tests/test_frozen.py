"""The TFLite conversion of the frozen serving function (converters.targets.tflite.frozen) makes
the model the SavedModel route made: the same operators, the same outputs, the same signature."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from converters.inputs.model import LoadedModel, load  # noqa: E402
from converters.targets.tflite import frozen  # noqa: E402
from tests.conftest import ROOT, save_function_model  # noqa: E402
from tests.multi_io_models import two_input_model  # noqa: E402


def _same_shaped_io() -> Any:
    """Two inputs of one shape and two outputs of one shape, named against alphabetical order:
    a name bound to the wrong tensor changes the results."""
    zeta = keras.Input((6,), name="zeta")
    alpha = keras.Input((6,), name="alpha")
    difference = keras.layers.Subtract(name="z_difference")([zeta, alpha])
    scaled = keras.layers.Dense(6, name="a_scaled")(keras.layers.Concatenate()([zeta, alpha]))
    return keras.Model([zeta, alpha], [difference, scaled])


def _saved(case: str, directory: Path) -> Path:
    if case == "sample":
        return ROOT / "model" / "sample.h5"
    if case == "sine-savedmodel":
        return save_function_model(directory / "sine", lambda x: tf.math.sin(x * 3.0), size=16)
    if case == "dict-outputs":
        image = keras.Input((8, 8, 3), name="image")
        pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
        model = keras.Model(image, {"probs": keras.layers.Dense(3, activation="softmax")(pooled),
                                    "embedding": keras.layers.Dense(5)(pooled)})
    else:
        model = two_input_model() if case == "two-inputs" else _same_shaped_io()
    model.save(directory / f"{case}.keras")
    return directory / f"{case}.keras"


def _run(flatbuffer: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    runner = Interpreter(model_content=flatbuffer).get_signature_runner("serving_default")
    return {name: np.asarray(value) for name, value in runner(**feeds).items()}


def _feeds(model: LoadedModel, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    return {tensor.name: rng.random((batch, *tensor.shape), dtype=np.float32)
            for tensor in model.inputs}


@pytest.mark.parametrize("case", ["sample", "sine-savedmodel", "two-inputs", "same-shaped-io",
                                  "dict-outputs"])
def test_the_frozen_route_makes_the_saved_model_routes_model(case: str, tmp_path: Path) -> None:
    model = load(_saved(case, tmp_path), unsafe=False, input_shape=None)
    serving = frozen.serving_function(model, None)
    # Frozen unless the model is a SavedModel (restored functions: TF lowers them to one)
    assert serving.converter.experimental_lower_to_saved_model is (model.format == "saved_model")
    converted = serving.signed(serving.converter.convert())
    model.export(tmp_path / "exported")
    through_saved_model = tf.lite.TFLiteConverter.from_saved_model(
        str(tmp_path / "exported")).convert()

    def ops(flatbuffer: bytes) -> Counter[str]:
        return Counter(op["op_name"] for op in Interpreter(model_content=flatbuffer)._get_ops_details())

    assert ops(converted) == ops(through_saved_model)
    signatures = Interpreter(model_content=converted).get_signature_list()
    assert signatures == Interpreter(model_content=through_saved_model).get_signature_list()
    assert set(signatures["serving_default"]["outputs"]) == {t.name for t in model.outputs}
    if case == "dict-outputs":  # a model that returns a dict is named by its keys
        assert {(t.name, t.shape) for t in model.outputs} == {("probs", (3,)), ("embedding", (5,))}
    feeds = _feeds(model, 1)
    ours, theirs = _run(converted, feeds), _run(through_saved_model, feeds)
    keras_outputs = model.predict(feeds)
    for tensor in model.outputs:
        np.testing.assert_allclose(ours[tensor.name], theirs[tensor.name], atol=1e-6)
        np.testing.assert_allclose(ours[tensor.name], keras_outputs[tensor.name], atol=1e-5)


def test_a_fixed_batch_is_static_in_the_converted_model(tmp_path: Path) -> None:
    model = load(_saved("same-shaped-io", tmp_path), unsafe=False, input_shape=None)
    serving = frozen.serving_function(model, 1)
    converted = serving.signed(serving.converter.convert())
    interpreter = Interpreter(model_content=converted)
    assert all(list(d["shape_signature"]) == [1, 6] for d in interpreter.get_input_details())
    feeds = _feeds(model, 1)
    outputs, expected = _run(converted, feeds), model.predict(feeds)
    for tensor in model.outputs:
        np.testing.assert_allclose(outputs[tensor.name], expected[tensor.name], atol=1e-5)


def test_a_lookup_table_goes_through_tfs_saved_model_lowering(tmp_path: Path) -> None:
    """A table's resource cannot be frozen into constants: TF lowers the function to a SavedModel
    (which writes the signature itself) and the table lookup works in the converted model."""
    ids = keras.Input((4,), dtype="string", name="ids")
    index = keras.layers.StringLookup(vocabulary=["c", "e", "g", "i"], output_mode="int")(ids)
    outputs = keras.layers.Activation("linear", name="index")(keras.ops.cast(index, "float32"))
    keras.Model(ids, outputs).save(tmp_path / "lookup.keras")
    model = load(tmp_path / "lookup.keras", unsafe=False, input_shape=None)
    serving = frozen.serving_function(model, None)
    assert serving.converter.experimental_lower_to_saved_model is True
    converted = serving.signed(serving.converter.convert())
    result = _run(converted, {"ids": np.array([["i", "c", "d", "g"]], np.bytes_)})
    np.testing.assert_array_equal(result["index"], [[4.0, 1.0, 0.0, 3.0]])  # 0: out of vocabulary


def test_a_signature_names_the_inputs_and_outputs_in_subgraph_order() -> None:
    bare = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf.function(lambda a, b: (a - b, a + 2 * b), input_signature=[
            tf.TensorSpec((1, 3), tf.float32), tf.TensorSpec((1, 3), tf.float32)]
        ).get_concrete_function()]).convert()
    signed = frozen.with_signature(bare, ("first", "second"), ("difference", "weighted"))
    assert frozen.with_signature(signed, ("x", "y"), ("p", "q")) == signed  # already signed
    result = _run(signed, {"first": np.ones((1, 3), np.float32),
                           "second": np.full((1, 3), 2.0, np.float32)})
    np.testing.assert_allclose(result["difference"], [[-1.0] * 3])
    np.testing.assert_allclose(result["weighted"], [[5.0] * 3])
    with pytest.raises(ValueError, match="2 inputs"):
        frozen.with_signature(bare, ("only",), ("difference", "weighted"))


@pytest.mark.parametrize("batch_size", [None, 1])
def test_int8_inputs_are_quantized_with_their_own_ranges(batch_size: int | None,
                                                          tmp_path: Path) -> None:
    """Same-shaped inputs calibrated on ranges 100x apart: each named input of the int8 model
    (quantized from the signed fp32 model, or converted at batch 1 as for the Edge TPU) has its
    own range's scale. (No CONCATENATION: int8 gives all its inputs one scale.)"""
    from converters.targets.tflite import int8_from_fp32

    zeta, alpha = keras.Input((6,), name="zeta"), keras.Input((6,), name="alpha")
    outputs = [keras.layers.Dense(3, name="z_head")(zeta), keras.layers.Dense(3, name="a_head")(alpha)]
    keras.Model([zeta, alpha], outputs).save(tmp_path / "apart.keras")
    model = load(tmp_path / "apart.keras", unsafe=False, input_shape=None)
    rng = np.random.default_rng(5)
    ranges = {"zeta": 100.0, "alpha": 1.0}
    samples = [[rng.random((1, 6), dtype=np.float32) * ranges[t.name] for t in model.inputs]
               for _ in range(16)]

    def configured(serving: frozen.ServingFunction) -> Any:
        return configured_settings(serving.converter)

    def configured_settings(converter: Any) -> Any:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: iter(samples)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.uint8
        return converter

    if batch_size is None:
        fp32_serving = frozen.serving_function(model, None)
        fp32 = fp32_serving.signed(fp32_serving.converter.convert())
        int8 = int8_from_fp32.quantize(configured_settings(int8_from_fp32.settings_converter()),
                                       fp32)
    else:
        serving = frozen.serving_function(model, batch_size)
        int8 = serving.signed(configured(serving).convert())
    runner = Interpreter(model_content=int8).get_signature_runner("serving_default")
    scales = {name: detail["quantization_parameters"]["scales"][0]
              for name, detail in runner.get_input_details().items()}
    assert scales["zeta"] == pytest.approx(100.0 / 255, rel=0.05)
    assert scales["alpha"] == pytest.approx(1.0 / 255, rel=0.05)


def test_a_model_over_2_gb_is_left_as_the_converter_wrote_it() -> None:
    """Over 2 GB the converter stores the weights after the flatbuffer (metadata
    ``buffer_location``): re-serialising through the object API would drop them."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    bare = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf.function(lambda a: a * 2.0, input_signature=[tf.TensorSpec((1, 3), tf.float32)]
                     ).get_concrete_function()]).convert()
    model = flatbuffer_utils.convert_bytearray_to_object(bare)
    entry = schema.MetadataT()
    entry.name, entry.buffer = frozen.BUFFER_LOCATION, 0
    model.metadata = [*(model.metadata or []), entry]
    marked = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    assert frozen.with_signature(marked, ("a",), ("doubled",)) == marked


def test_a_model_that_cannot_be_traced_is_named(tmp_path: Path) -> None:
    from converters.errors import ModelError

    model = load(_saved("same-shaped-io", tmp_path), unsafe=False, input_shape=None)

    @tf.function(input_signature=[tf.TensorSpec((None, 6), tf.float32)])
    def failing(x: Any) -> Any:
        raise ValueError("this layer only runs eagerly")

    broken = dataclasses.replace(model, graph_function=failing)
    with pytest.raises(ModelError, match=r"same-shaped-io\.keras cannot run as a TensorFlow "
                                         r"graph: .*this layer only runs eagerly"):
        broken.trace()


def test_outputs_from_one_layer_are_refused(tmp_path: Path) -> None:
    from converters.errors import ModelError

    left, right = keras.Input((3,), name="left"), keras.Input((3,), name="right")
    head = keras.layers.Dense(2, name="head")
    keras.Model([left, right], [head(left), head(right)]).save(tmp_path / "shared.keras")
    with pytest.raises(ModelError, match=r"several outputs from one layer \(head\).*Identity"):
        load(tmp_path / "shared.keras", unsafe=False, input_shape=None)


_CONVERT_IN_A_NEW_PROCESS = """
import hashlib, sys
from pathlib import Path
from converters.inputs.model import load
from converters.targets.tflite import frozen
serving = frozen.serving_function(load(Path(sys.argv[1]), unsafe=False, input_shape=None), None)
print(hashlib.sha256(serving.signed(serving.converter.convert())).hexdigest())
"""


@pytest.mark.parametrize("case", ["two-inputs-savedmodel", "two-inputs"])
def test_the_fp32_bytes_do_not_depend_on_the_process(case: str, tmp_path: Path) -> None:
    """Two processes with different string hash seeds make the same bytes. (A SavedModel given
    as the model froze to a different operator order under seeds 0 and 5: it is lowered to a
    SavedModel by TF instead.)"""
    import os
    import subprocess
    import sys

    if case.endswith("savedmodel"):
        path = tmp_path / "two"
        two_input_model().export(path, verbose=False)
    else:
        path = _saved(case, tmp_path)
    digests = set()
    for seed in ("0", "5"):
        done = subprocess.run([sys.executable, "-c", _CONVERT_IN_A_NEW_PROCESS, str(path)],
                              capture_output=True, text=True, cwd=ROOT, timeout=300,
                              env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr[-2000:]
        digests.add(done.stdout.split()[-1])
    assert len(digests) == 1
