"""Class names travel with every artifact: --labels FILE (or the class folders) name the classes in
TFLite metadata and ONNX metadata_props, and `invoke infer` reads them from an artifact on its
own, with no build folder beside it."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from converters.commands.infer import infer_samples
from converters.config import DatasetConfig, Quantization
from converters.errors import ConfigError
from converters.fsutil import read_json
from converters.inputs.labels import read_labels
from converters.pipeline import build
from converters.stages.pixel_normalization import FIXED, preprocessing_of
from converters.targets.tflite import metadata
from tests.conftest import make_config, quick_flags, run_invoke, write_images

LABELS = ("red apple", "Birne", "citron")


@pytest.mark.parametrize("content,expected", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"a\n\nb\n", "line 2 is empty"),
    (b"a\n\xff\xfe\n", "is not UTF-8 text"),
])
def test_a_bad_labels_file_is_named(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "labels.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=expected) as raised:
        read_labels(path)
    assert f"--labels {path}" in str(raised.value)


def test_labels_file_reads_names_in_order(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("\ufeffcat\r\ndog \nsea lion")  # BOM, CRLF, no final newline
    assert read_labels(path) == ("cat", "dog", "sea lion")


def test_labels_reach_every_artifact_and_infer_reads_them_alone(tiny_h5: Path, tiny_dataset: Path,
                                                                tmp_path: Path) -> None:
    import onnx

    config = make_config(tiny_h5, tiny_dataset, tmp_path / "build", targets=("tflite", "onnx"),
                         quantizations=(Quantization.FP32, Quantization.INT8))
    config = dataclasses.replace(config, dataset=DatasetConfig(
        tiny_dataset, calibration_size=8, validation_size=12, labels=LABELS))
    build.convert(config, ["test"])
    folder = tmp_path / "build" / "tiny"
    report = read_json(folder / "report.json")
    assert report["dataset"]["class_names"] == list(LABELS)
    assert report["dataset"]["labelled"] is True
    preprocessing = read_json(folder / "data" / "dataset.json")["preprocessing"]
    mean, std = FIXED[preprocessing["mode"]]
    [output] = read_json(folder / "export" / "model.json")["outputs"]
    output_name = output["name"]

    for variant in ("fp32", "int8"):
        tflite = metadata.read((folder / "tflite" / f"tiny_{variant}.tflite").read_bytes())
        assert tflite is not None and tflite.labels == LABELS
        props = {p.key: p.value for p in onnx.load(str(folder / "onnx" / f"tiny_{variant}.onnx"))
                 .metadata_props}
        assert json.loads(props["labels"]) == list(LABELS)
        assert json.loads(props["labelled_outputs"]) == [output_name]
        described = json.loads(props["preprocessing"])
        assert (tuple(described["mean"]), tuple(described["std"])) == (mean, std)
        assert described["layout"] == "NHWC" and described["color_space"] == "RGB"

    image = next((tiny_dataset / "b").iterdir())
    alone = tmp_path / "alone"
    alone.mkdir()
    for relative in ("tflite/tiny_fp32.tflite", "onnx/tiny_fp32.onnx", "onnx/tiny_int8.onnx"):
        inside = infer_samples(folder / relative, image)[0]
        copy = Path(shutil.copy2(folder / relative, alone))
        outside = infer_samples(copy, image)[0]
        assert [p.label for p in outside[0].top] == [p.label for p in inside[0].top]
        assert {p.label for p in outside[0].top} == set(LABELS)
        assert [p.score for p in outside[0].top] == pytest.approx([p.score for p in inside[0].top])


def test_a_tensorrt_engine_keeps_the_onnx_labels_in_its_sidecar(tiny_h5: Path, tiny_dataset: Path,
                                                                tmp_path: Path) -> None:
    """An engine cannot carry metadata: the sidecar JSON beside it keeps what the ONNX model it
    is built from says (the engine build itself needs TensorRT and a GPU, absent here), and
    infer reads the class names and normalization from that sidecar."""
    from converters.targets import describe_artifact
    from converters.targets.tensorrt.engine import sidecar
    from converters.targets.tensorrt.io_plan import ProfileShapes, onnx_io, onnx_metadata

    config = make_config(tiny_h5, tiny_dataset, tmp_path / "build", targets=("onnx",),
                         quantizations=(Quantization.FP32,))
    config = dataclasses.replace(config, dataset=DatasetConfig(
        tiny_dataset, calibration_size=8, validation_size=12, labels=LABELS))
    build.convert(config, ["test"])
    source = tmp_path / "build" / "tiny" / "onnx" / "tiny_fp32.onnx"
    io = onnx_io(source)
    built = {"tensorrt_version": "10.8.0", "gpu": "GPU name", "strongly_typed": False}
    profile = {io[0][0].name: ProfileShapes((1, 16, 16, 3), (1, 16, 16, 3), (1, 16, 16, 3))}
    facts = sidecar(built, "fp16", io, profile, 1 << 30, onnx_metadata(source))
    assert facts["labels"] == list(LABELS) and len(facts["labelled_outputs"]) == 1
    engine = tmp_path / "engines" / "tiny_fp16.engine"
    engine.parent.mkdir()
    engine.write_bytes(b"")  # stands for the engine file; only its sidecar is read
    engine.with_suffix(".json").write_text(json.dumps(facts))
    described = describe_artifact(engine)
    assert described is not None and described.class_names == LABELS
    preprocessing = facts["preprocessing"]
    assert described.normalization == (tuple(preprocessing["mean"]), tuple(preprocessing["std"]))


def test_preprocessing_of_inverts_the_fixed_ranges() -> None:
    for mode, (mean, std) in FIXED.items():
        assert preprocessing_of(mean, std)["mode"] == mode
    assert preprocessing_of((120.0, 110.0, 100.0), (60.0, 50.0, 40.0)) == {
        "mode": "mean-std", "mean": [120.0, 110.0, 100.0], "std": [60.0, 50.0, 40.0]}


def test_labels_that_do_not_fit_the_model_stop_the_build(tiny_h5: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "flat"
    write_images(dataset, {".": 12})
    labels = tmp_path / "two.txt"
    labels.write_text("one\ntwo\n")
    result = run_invoke("convert", "--model", str(tiny_h5), "--labels", str(labels), "--quant",
                        "fp32", *quick_flags(dataset, tmp_path / "out"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--labels names 2 classes but no output of model" in result.stderr
    assert "(their last sizes: 3)" in result.stderr
    assert not list((tmp_path / "out").rglob("*.tflite"))
