"""Per-op error names the Keras layer that produced each op (report.json ``op_errors[].layer``):
the naming rules on TensorFlow's own tensor names, then real builds of the sample and of
keras.applications' MobileNetV2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from converters.reporting.op_layers import layer_of
from tests.conftest import ROOT, quick_flags, run_invoke

SAMPLE_LAYERS = ["image", "conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1", "flatten",
                 "dense", "probabilities"]


@pytest.mark.parametrize(("tensor", "layer"), [
    # the model's scope made unique by a second trace ("_1"): every scope carries it
    ("sample_shapes_1/probabilities_1/MatMul;sample_shapes_1/probabilities_1/BiasAdd", "probabilities"),
    ("sample_shapes_1/conv2d_1/Relu;sample_shapes_1/conv2d_1/BiasAdd", "conv2d"),
    # layer conv2d_1's scope, once conv2d took "conv2d_1": made unique again
    ("sample_shapes_1/conv2d_1_2/Relu;sample_shapes_1/conv2d_1_2/BiasAdd", "conv2d_1"),
    # no second trace: scopes are the layer names as they are
    ("sample_shapes/conv2d_1/Relu", "conv2d_1"),
    ("Identity", "probabilities"),  # the model's (first) output
    ("tfl.quantize", None),  # made by the converter: no layer
    ("serving_default_image:0", None),
    ("sample_shapes_1/Cast", None),  # the model's own scope, no layer's
])
def test_tensor_names_map_to_the_layer_that_made_them(tensor: str, layer: str | None) -> None:
    assert layer_of(tensor, "sample_shapes", SAMPLE_LAYERS, ["probabilities"]) == layer


def test_nested_models_outputs_by_position_and_models_without_layers() -> None:
    layers = ["input_layer", "mobilenetv2_0.35_96", "Conv1", "bn_Conv1", "head"]
    assert layer_of("outer_1/mobilenetv2_0.35_96_1/bn_Conv1_1/FusedBatchNormV3", "outer",
                    layers, ["head"]) == "bn_Conv1"
    assert layer_of("Identity_1", "m", ["a", "b"], ["a", "b"]) == "b"
    assert layer_of("Identity_1", "m", ["a", "b"], ["a", "probs"]) is None  # a dict key, no layer
    assert layer_of("model/dense/MatMul", None, [], ["out"]) is None  # a plain SavedModel


def layer_share(report: dict[str, Any], layers: list[str]) -> tuple[float, int]:
    """The share of report.json's per-op rows that name a layer of the model, and their number;
    every named layer must be one of the model's."""
    rows = [row for artifact in report["artifacts"] for row in artifact.get("op_errors") or []]
    assert rows, "no per-op error rows"
    named = [row for row in rows if row["layer"] is not None]
    assert all(row["layer"] in layers for row in named), named
    assert all({"op", "tensor", "layer", "value"} <= set(row) for row in rows)
    return len(named) / len(rows), len(rows)


def op_output_names(tflite: Path) -> list[str]:
    """The output tensor name of every operator of a .tflite file."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(tflite.read_bytes(), 0)
    graph = model.Subgraphs(0)
    return [graph.Tensors(graph.Operators(i).Outputs(0)).Name().decode()
            for i in range(graph.OperatorsLength())]


def assert_most_name_a_layer(names: list[str], model_name: str, layers: list[str],
                             outputs: list[str]) -> None:
    mapped = [layer_of(name, model_name, layers, outputs) for name in names]
    share = sum(layer is not None for layer in mapped) / len(mapped)
    assert share >= 0.8, (share, [name for name, layer in zip(names, mapped, strict=True) if not layer])


@pytest.mark.quick
def test_the_samples_per_op_rows_name_its_layers(tmp_path: Path) -> None:
    run_invoke("convert", "--model", str(ROOT / "model" / "sample.h5"),
               *quick_flags(ROOT / "dataset", tmp_path), "--quant", "fp32,fp16,int8", check=True)
    build = tmp_path / "sample"
    report = json.loads((build / "report.json").read_text())
    model = json.loads((build / "export" / "model.json").read_text())
    assert model["layers"] == SAMPLE_LAYERS and model["keras_name"] == "sample_shapes"
    share, rows = layer_share(report, SAMPLE_LAYERS)
    assert share == 1.0 and rows >= 6
    # a flatten moves values and adds no error: it is not ranked (it was, by the metric's axis)
    assert all(row["op"] != "RESHAPE" for a in report["artifacts"] for row in a["op_errors"] or [])
    int8 = next(a for a in report["artifacts"] if a["variant"] == "int8")
    assert {row["op"]: row["layer"] for row in int8["op_errors"]}["FULLY_CONNECTED"] == "probabilities"
    # Every operator of the int8 model, not only the ten that hurt most.
    names = op_output_names(build / "tflite" / "sample_int8.tflite")
    assert_most_name_a_layer(names, "sample_shapes", SAMPLE_LAYERS, ["probabilities"])
    assert "Where quantization hurts" in (build / "report.md").read_text()
    assert "| probabilities | FULLY_CONNECTED #" in (build / "report.md").read_text()


def test_mobilenetv2_per_op_rows_name_its_layers(tmp_path: Path, tiny_dataset: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                           classes=3)
    model.save(tmp_path / "mobilenet.keras")
    run_invoke("convert", "--model", str(tmp_path / "mobilenet.keras"),
               *quick_flags(tiny_dataset, tmp_path / "build"), "--quant", "fp32,dynamic,int8",
               "--allow-class-mismatch", check=True)
    build = tmp_path / "build" / "mobilenet"
    info = json.loads((build / "export" / "model.json").read_text())
    assert info["keras_name"] == model.name and len(info["layers"]) == len(model.layers)
    share, rows = layer_share(json.loads((build / "report.json").read_text()), info["layers"])
    assert share >= 0.8 and rows >= 15, share
    names = op_output_names(build / "tflite" / "mobilenet_int8.tflite")
    outputs = [output["name"] for output in info["outputs"]]
    assert_most_name_a_layer(names, model.name, info["layers"], outputs)
