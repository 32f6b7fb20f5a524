"""TensorRT engine code: what a CPU can check runs everywhere, on real ONNX models the project
exports from a trained two-input / two-output Keras model (the optimization profile of every
input, the name → buffer plan, feeding by name in the engine's dtypes, batching, the sidecar,
detection of a missing TensorRT/GPU); building and running real engines needs TensorRT and an
NVIDIA GPU and skips, saying so, without them. Nothing here pretends a build or TensorRT output."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.errors import ConfigError, ConversionError, ModelError, ValidationError
from converters.stages import data
from converters.targets.tensorrt.engine import sidecar, tensorrt_problem
from converters.targets.tensorrt.io_plan import (
    BatchProfile,
    Buffer,
    ProfileShapes,
    TensorSpec,
    buffer_plan,
    chunks,
    feeds,
    float_outputs,
    onnx_io,
    padded,
    profile_shapes,
    seen_shapes,
)
from tests.conftest import ROOT, run_invoke
from tests.multi_io_models import convert, fusion_model

PROBLEM = tensorrt_problem()
IMAGE = ProfileShapes((1, 8, 8, 3), (4, 8, 8, 3), (8, 8, 8, 3))
VECTOR = ProfileShapes((1, 4), (4, 4), (8, 4))


@pytest.fixture(scope="module")
def fusion2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The build folder of a trained image + vector → label + channel_means model converted to
    ONNX fp32 and TensorRT's Q/DQ int8 by the project (``invoke convert --target tensorrt``:
    the engines themselves are built only where TensorRT and a GPU are)."""
    root = tmp_path_factory.mktemp("fusion2")
    model, samples = fusion_model(root, channel_means=True)
    report = convert(model, samples, root / "out", "--target", "tensorrt",
                     succeeds=PROBLEM is None)
    assert [t["name"] for t in report["model"]["outputs"]] == ["label", "channel_means"]
    return root / "out" / "fusion2"


def test_batch_profile_parses_and_dumps() -> None:
    assert BatchProfile.parse("1,8,32").as_dict() == {"min": 1, "opt": 8, "max": 32}


@pytest.mark.parametrize("text", ["8,1,32", "0,1,2", "1,2", "a,b,c"])
def test_bad_batch_profiles_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--batch"):
        BatchProfile.parse(text)


def test_cli_refuses_a_bad_batch_profile(tmp_path: Path) -> None:
    result = run_invoke("convert", "--target", "tensorrt", "--batch", "8,1,32", "--out",
                        str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--batch must be min,opt,max with 1 <= min <= opt <= max <= 4096, got 8,1,32" in result.stderr


@pytest.mark.parametrize("variant", ["fp32", "int8-tensorrt"])
def test_onnx_io_names_both_inputs_and_outputs(fusion2: Path, variant: str) -> None:
    inputs, outputs = onnx_io(fusion2 / "onnx" / f"fusion2_{variant}.onnx")
    assert inputs == (TensorSpec("image", ("batch", 8, 8, 3), "float32"),
                      TensorSpec("vector", ("batch", 4), "float32"))
    assert outputs == (TensorSpec("label", ("batch", 3), "float32"),
                       TensorSpec("channel_means", ("batch", 3, 1), "float32"))


def test_int8_calibration_feeds_both_inputs_by_name(fusion2: Path) -> None:
    """The Q/DQ model TensorRT builds int8 from: onnxruntime's calibrator got every input by
    name (the vector input has its own calibrated scale)."""
    record = json.loads((fusion2 / "onnx" / "fusion2_int8-tensorrt_calibration.json").read_text())
    assert record["images"] == 32 and record["scales"]["vector"] > 0


def real_seen(build: Path) -> dict[str, list[tuple[int, ...]]]:
    return seen_shapes(data.load_inputs(build, data.CALIBRATION),
                       data.load_inputs(build, data.VALIDATION))


def test_profile_covers_every_input_from_the_real_splits(fusion2: Path) -> None:
    inputs, _ = onnx_io(fusion2 / "onnx" / "fusion2_int8-tensorrt.onnx")
    seen = real_seen(fusion2)
    assert seen == {"image": [(8, 8, 3), (8, 8, 3)], "vector": [(4,), (4,)]}
    profile = profile_shapes(inputs, BatchProfile(1, 4, 8), seen)
    assert profile == {"image": IMAGE, "vector": VECTOR}
    assert profile["vector"].as_dict() == {"min": [1, 4], "opt": [4, 4], "max": [8, 4]}


def test_dynamic_non_batch_axes_take_the_sizes_the_data_has(fusion2: Path,
                                                            tmp_path: Path) -> None:
    """The exported model with the image's height and width made dynamic (its convolutions are
    1×1 and its pooling global, so onnxruntime runs it at any size): those axes span the data."""
    import onnx
    import onnxruntime

    model = onnx.load(str(fusion2 / "onnx" / "fusion2_fp32.onnx"))
    image_dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis, name in ((1, "height"), (2, "width")):
        image_dims[axis].dim_param = name
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in (8, 12):
        label, means = session.run(None, {"image": np.ones((2, size, size, 3), np.float32),
                                          "vector": np.zeros((2, 4), np.float32)})
        assert label.shape == (2, 3) and means.shape == (2, 3, 1)
    inputs, _ = onnx_io(path)
    assert inputs[0].dims == ("batch", "height", "width", 3)
    seen = {"image": [(8, 8, 3), (12, 12, 3), (12, 12, 3)], "vector": [(4,)]}
    profile = profile_shapes(inputs, BatchProfile(2, 4, 16), seen)
    assert profile["image"] == ProfileShapes((2, 8, 8, 3), (4, 12, 12, 3), (16, 12, 12, 3))
    assert profile["vector"] == ProfileShapes((2, 4), (4, 4), (16, 4))
    with pytest.raises(ModelError, match=r"input 'image' axis 1 \('height'\) is dynamic and no "):
        profile_shapes(inputs, BatchProfile(), {"vector": [(4,)]})


def test_data_that_disagrees_with_a_fixed_axis_is_refused(fusion2: Path) -> None:
    inputs, _ = onnx_io(fusion2 / "onnx" / "fusion2_fp32.onnx")
    with pytest.raises(ModelError, match=r"input 'image' has 8 on axis 1 .* \[16\].*\(N, 8, 8, 3\)"):
        profile_shapes(inputs, BatchProfile(), {"image": [(16, 16, 3)], "vector": [(4,)]})
    with pytest.raises(ModelError, match="input 'vector' has 1 dimensions per sample"):
        profile_shapes(inputs, BatchProfile(), {"vector": [(2, 2)]})


def fusion_buffers(build: Path) -> tuple[Buffer, ...]:
    """The plan for the int8 model's tensors, outputs at the ONNX model's declared shapes at the
    max batch (on a GPU, the runtime takes them from the execution context instead)."""
    inputs, outputs = onnx_io(build / "onnx" / "fusion2_int8-tensorrt.onnx")
    profile = {"image": IMAGE, "vector": VECTOR}
    return buffer_plan({s.name: (np.dtype(s.dtype), profile[s.name]) for s in inputs},
                       {s.name: (np.dtype(s.dtype), (8, *(int(d) for d in s.dims[1:])))
                        for s in outputs})


def test_one_buffer_per_named_tensor_at_the_largest_shape(fusion2: Path) -> None:
    buffers = fusion_buffers(fusion2)
    assert [(b.name, b.is_input, b.shape, b.nbytes) for b in buffers] == [
        ("image", True, (8, 8, 8, 3), 8 * 8 * 8 * 3 * 4), ("vector", True, (8, 4), 8 * 4 * 4),
        ("label", False, (8, 3), 8 * 3 * 4), ("channel_means", False, (8, 3, 1), 8 * 3 * 4)]
    with pytest.raises(ConversionError, match="output 'boxes' has a data-dependent shape"):
        buffer_plan({}, {"boxes": (np.dtype(np.float32), (8, -1, 4))})


def test_real_validation_split_is_fed_by_name(fusion2: Path) -> None:
    buffers = fusion_buffers(fusion2)
    profile = {"image": IMAGE, "vector": VECTOR}
    split = data.load_inputs(fusion2, data.VALIDATION)
    reordered = {"vector": split["vector"][:5], "image": split["image"][:5]}
    host = feeds(reordered, buffers, profile)
    assert list(host) == ["image", "vector"]
    assert host["image"].flags.c_contiguous and host["image"].dtype == np.float32
    np.testing.assert_array_equal(host["vector"], split["vector"][:5])
    with pytest.raises(ValidationError, match=r"input 'image' of shape \[9, 8, 8, 3\] is outside"):
        feeds({name: array[:9] for name, array in split.items()}, buffers, profile)
    with pytest.raises(ValidationError, match="the engine's inputs are image, vector; the data "
                                              "has image: inputs are matched by name"):
        feeds({"image": split["image"][:2]}, buffers, profile)


@pytest.mark.parametrize(("dtype", "values", "expected"), [
    (np.int32, np.array([[1.0, 2.0]], np.float32), np.array([[1, 2]], np.int32)),
    (np.int64, np.array([[3, 4]], np.int32), np.array([[3, 4]], np.int64)),
    (np.bool_, np.array([[0.0, 1.0]], np.float32), np.array([[False, True]])),
    (np.float16, np.array([[0.5, 1.5]], np.float32), np.array([[0.5, 1.5]], np.float16)),
])
def test_inputs_take_the_engine_dtype(dtype: Any, values: np.ndarray,
                                      expected: np.ndarray) -> None:
    buffers = (Buffer("ids", True, np.dtype(dtype), (4, 2)),)
    host = feeds({"ids": values}, buffers, {"ids": ProfileShapes((1, 2), (2, 2), (4, 2))})
    assert host["ids"].dtype == expected.dtype
    np.testing.assert_array_equal(host["ids"], expected)


def test_fractional_values_for_an_integer_input_are_refused() -> None:
    buffers = (Buffer("ids", True, np.dtype(np.int64), (4, 2)),)
    with pytest.raises(ValidationError, match="input 'ids' is int64 in the engine but the data "
                                              "has fractional values"):
        feeds({"ids": np.array([[0.5, 1.0]])}, buffers,
              {"ids": ProfileShapes((1, 2), (2, 2), (4, 2))})


def test_batches_stay_in_the_profile_and_padding_is_dropped() -> None:
    profile = {"image": ProfileShapes((4, 8, 8, 3), (4, 8, 8, 3), (8, 8, 8, 3)),
               "vector": ProfileShapes((2, 4), (4, 4), (16, 4))}
    assert chunks(19, profile) == [(0, 8, 8), (8, 16, 8), (16, 19, 4)]
    assert chunks(2, profile) == [(0, 2, 4)]
    arrays = {"vector": np.arange(19 * 4).reshape(19, 4)}
    last = padded(arrays, 16, 19, 4)["vector"]
    np.testing.assert_array_equal(last, arrays["vector"][[16, 17, 18, 18]])
    outputs = float_outputs({"count": np.array([1, 2, 3, 3], np.int64),
                             "mask": np.array([True, False, True, True]),
                             "half": np.array([0.5, 1, 2, 2], np.float16)}, 3)
    assert {name: (a.dtype, a.tolist()) for name, a in outputs.items()} == {
        "count": (np.float32, [1, 2, 3]), "mask": (np.float32, [1, 0, 1]),
        "half": (np.float32, [0.5, 1, 2])}
    with pytest.raises(ConversionError, match="no batch size in common"):
        chunks(3, {"a": ProfileShapes((9,), (9,), (9,)), "b": ProfileShapes((1,), (2,), (4,))})


def test_sidecar_names_every_input_output_and_profile(fusion2: Path) -> None:
    """The sidecar's input/output have the keys and values of the ONNX artifact's info file,
    so the report reads an engine like any artifact; every input's profile is kept by name."""
    io = onnx_io(fusion2 / "onnx" / "fusion2_int8-tensorrt.onnx")
    built = {"tensorrt_version": "10.8.0", "cuda_runtime_version": 12080,
             "cuda_driver_version": 12080, "gpu": "GPU name", "compute_capability": "8.9",
             "strongly_typed": True}
    facts = sidecar(built, "int8", io, {"image": IMAGE, "vector": VECTOR}, 1 << 30, {})
    onnx_info = json.loads((fusion2 / "onnx" / "fusion2_int8-tensorrt.json").read_text())
    assert (facts["input"], facts["output"]) == (onnx_info["input"], onnx_info["output"])
    assert [i["name"] for i in facts["inputs"]] == ["image", "vector"]
    assert [o["shape"] for o in facts["outputs"]] == [["batch", 3], ["batch", 3, 1]]
    assert facts["profile"]["vector"]["max"] == [8, 4] and facts["strongly_typed"]
    assert facts["compute_capability"] == "8.9"
    assert facts["labels"] == [] and facts["preprocessing"] is None  # arrays: no class names
    json.dumps(facts)  # a JSON sidecar, never bytes prepended to the engine


def test_missing_tensorrt_is_detected_before_trying() -> None:
    if PROBLEM is None:
        pytest.skip("TensorRT and a GPU are present here")
    assert "TensorRT is not installed" in PROBLEM or "GPU" in PROBLEM or "CUDA" in PROBLEM


def trtexec_loads(path: Path, shapes: str) -> None:
    trtexec = shutil.which("trtexec")
    if trtexec:
        loaded = subprocess.run([trtexec, f"--loadEngine={path}", f"--shapes={shapes}"],
                                capture_output=True, text=True, timeout=300)
        assert loaded.returncode == 0, loaded.stdout[-2000:]


@pytest.mark.gpu
@pytest.mark.skipif(PROBLEM is not None, reason=f"needs TensorRT and an NVIDIA GPU: {PROBLEM}")
def test_engines_build_validate_and_load_in_trtexec(tmp_path: Path) -> None:
    result = run_invoke("convert", "--model", str(ROOT / "model" / "sample.h5"), "--target",
                        "tensorrt", "--quant", "fp32,fp16,int8", "--batch", "1,4,8",
                        "--dataset", str(ROOT / "dataset"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "sample" / "report.json").read_text())
    rows = {a["variant"]: a for a in report["artifacts"] if a["target"] == "tensorrt"}
    assert set(rows) == {"fp32", "fp16", "int8"} and report["not_built"] == []
    for engine in report["tensorrt"]:
        assert engine["ran"] and engine["metrics"]["accuracy"] >= 0.95
        assert rows[engine["precision"]]["metrics"] == engine["metrics"]
        [(name, shapes)] = engine["sidecar"]["profile"].items()
        assert shapes["opt"] == [4, 32, 32, 3]
        trtexec_loads(tmp_path / "sample" / engine["engine"], f"{name}:1x32x32x3")


@pytest.mark.gpu
@pytest.mark.skipif(PROBLEM is not None, reason=f"needs TensorRT and an NVIDIA GPU: {PROBLEM}")
def test_two_input_two_output_engines_validate_each_output(tmp_path: Path) -> None:
    """Engines of the image + vector → label + channel_means model: a profile per input, both
    inputs fed by name, a row per output for every precision."""
    model, samples = fusion_model(tmp_path, channel_means=True)
    report = convert(model, samples, tmp_path / "out", "--target", "tensorrt", "--quant",
                     "fp32,fp16,int8", "--batch", "1,4,8")
    rows = {a["variant"]: a for a in report["artifacts"] if a["target"] == "tensorrt"}
    assert set(rows) == {"fp32", "fp16", "int8"} and report["not_built"] == []
    onnx = {a["variant"]: a for a in report["artifacts"] if a["target"] == "onnx"}
    for variant, row in rows.items():
        label, means = row["outputs"]["label"], row["outputs"]["channel_means"]
        assert (label["task"], means["task"]) == ("classification", "regression")
        assert label["top1_agreement"] > (0.99 if variant != "int8" else 0.9)
        assert means["relative_error"] < (1e-3 if variant != "int8" else 0.1)
        assert label["accuracy"] >= onnx[variant if variant != "fp16" else "fp32"][
            "outputs"]["label"]["accuracy"] - 0.05
    for engine in report["tensorrt"]:
        facts = engine["sidecar"]
        assert facts["profile"] == {"image": IMAGE.as_dict(), "vector": VECTOR.as_dict()}
        assert [o["name"] for o in facts["outputs"]] == ["label", "channel_means"]
        trtexec_loads(tmp_path / "out" / "fusion2" / engine["engine"], "image:1x8x8x3,vector:1x4")
