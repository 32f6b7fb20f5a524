"""ONNX target for real on the CPU: tf2onnx export with a named dynamic batch, onnx.checker,
onnxruntime parity against Keras, the Q/DQ int8 model TensorRT accepts, calibration keyed by
the dataset's content."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters import build
from converters.config import Quantization, Target
from converters.fsutil import read_json
from tests.conftest import ROOT, make_config, run_invoke, write_images


@pytest.fixture(scope="module")
def onnx_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, build.BuildResult]:
    import keras

    folder = tmp_path_factory.mktemp("onnx")
    dataset = folder / "images"
    shutil.copytree(ROOT / "dataset", dataset)
    keras.utils.set_random_seed(0)
    mobilenet = folder / "mobilenet.keras"
    keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                   classes=4).save(mobilenet)
    config = make_config([ROOT / "model" / "sample.h5", mobilenet], dataset, folder / "build",
                         targets=(Target.ONNX,), quantizations=(Quantization.FP32, Quantization.INT8),
                         jobs=2)
    return folder / "build", dataset, build.convert(config, ["test"])  # type: ignore[arg-type]


def artifacts(out: Path, stem: str) -> dict[str, dict[str, Any]]:
    report = read_json(out / stem / "report.json")
    return {a["variant"]: a for a in report["artifacts"] if a["target"] == "onnx"}


@pytest.mark.parametrize("stem", ["sample", "mobilenet"])
def test_fp32_onnx_matches_keras(onnx_build: tuple[Path, Path, Any], stem: str) -> None:
    out, _, result = onnx_build
    assert result.problems == ()
    fp32 = artifacts(out, stem)["fp32"]
    assert fp32["path"] == f"onnx/{stem}_fp32.onnx" and fp32["runtime"] == "onnxruntime (CPU)"
    assert fp32["metrics"]["max_abs_error"] < 1e-4
    assert fp32["metrics"]["top1_agreement"] == 1.0


def test_int8_qdq_model_is_close_to_keras(onnx_build: tuple[Path, Path, Any]) -> None:
    out, _, _ = onnx_build
    sample = artifacts(out, "sample")
    assert sample["int8"]["metrics"]["accuracy"] >= 0.95  # labelled held-out images
    assert sample["int8"]["size_bytes"] < 0.5 * sample["fp32"]["size_bytes"]
    mobilenet = artifacts(out, "mobilenet")["int8"]["metrics"]
    assert mobilenet["cosine_similarity"] > 0.95


def test_onnx_has_a_named_dynamic_batch(onnx_build: tuple[Path, Path, Any]) -> None:
    import onnx
    import onnxruntime

    out, _, _ = onnx_build
    path = out / "sample" / "onnx" / "sample_fp32.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert model.opset_import[0].version == 17
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    [outputs] = session.run(None, {session.get_inputs()[0].name: np.zeros((3, 32, 32, 3),
                                                                         np.float32)})
    assert outputs.shape == (3, 4)


def test_int8_model_is_symmetric_qdq_with_per_channel_weights(
        onnx_build: tuple[Path, Path, Any]) -> None:
    """What TensorRT's explicit quantization accepts: Q/DQ pairs, int8, zero point 0,
    per-channel weight scales."""
    import onnx
    from onnx import numpy_helper

    out, _, _ = onnx_build
    model = onnx.load(str(out / "sample" / "onnx" / "sample_int8.onnx"))
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantizers = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(quantizers) > 10
    zero_points = [initializers[n.input[2]] for n in quantizers if len(n.input) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    conv_weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear"
                    and initializers.get(n.input[1]) is not None and initializers[n.input[1]].size > 1]
    assert conv_weights, "no per-channel weight scales"
    calibration = read_json(out / "sample" / "onnx" / "sample_int8_calibration.json")
    assert calibration["symmetric"] and calibration["images"] == 8 and calibration["scales"]


def test_changed_dataset_recalibrates_only_the_int8_model(onnx_build: tuple[Path, Path, Any],
                                                          tmp_path: Path) -> None:
    out, dataset, _ = onnx_build
    work = tmp_path / "images"
    shutil.copytree(dataset, work)
    config = make_config(ROOT / "model" / "sample.h5", work, tmp_path / "build",
                         targets=(Target.ONNX,), quantizations=(Quantization.FP32, Quantization.INT8))
    build.convert(config, ["test"])  # type: ignore[arg-type]
    again = build.convert(config, ["test"])  # type: ignore[arg-type]
    assert again.ran["sample"] == []
    write_images(work / "circle", {"extra": 1}, size=32, seed=5)
    changed = build.convert(config, ["test"])  # type: ignore[arg-type]
    assert "onnx-int8" in changed.ran["sample"] and "onnx-fp32" in changed.skipped["sample"]


def test_tensorrt_request_without_gpu_builds_onnx_and_fails(tmp_path: Path) -> None:
    from converters.tensorrt_engine import tensorrt_problem

    if tensorrt_problem() is None:
        pytest.skip("TensorRT and a GPU are present: test_tensorrt.py builds real engines")
    result = run_invoke("convert", "--model", str(ROOT / "model" / "sample.h5"), "--target",
                        "tensorrt", "--quant", "fp16,int8", "--dataset", str(ROOT / "dataset"),
                        "--out", str(tmp_path), "--runner", "local", "--validation-size", "20",
                        "--calibration-size", "20", "--latency-runs", "2")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "the TensorRT fp16 engine was not built: TensorRT is not installed here" in result.stderr
    assert "the TensorRT int8 engine was not built" in result.stderr
    report = read_json(tmp_path / "sample" / "report.json")
    assert [e["precision"] for e in report["tensorrt"]] == ["fp16", "int8"]
    assert not any(e["ran"] for e in report["tensorrt"])
    assert {a["variant"] for a in report["artifacts"] if a["target"] == "onnx"} == {"fp32", "int8"}
    assert not list((tmp_path / "sample" / "tensorrt").rglob("*.engine"))


def test_infer_runs_onnx_artifacts(onnx_build: tuple[Path, Path, Any]) -> None:
    out, _, _ = onnx_build
    image = sorted((ROOT / "dataset" / "square").iterdir())[0]
    for variant in ("fp32", "int8"):
        result = run_invoke("infer", "--artifact", str(out / "sample" / "onnx" / f"sample_{variant}.onnx"),
                            "--image", str(image), "--top-k", "1")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split("\t")[0] == "square"
