"""The pre-check's graph rules on real int8 conversions of tiny Keras models, one rule each:
CPU ops at the start do not sink the model, placement follows the data flow, a -1 batch in the
shape signature is not blocking, TILE and the int8 LSTM map, a 1x1 -> NxN resize does not."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.targets.edgetpu import check as edgetpu_check
from converters.targets.tflite import flatbuffer as tflite_inspect


def int8_tflite(model: Any, path: Path, float_io: bool = False, batch_one: bool = True) -> Path:
    """Full-integer int8 conversion (uint8 I/O unless ``float_io``), as convert does it."""
    import tensorflow as tf

    shape = (1, *model.input_shape[1:]) if batch_one else model.input_shape
    saved = path.with_suffix(".saved")
    model.export(str(saved), input_signature=[tf.TensorSpec(shape, tf.float32)], verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    generator = np.random.default_rng(0)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [generator.random((1, *model.input_shape[1:]), np.float32)] for _ in range(8))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not float_io:
        converter.inference_input_type = converter.inference_output_type = tf.uint8
    path.write_bytes(converter.convert())
    return path


def predicted(path: Path) -> dict[str, Any]:
    return edgetpu_check.check_file(path)


def cpu_ops(result: dict[str, Any]) -> Counter[str]:
    return Counter(op["operator"] for op in result["cpu_op_reasons"])


@pytest.fixture(scope="module")
def keras() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    return keras


def test_float_io_quantize_and_dequantize_run_on_the_cpu_and_the_rest_maps(
        keras: Any, tmp_path: Path) -> None:
    layers = keras.layers
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    result = predicted(int8_tflite(keras.Model(inputs, outputs), tmp_path / "m.tflite",
                                   float_io=True))
    assert cpu_ops(result) == Counter({"QUANTIZE": 1, "DEQUANTIZE": 1})
    assert {op["status"] for op in result["cpu_op_reasons"]} == {edgetpu_check.DATA_TYPE}
    assert result["tpu_ops"] == result["total_ops"] - 2 > 0 and result["edgetpu_subgraphs"] == 1


def test_ops_that_do_not_depend_on_a_cpu_op_keep_their_mapping(keras: Any, tmp_path: Path) -> None:
    layers = keras.layers
    inputs = keras.Input((16, 16, 3))
    features = layers.Conv2D(4, 3, activation="relu")(inputs)
    cut = layers.LeakyReLU()(features)  # not an Edge TPU op (real compiles: "Operation not supported")
    branch = layers.Conv2D(4, 3, activation="sigmoid")(features)  # independent of the cut
    outputs = [layers.GlobalAveragePooling2D()(cut), layers.GlobalAveragePooling2D()(branch)]
    path = int8_tflite(keras.Model(inputs, outputs), tmp_path / "m.tflite")
    result = predicted(path)
    graph = tflite_inspect.read(path)
    leaky = next(op for op in graph.operators if op.name == "LEAKY_RELU")
    downstream = {t.index for t in leaky.outputs}
    expected_cpu = {leaky.index}
    for op in graph.operators:  # everything fed, directly or not, by the LeakyReLU
        if any(t.index in downstream for t in op.inputs):
            expected_cpu.add(op.index)
            downstream.update(t.index for t in op.outputs)
    assert {op["index"] for op in result["cpu_op_reasons"]} == expected_cpu
    mapped = Counter(row["operator"] for row in result["table"]
                     for _ in range(row["count"]) if row["status"] == edgetpu_check.MAPPED)
    assert mapped["CONV_2D"] == 2 and mapped["LOGISTIC"] == 1 and result["edgetpu_subgraphs"] == 1


def test_a_minus_one_batch_signature_with_a_concrete_shape_is_not_blocking(
        keras: Any, tmp_path: Path) -> None:
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    outputs = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(inputs))
    path = int8_tflite(keras.Model(inputs, outputs), tmp_path / "m.tflite", batch_one=False)
    assert tflite_inspect.read(path).inputs[0].shape_signature[0] == -1
    result = predicted(path)
    assert result["compiles"] and result["blocking"] == [] and result["tpu_fraction"] == 1.0
    assert "shape signature [-1, 8, 8, 3]" in result["notes"][0]


def test_tile_maps(keras: Any, tmp_path: Path) -> None:
    layers = keras.layers
    inputs = keras.Input((6, 4))
    x = layers.Reshape((6, 4, 1))(inputs)
    x = layers.Lambda(lambda t: keras.ops.tile(t, (1, 1, 1, 4)))(x)
    path = int8_tflite(keras.Model(inputs, layers.Flatten()(x)), tmp_path / "m.tflite")
    assert "TILE" in {op.name for op in tflite_inspect.read(path).operators}
    result = predicted(path)
    assert result["cpu_op_reasons"] == [] and result["edgetpu_subgraphs"] == 1


def _tensor(index: int, kind: str, shape: tuple[int, ...], constant: bool = False) -> Any:
    return tflite_inspect.TensorInfo(index, f"t{index}", kind, shape, shape, constant, (0.1,), (0,))


def test_an_int8_lstm_with_an_int16_cell_state_maps() -> None:
    # The operator as TFLite's int8 LSTM lays it out (int16 cell state, int32 gate biases);
    # converting a Keras LSTM to int8 crashes TF 2.21's calibrator on this machine.
    inputs = (_tensor(0, "INT8", (1, 6, 4)), _tensor(1, "INT8", (8, 4), True),
              _tensor(2, "INT32", (8,), True), _tensor(3, "INT8", (1, 8)),
              _tensor(4, "INT16", (1, 8)))
    lstm = tflite_inspect.OperatorInfo(0, "UNIDIRECTIONAL_SEQUENCE_LSTM", False, inputs,
                                       (_tensor(5, "INT8", (1, 6, 8)),), None)
    assert edgetpu_check.op_problem(lstm) == (edgetpu_check.MAPPED, "")
    add = tflite_inspect.OperatorInfo(1, "ADD", False, (inputs[4], inputs[4]),
                                      (_tensor(6, "INT16", (1, 8)),), None)
    assert edgetpu_check.op_problem(add)[0] == edgetpu_check.DATA_TYPE  # int16 elsewhere: no


def test_a_resize_from_one_pixel_stays_on_the_cpu_with_what_follows(keras: Any,
                                                                     tmp_path: Path) -> None:
    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    features = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    pooled = layers.Conv2D(4, 1)(layers.AveragePooling2D(8)(features))  # 1x1, DeepLab-style
    spread = layers.UpSampling2D(8, interpolation="bilinear")(pooled)  # 1x1 -> 8x8
    doubled = layers.Lambda(lambda t: keras.ops.image.resize(  # 8x8 -> 16x16 maps
        t, (16, 16), interpolation="nearest"))(features)
    merged = layers.Concatenate()([spread, features])
    outputs = [layers.Conv2D(2, 1)(merged), layers.GlobalAveragePooling2D()(doubled)]
    result = predicted(int8_tflite(keras.Model(inputs, outputs), tmp_path / "m.tflite"))
    first = result["cpu_op_reasons"][0]
    assert first["operator"] == "RESIZE_BILINEAR" and first["status"] == edgetpu_check.LIMITATION
    assert "1-pixel input" in first["reason"]
    assert cpu_ops(result) == Counter({"RESIZE_BILINEAR": 1, "CONCATENATION": 1, "CONV_2D": 1,
                                       "QUANTIZE": 1})
    assert ("RESIZE_NEAREST_NEIGHBOR", edgetpu_check.MAPPED) in {
        (row["operator"], row["status"]) for row in result["table"]}
