"""--edgetpu-split end to end on a model built to need it: a small trained classifier whose
LeakyReLU (not an Edge TPU op: "Operation not supported" in real compiles) sends its end to the
CPU. The head maps entirely, head then tail equals the whole int8 model, infer runs the pair."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.fsutil import read_json
from converters.targets.edgetpu import check as edgetpu_check
from tests.conftest import quick_flags, run_invoke, write_images

CLASSES = {"dark": 12, "mid": 12, "light": 12}


def trained_classifier(dataset: Path, path: Path) -> Path:
    """Conv, Conv, LeakyReLU, pooling, softmax: trained a few epochs on the class colours."""
    import keras
    from PIL import Image

    keras.utils.set_random_seed(0)
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        for file in sorted((dataset / name).iterdir()):
            images.append(np.asarray(Image.open(file), np.float32) / 255.0)
            labels.append(label)
    layers = keras.layers
    inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, activation="relu")(inputs)
    x = layers.LeakyReLU(negative_slope=0.1)(layers.Conv2D(8, 3)(x))
    outputs = layers.Dense(len(CLASSES), activation="softmax")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(np.stack(images), np.array(labels), epochs=8, verbose=0)
    model.save(path)
    return path


@pytest.fixture(scope="module")
def split_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("split")
    write_images(folder / "dataset", CLASSES)
    model = trained_classifier(folder / "dataset", folder / "leaky.keras")
    out = folder / "build"
    result = run_invoke("convert", "--model", str(model), "--target", "edgetpu",
                        "--edgetpu-split", *quick_flags(folder / "dataset", out))
    return out / "leaky", result


def test_convert_writes_a_validated_head_and_tail(split_build: tuple[Path, Any]) -> None:
    build_dir, result = split_build
    # No compiler here: the build says so and exits non-zero, but the pair is written.
    assert result.returncode != 0 and "the Edge TPU compile did not run" in result.stderr
    record = read_json(build_dir / "edgetpu" / "split" / "leaky_int8_split.json")
    assert record["split"] and record["head_predicted_tpu_fraction"] == 1.0
    assert "LEAKY_RELU" in record["tail_operators"]
    assert record["validation"]["bit_exact"] and record["validation"]["samples"] == 8
    precheck = read_json(build_dir / "edgetpu" / "leaky_int8_precheck.json")
    assert record["head_ops"] == precheck["tpu_ops"] and record["tail_ops"] == precheck["cpu_ops"]
    head = edgetpu_check.check_file(build_dir / "edgetpu" / "split" / record["head"])
    assert head["cpu_op_reasons"] == [] and head["edgetpu_subgraphs"] == 1
    report = read_json(build_dir / "report.json")
    assert report["edgetpu"]["split"]["tail"] == "edgetpu/split/leaky_int8_tail.tflite"
    markdown = (build_dir / "report.md").read_text()
    assert "Edge TPU split: head edgetpu/split/leaky_int8_head.tflite" in markdown


def test_head_and_tail_carry_the_metadata_of_their_ends(split_build: tuple[Path, Any]) -> None:
    """The head keeps the image input's metadata, the tail the labelled output's: each with its
    own tensors' entries and version."""
    from converters.targets.tflite import metadata

    build_dir, _ = split_build
    folder = build_dir / "edgetpu" / "split"
    whole = (build_dir / "edgetpu" / "leaky_int8.tflite").read_bytes()
    head, tail = ((folder / f"leaky_int8_{part}.tflite").read_bytes() for part in ("head", "tail"))
    described = {name: metadata.read(data) for name, data in
                 (("whole", whole), ("head", head), ("tail", tail))}
    assert all(found is not None for found in described.values())
    assert described["tail"].labels == tuple(sorted(CLASSES)) and described["head"].labels == ()
    assert described["head"].normalization == described["whole"].normalization
    assert "the Edge TPU head of a split" in described["head"].description
    assert "the CPU tail of a split" in described["tail"].description
    assert len({found.version for found in described.values()}) == 3  # each its own content
    for data in (head, tail):  # one entry per tensor of the piece
        buffer, files = metadata.packed(data)
        schema = metadata.schema.ModelMetadataT.InitFromPackedBuf(bytearray(buffer), 0)
        graph = metadata.tflite_inspect.parse(data)
        subgraph = schema.subgraphMetadata[0]
        assert len(subgraph.inputTensorMetadata) == len(graph.inputs)
        assert len(subgraph.outputTensorMetadata) == len(graph.outputs)
    assert set(metadata.packed(tail)[1]) == {metadata.LABELS_FILE}
    assert metadata.packed(head)[1] == {}


def test_infer_runs_the_pair_like_the_whole_model(split_build: tuple[Path, Any]) -> None:
    build_dir, _ = split_build
    image = next((build_dir.parent.parent / "dataset" / "light").iterdir())
    pair = run_invoke("infer", "--artifact",
                      str(build_dir / "edgetpu" / "split" / "leaky_int8_split.json"),
                      "--image", str(image), "--top-k", "3", check=True)
    whole = run_invoke("infer", "--artifact", str(build_dir / "edgetpu" / "leaky_int8.tflite"),
                       "--image", str(image), "--top-k", "3", check=True)
    assert pair.stdout == whole.stdout and pair.stdout.startswith("light\t")


def test_edgetpu_check_splits_a_given_tflite(split_build: tuple[Path, Any], tmp_path: Path) -> None:
    build_dir, _ = split_build
    model = tmp_path / "leaky_int8.tflite"
    shutil.copy(build_dir / "edgetpu" / "leaky_int8.tflite", model)
    result = run_invoke("edgetpu-check", "--model", str(model), "--edgetpu-split")
    assert result.returncode == 0, result.stderr
    assert "bit-exact" in result.stdout and "LEAKY_RELU" in result.stdout
    assert (tmp_path / "leaky_int8_head.tflite").exists()
    assert (tmp_path / "leaky_int8_tail.tflite").exists()
    head = run_invoke("edgetpu-check", "--model", str(tmp_path / "leaky_int8_head.tflite"),
                      "--edgetpu-split")
    assert head.returncode == 0 and "nothing to split" in head.stdout


def test_edgetpu_split_needs_the_edgetpu_target(tmp_path: Path) -> None:
    from converters.config import ConvertConfig, DatasetConfig
    from converters.errors import ConfigError
    from converters.targets import check_config
    from converters.targets.edgetpu.settings import EdgeTpuConfig

    config = ConvertConfig(models=(tmp_path / "m.keras",), dataset=DatasetConfig(tmp_path),
                           targets=("tflite",), sections={"edgetpu": EdgeTpuConfig(split=True)})
    with pytest.raises(ConfigError, match="--edgetpu-split splits the Edge TPU model"):
        check_config(config)
