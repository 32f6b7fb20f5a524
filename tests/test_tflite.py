"""Real TensorFlow conversions of tiny models through the build API (stage processes and all)."""

from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from converters import build
from converters.config import IODType, Quantization
from converters.errors import ConversionError
from converters.fsutil import read_json
from converters.targets.tflite import flatbuffer as tflite_inspect
from tests.conftest import make_config, save_function_model


def test_four_modes_convert_load_and_report(tiny_h5: Path, tiny_dataset: Path,
                                            tmp_path: Path) -> None:
    build.convert(make_config(tiny_h5, tiny_dataset, tmp_path), ["test"])
    folder = tmp_path / "tiny"
    sizes = {}
    for mode in ("fp32", "fp16", "dynamic", "int8"):
        artifact = folder / "tflite" / f"tiny_{mode}.tflite"
        interpreter = Interpreter(model_path=str(artifact))
        interpreter.allocate_tensors()
        sizes[mode] = artifact.stat().st_size
    assert sizes["fp16"] < sizes["fp32"]
    graph = tflite_inspect.read(folder / "tflite" / "tiny_int8.tflite")
    assert graph.inputs[0].type == "UINT8" and graph.outputs[0].type == "UINT8"
    assert graph.float_ops() == []
    fp16 = tflite_inspect.read(folder / "tflite" / "tiny_fp16.tflite")
    assert any(op.name == "DEQUANTIZE" and op.inputs[0].type == "FLOAT16" for op in fp16.operators)
    report = read_json(folder / "report.json")
    assert set(report) >= {"model", "dataset", "reference", "artifacts"}
    assert set(report["reference"]) >= {"accuracy", "latency_ms"}
    assert [(a["target"], a["variant"]) for a in report["artifacts"]] == [
        ("tflite", "fp32"), ("tflite", "fp16"), ("tflite", "dynamic"), ("tflite", "int8")]
    for artifact in report["artifacts"]:
        assert set(artifact) >= {"target", "variant", "path", "sha256", "size_bytes",
                                 "latency_ms", "metrics", "float_ops"}
        assert set(artifact["metrics"]) == {"max_abs_error", "mean_abs_error",
                                            "cosine_similarity", "top1_agreement", "accuracy"}
        assert (folder / artifact["path"]).is_file()
        assert artifact["metrics"]["cosine_similarity"] > 0.99
    fp32 = report["artifacts"][0]
    assert fp32["metrics"]["max_abs_error"] < 1e-5 and fp32["metrics"]["top1_agreement"] == 1.0
    assert (folder / "report.md").read_text().count("| tflite ") == 4
    assert "data:image/png;base64," in (folder / "report.html").read_text()


@pytest.mark.parametrize("io_dtype,expected", [(IODType.INT8, "INT8"),
                                               (IODType.FLOAT32, "FLOAT32")])
def test_int8_io_dtype_choice(tiny_h5: Path, tiny_dataset: Path, tmp_path: Path,
                              io_dtype: IODType, expected: str) -> None:
    config = make_config(tiny_h5, tiny_dataset, tmp_path, quantizations=(Quantization.INT8,),
                         io_dtype=io_dtype)
    build.convert(config, ["test"])
    graph = tflite_inspect.read(tmp_path / "tiny" / "tflite" / "tiny_int8.tflite")
    assert graph.inputs[0].type == expected and graph.outputs[0].type == expected
    # Only integer ops compute: QUANTIZE/DEQUANTIZE at float32 edges are type conversions.
    assert graph.float_ops() == []
    core = [op for op in graph.operators if op.name not in ("QUANTIZE", "DEQUANTIZE")]
    assert all(t.type in ("INT8", "INT32", "UINT8") for op in core for t in op.inputs + op.outputs)


def test_strict_int8_names_unquantizable_ops_and_fallback_keeps_them_float(
        tiny_dataset: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    model = save_function_model(tmp_path / "sine", tf.math.sin)
    strict = make_config(model, tiny_dataset, tmp_path / "strict",
                         quantizations=(Quantization.INT8,))
    with pytest.raises(ConversionError, match=r"cannot be quantized to int8: SIN \(1\)\. "
                                              r"Re-run with --allow-float-fallback"):
        build.convert(strict, ["test"])
    assert not (tmp_path / "strict" / "sine" / "tflite" / "sine_int8.tflite").exists()
    mixed = make_config(model, tiny_dataset, tmp_path / "mixed",
                        quantizations=(Quantization.INT8,), allow_float_fallback=True)
    build.convert(mixed, ["test"])
    report = read_json(tmp_path / "mixed" / "sine" / "report.json")
    assert report["artifacts"][0]["float_ops"] == [{"op": "SIN", "count": 1}]
    assert report["artifacts"][0]["metrics"]["cosine_similarity"] > 0.99


def test_tensorflow_only_op_needs_allow_flex(tiny_dataset: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    model = save_function_model(tmp_path / "erfinv",
                                lambda x: tf.math.erfinv(tf.clip_by_value(x, -0.9, 0.9)))
    config = make_config(model, tiny_dataset, tmp_path / "out", quantizations=(Quantization.FP32,))
    with pytest.raises(ConversionError, match=r"no TFLite builtin: tf\.Erfinv\. Re-run with "
                                              r"--allow-flex"):
        build.convert(config, ["test"])


def test_constant_model_metrics_have_known_values(tiny_dataset: Path, tmp_path: Path) -> None:
    """Zero kernel, bias favouring class 1: every artifact must predict class 1 everywhere."""
    import keras

    inputs = keras.Input((16, 16, 3))
    flat = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer="zeros",
                                 bias_initializer=keras.initializers.Constant([0.0, 2.0, 0.0]))(flat)
    path = tmp_path / "constant.keras"
    keras.Model(inputs, outputs).save(path)
    build.convert(make_config(path, tiny_dataset, tmp_path / "out",
                              quantizations=(Quantization.FP32, Quantization.INT8)), ["test"])
    folder = tmp_path / "out" / "constant"
    validation_files = read_json(folder / "data" / "dataset.json")["validation"]["files"]
    expected_accuracy = np.mean([name.startswith("b/") for name in validation_files])
    report = read_json(folder / "report.json")
    assert report["reference"]["accuracy"] == pytest.approx(expected_accuracy)
    for artifact in report["artifacts"]:
        metrics = artifact["metrics"]
        assert metrics["accuracy"] == pytest.approx(expected_accuracy)
        assert metrics["top1_agreement"] == 1.0
        assert metrics["cosine_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert report["artifacts"][0]["metrics"]["max_abs_error"] < 1e-6
