"""Edge TPU target: real int8 conversions at batch 1, the pre-check's prediction on models built
to keep or break a rule, the compile stage without (and, where installed, with) the compiler."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from converters.fsutil import read_json
from converters.pipeline import build
from converters.targets.edgetpu.check import AFTER_CUT, LIMITATION, MAPPED, NOT_COMPILED, RANK
from tests.conftest import ROOT, make_config, run_invoke, save_function_model

COMPILER = shutil.which("edgetpu_compiler")


def _save(model: Any, path: Path) -> Path:
    model.save(path)
    return path


def _models(folder: Path) -> list[Path]:
    """Small models, each keeping or breaking one documented Edge TPU rule."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    layers = keras.layers

    def head(x: Any, classes: int = 3) -> Any:
        x = layers.GlobalAveragePooling2D()(x)
        return layers.Dense(classes, activation="softmax")(x)

    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = layers.Reshape((2, 8, 16, 4))(x)  # 5-D: two non-unit dims beyond the innermost three
    x = layers.Permute((2, 1, 3, 4))(x)  # a 5-D transpose no 4-D op can stand in for
    x = layers.Reshape((16, 16, 4))(x)
    rank5 = keras.Model(inputs, head(layers.Conv2D(4, 3, padding="same")(x)))

    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(4, 3, padding="same", dilation_rate=(1, 2), activation="relu")(inputs)
    dilated = keras.Model(inputs, head(x))

    inputs = keras.Input((16, 16, 3))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3, activation="relu")(inputs))
    softmax = keras.Model(inputs, layers.Dense(16_001, activation="softmax")(x))

    mobilenet = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35,
                                               weights=None, classes=3)
    filters = tf.constant(0.1, shape=(3, 3, 3, 4))
    sine = save_function_model(
        folder / "sine", lambda x: tf.math.sin(tf.nn.conv2d(x, filters, 1, "SAME")), size=16)
    channel_mean = save_function_model(  # Mean over 6 channels: z not a multiple of 4
        folder / "channel_mean",
        lambda x: tf.reduce_mean(tf.nn.conv2d(x, tf.constant(0.1, shape=(3, 3, 3, 6)), 1, "SAME"),
                                 axis=-1, keepdims=True), size=16)
    return [ROOT / "model" / "sample.h5", _save(mobilenet, folder / "mobilenet.keras"),
            _save(rank5, folder / "rank5.keras"), _save(dilated, folder / "dilated.keras"),
            _save(softmax, folder / "softmax.keras"), sine, channel_mean]


@pytest.fixture(scope="module")
def edgetpu_build(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path,
                  ) -> tuple[Path, build.BuildResult]:
    folder = tmp_path_factory.mktemp("edgetpu")
    out = folder / "build"
    # A zoo of 3- to 16,001-output models against one 3-class dataset: class counts differ.
    config = make_config(_models(folder), tiny_dataset, out, targets=("edgetpu",),
                         allow_float_fallback=True, jobs=2, allow_class_mismatch=True)
    return out, build.convert(config, ["test"])  # type: ignore[arg-type]


def precheck(out: Path, stem: str) -> dict[str, Any]:
    return read_json(out / stem / "edgetpu" / f"{stem}_int8_precheck.json")


def cut(result: dict[str, Any]) -> dict[str, Any]:
    """The first op predicted on the CPU; every later op must be on the CPU too."""
    first, *rest = result["cpu_op_reasons"]
    assert [op["index"] for op in rest] == list(range(first["index"] + 1, result["total_ops"]))
    assert all(AFTER_CUT in op["status"] or "after the cut" in op["reason"] for op in rest)
    assert result["tpu_ops"] == first["index"]
    return first


def test_int8_model_has_batch_one_and_static_shapes(edgetpu_build: tuple[Path, Any]) -> None:
    from converters.targets.tflite import flatbuffer as tflite_inspect

    out, _ = edgetpu_build
    graph = tflite_inspect.read(out / "sample" / "edgetpu" / "sample_int8.tflite")
    assert graph.inputs[0].shape == graph.inputs[0].shape_signature == (1, 32, 32, 3)
    assert graph.inputs[0].type == "UINT8" and graph.outputs[0].type == "UINT8"



def test_int8_model_carries_metadata_with_the_class_names(edgetpu_build: tuple[Path, Any]) -> None:
    """Coral's compiler keeps a model's metadata (shown on Coral's own compiles in
    test_edgetpu_metadata.py): the int8 model it compiles carries the names and image facts."""
    from converters.targets.tflite import metadata

    out, _ = edgetpu_build
    classes = read_json(out / "dilated" / "report.json")["dataset"]["class_names"]
    found = metadata.read((out / "dilated" / "edgetpu" / "dilated_int8.tflite").read_bytes())
    assert found is not None and found.name == "dilated"
    assert list(found.labels) == classes and len(classes) == 3  # 3 classes, 3 class folders
    assert found.normalization is None  # a uint8 input takes the pixels themselves
    # The sample has 4 classes against 3 class folders: no output is named by them.
    sample = metadata.read((out / "sample" / "edgetpu" / "sample_int8.tflite").read_bytes())
    assert sample is not None and sample.labels == ()


@pytest.mark.parametrize("stem", ["sample", "mobilenet"])
def test_supported_models_map_entirely(edgetpu_build: tuple[Path, Any], stem: str) -> None:
    out, _ = edgetpu_build
    result = precheck(out, stem)
    assert result["compiles"] and result["blocking"] == []
    assert result["cpu_op_reasons"] == [] and result["tpu_fraction"] == 1.0
    assert result["edgetpu_subgraphs"] == 1
    assert all(row["status"] == MAPPED for row in result["table"])
    if stem == "mobilenet":
        counts = {row["operator"]: row["count"] for row in result["table"]}
        assert counts["DEPTHWISE_CONV_2D"] == 17 and counts["ADD"] == 10


def test_a_float_fallback_op_cuts_the_graph(edgetpu_build: tuple[Path, Any]) -> None:
    out, _ = edgetpu_build
    result = precheck(out, "sine")
    first = cut(result)
    assert first["operator"] == "DEQUANTIZE"  # the float island starts here, SIN follows
    assert first["index"] > 0  # the int8 convolution before it stays on the TPU
    sin = next(op for op in result["cpu_op_reasons"] if op["operator"] == "SIN")
    assert "not in the Edge TPU's supported operations" in sin["reason"]


def test_a_5d_tensor_is_refused_by_rank(edgetpu_build: tuple[Path, Any]) -> None:
    out, _ = edgetpu_build
    first = cut(precheck(out, "rank5"))
    assert first["status"] == RANK
    assert "[1, 2, 8, 16, 4]" in first["reason"]


@pytest.mark.parametrize(("stem", "operator", "reason"), [
    ("dilated", "CONV_2D", "dilation 1x2 differs"),
    ("softmax", "SOFTMAX", "16001 elements (limit 16,000)"),
    ("channel_mean", "MEAN", "innermost (z) dimension of size 6, not a multiple of 4"),
])
def test_a_per_op_limit_cuts_the_graph(edgetpu_build: tuple[Path, Any], stem: str, operator: str,
                                       reason: str) -> None:
    out, _ = edgetpu_build
    first = cut(precheck(out, stem))
    assert first["operator"] == operator and first["status"] == LIMITATION
    assert reason in first["reason"]


@pytest.mark.skipif(COMPILER is not None, reason="edgetpu_compiler is installed here")
def test_without_the_compiler_the_build_reports_and_fails(edgetpu_build: tuple[Path, Any]) -> None:
    out, result = edgetpu_build
    # Seven models without the compiler: one line names them all and says how to get it.
    [problem] = result.problems
    assert "the Edge TPU compile did not run" in problem and "invoke images --target edgetpu" in problem
    assert problem.count("invoke images --target edgetpu") == 1
    assert all(f"{stem}," in problem or f"{stem}:" in problem for stem in ("sample", "dilated", "mobilenet"))
    report = read_json(out / "sample" / "report.json")
    edgetpu = report["edgetpu"]
    assert edgetpu["compiled"] is False and "edgetpu_compiler is not available" in edgetpu["not_run_reason"]
    assert edgetpu["predicted_tpu_fraction"] == 1.0 and edgetpu["tpu_fraction"] is None
    assert edgetpu["side_by_side"][0]["compiler"] is None
    assert [a["target"] for a in report["artifacts"]] == ["edgetpu"]
    assert report["artifacts"][0]["metrics"]["top1_agreement"] >= 0.9  # int8 vs Keras
    markdown = (out / "sample" / "report.md").read_text()
    assert "## Edge TPU" in markdown and "| CONV_2D | 2 × Mapped to Edge TPU | did not run |" in markdown
    assert list((out / "sample" / "edgetpu" / "compiled").iterdir()) == []


@pytest.mark.skipif(COMPILER is None, reason="edgetpu_compiler is not installed here (Coral's apt "
                                            "repository is unreachable on the project's machines)")
def test_the_real_compiler_agrees_with_the_precheck(edgetpu_build: tuple[Path, Any]) -> None:
    out, result = edgetpu_build
    record = read_json(out / "sample" / "edgetpu" / "compile.json")
    assert record["ran"] and record["succeeded"] and record["edgetpu_subgraphs"] == 1
    assert record["tpu_ops"] == precheck(out, "sample")["tpu_ops"]
    assert (out / "sample" / "edgetpu" / "compiled" / "sample_int8_edgetpu.tflite").exists()


def test_with_the_tflite_target_the_int8_calibrates_once(edgetpu_build: tuple[Path, Any],
                                                          tiny_dataset: Path,
                                                          tmp_path: Path) -> None:
    """--target tflite,edgetpu: the Edge TPU int8 reuses the tflite int8's calibrated ranges and
    is byte for byte the model the Edge TPU build alone (which calibrates itself) made; a
    dynamic-batch model (MobileNetV2: Reshape) and a float-fallback graph (SIN) included."""
    from converters.config import Quantization
    from converters.targets.tflite import calibration_share

    out, _ = edgetpu_build
    stems = ("sample", "mobilenet", "sine")
    models = [ROOT / "model" / "sample.h5", out.parent / "mobilenet.keras", out.parent / "sine"]
    config = make_config(models, tiny_dataset, tmp_path, targets=("tflite", "edgetpu"),
                         quantizations=(Quantization.INT8,), allow_float_fallback=True,
                         allow_class_mismatch=True)
    build.convert(config, ["test"])  # type: ignore[arg-type]
    for stem, model in zip(stems, models, strict=True):
        stamp = read_json(tmp_path / stem / ".stages" / "edgetpu-int8.json")
        assert "tflite-int8" in stamp["deps"], stem
        info = read_json(tmp_path / stem / "edgetpu" / f"{stem}_int8.json")
        assert info["calibration"] == {"samples": 8, "float_model": model.name,
                                       "ranges_from": f"tflite/{stem}_int8.ranges.json"}, stem
        ranges = read_json(tmp_path / stem / "tflite" / f"{stem}_int8.ranges.json")
        assert ranges["inputs"] and all(o["range"] for o in ranges["outputs"]), stem
        shared = tmp_path / stem / "edgetpu" / f"{stem}_int8.tflite"
        alone = out / stem / "edgetpu" / f"{stem}_int8.tflite"
        assert shared.read_bytes() == alone.read_bytes(), stem
    # Ranges recorded on one model never quantize another: the float ops are checked
    mobilenet_ranges = read_json(tmp_path / "mobilenet" / "tflite" / "mobilenet_int8.ranges.json")
    with pytest.raises(calibration_share.RangesMismatch, match="float op"):
        calibration_share.apply_ranges(_calibrated(ROOT / "model" / "sample.h5", (32, 32, 3)),
                                       mobilenet_ranges)


def _calibrated(model_path: Path, shape: tuple[int, ...]) -> bytes:
    """The TF converter's calibrated float model (calibrate-only) of a Keras file."""
    import keras
    import numpy as np
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras.models.load_model(model_path))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [np.random.default_rng(i).random((1, *shape), dtype=np.float32)] for i in range(2))
    converter._experimental_calibrate_only = True
    calibrated: bytes = converter.convert()
    return calibrated


def test_cli_edgetpu_target_exits_non_zero_without_the_compiler(tmp_path: Path,
                                                                tiny_dataset: Path) -> None:
    if COMPILER is not None:
        pytest.skip("edgetpu_compiler is installed here")
    result = run_invoke("convert", "--model", str(ROOT / "model" / "sample.h5"), "--target",
                        "edgetpu", "--dataset", str(ROOT / "dataset"), "--out", str(tmp_path),
                        "--runner", "local", "--validation-size", "8", "--latency-runs", "2")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "the Edge TPU compile did not run" in result.stderr
    assert "Pre-check (no compiler): 10 of 10 ops predicted" in result.stdout
    assert (tmp_path / "sample" / "edgetpu" / "sample_int8.tflite").exists()
    assert (tmp_path / "sample" / "report.html").exists()


def test_cli_float_io_is_refused_for_edgetpu(tmp_path: Path) -> None:
    result = run_invoke("convert", "--target", "edgetpu", "--io-dtype", "float32", "--out",
                        str(tmp_path))
    assert result.returncode != 0 and "--target edgetpu needs integer input and output" in result.stderr
    assert not tmp_path.exists() or not any(tmp_path.rglob("*.tflite"))


def test_cli_edgetpu_check(edgetpu_build: tuple[Path, Any], tmp_path: Path) -> None:
    out, _ = edgetpu_build
    ok = run_invoke("edgetpu-check", "--model", str(out / "dilated" / "edgetpu" / "dilated_int8.tflite"))
    assert ok.returncode == 0, ok.stderr
    assert "CPU: op 1 CONV_2D: dilation 1x2 differs between height and width" in ok.stdout
    as_json = run_invoke("edgetpu-check", "--json", "--model",
                         str(out / "sample" / "edgetpu" / "sample_int8.tflite"))
    assert json.loads(as_json.stdout)["tpu_fraction"] == 1.0

    float_model = tmp_path / "float.tflite"
    fp32 = run_invoke("convert", "--model", str(ROOT / "model" / "sample.h5"), "--quant", "fp32",
                      "--dataset", str(ROOT / "dataset"), "--out", str(tmp_path / "b"),
                      "--runner", "local", "--validation-size", "8", "--latency-runs", "2")
    assert fp32.returncode == 0, fp32.stderr
    shutil.copy(tmp_path / "b" / "sample" / "tflite" / "sample_fp32.tflite", float_model)
    refused = run_invoke("edgetpu-check", "--model", str(float_model))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "Model not quantized" in refused.stderr
    assert NOT_COMPILED in refused.stdout and MAPPED not in refused.stdout  # no op claims to map
    assert "is FLOAT32, not int8/uint8" in refused.stdout  # each op's own reason is kept
    assert "ops predicted on the Edge TPU (0 %), 0 Edge TPU subgraph" in refused.stdout
    assert "shape signature [-1, 32, 32, 3]" in refused.stdout  # a -1 batch is a note, not a block

    missing = run_invoke("edgetpu-check", "--model", str(tmp_path / "nope.tflite"))
    assert missing.returncode != 0 and "nope.tflite does not exist" in missing.stderr
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all")
    junk = run_invoke("edgetpu-check", "--model", str(tmp_path / "junk.tflite"))
    assert junk.returncode != 0 and "is not a TFLite flatbuffer" in junk.stderr


def test_infer_on_a_compiled_model_names_the_missing_runtime(edgetpu_build: tuple[Path, Any],
                                                            tmp_path: Path) -> None:
    import ctypes

    try:
        ctypes.CDLL("libedgetpu.so.1")
        pytest.skip("an Edge TPU runtime is installed here")
    except OSError:
        pass
    out, _ = edgetpu_build
    compiled = out / "sample" / "edgetpu" / "compiled" / "sample_int8_edgetpu.tflite"
    if not compiled.exists():
        # No compiler here. A stand-in with the compiled name, NOT a compiled model: the runtime
        # is loaded before the model is read, and that is the failure under test.
        compiled = tmp_path / "sample_int8_edgetpu.tflite"
        shutil.copy(out / "sample" / "edgetpu" / "sample_int8.tflite", compiled)
    image = next((ROOT / "dataset" / "circle").iterdir())
    result = run_invoke("infer", "--artifact", str(compiled), "--image", str(image),
                        "--device", "usb")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "libedgetpu.so.1 could not be loaded for device 'usb'" in result.stderr
    assert "sample_int8.tflite" in result.stderr
