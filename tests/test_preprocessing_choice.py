"""--preprocessing auto, the near-chance guard and the bundled sample's pairing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converters.config import Preprocessing, PreprocessingMode
from converters.inputs.preprocessing_choice import choose, layer_preference
from tests.conftest import ROOT, quick_flags, run_invoke, write_images
from tests.test_cli import assert_user_error


@pytest.fixture(scope="module")
def rescaling_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A classifier with its own Rescaling(1/255), trained 30 epochs on raw 0..255 pixels of
    images it is then validated on other draws of; and that labelled dataset."""
    import keras

    root = tmp_path_factory.mktemp("rescaling")
    write_images(root / "train", {"a": 30, "b": 30, "c": 30}, seed=1)
    write_images(root / "data", {"a": 10, "b": 10, "c": 10}, seed=2)
    from PIL import Image

    paths = sorted((root / "train").glob("*/*.png"))
    images = np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in paths])
    labels = np.asarray(["abc".index(p.parent.name) for p in paths])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(images, labels, epochs=30, batch_size=16, verbose=0)
    assert history.history["accuracy"][-1] > 0.95
    path = root / "scaled.keras"
    model.save(path)
    return path, root / "data"


def test_auto_picks_what_a_rescaling_model_expects_and_says_why(
        tmp_path: Path, rescaling_model: tuple[Path, Path]) -> None:
    model, data = rescaling_model
    out = tmp_path / "out"
    result = run_invoke("convert", "--model", str(model), *quick_flags(data, out), "--quant", "fp32")
    assert result.returncode == 0, result.stderr
    assert "preprocessing 0..255: Keras accuracy on" in result.stdout
    report = json.loads((out / "scaled" / "report.json").read_text())
    assert report["dataset"]["preprocessing"]["mode"] == "0..255"
    choice = report["dataset"]["preprocessing_choice"]
    assert choice["requested"] == "auto" and choice["layer_suggests"] == "0..255"
    assert choice["scores"]["0..255"] > 0.9 > choice["scores"]["0..1"]
    assert "first layer Rescaling" in choice["reason"]
    assert report["reference"]["accuracy"] > 0.9 and report["warnings"] == []
    assert report["recommendation"]["smallest"] == "tflite/scaled_fp32.tflite"


def test_explicit_wrong_preprocessing_warns_and_near_chance_withholds_the_recommendation(
        tmp_path: Path, rescaling_model: tuple[Path, Path]) -> None:
    model, data = rescaling_model
    out = tmp_path / "out"
    result = run_invoke("convert", "--model", str(model), *quick_flags(data, out), "--quant", "fp32",
                        "--preprocessing", "0..1")
    assert result.returncode == 0, result.stderr
    shown = result.stdout + result.stderr
    assert "--preprocessing 0..1 looks wrong for this model" in shown
    assert "No recommendation: the Keras reference itself is near chance accuracy" in shown
    report = json.loads((out / "scaled" / "report.json").read_text())
    assert report["dataset"]["preprocessing"]["mode"] == "0..1"  # an explicit choice wins
    assert report["recommendation"]["smallest"] is None
    assert any("near chance" in w and "class folders" in w for w in report["warnings"])
    assert "**Warning:**" in (out / "scaled" / "report.md").read_text()
    assert "near chance" in (out / "scaled" / "report.html").read_text()


def test_auto_scores_the_classification_output_of_a_two_output_model(tmp_path: Path) -> None:
    """A model whose first output is a linear 6-vector and whose second is the class scores,
    trained on -1..1 pixels with no Rescaling layer: only Keras accuracy under each candidate,
    measured on the class scores, can tell which range it wants."""
    import keras
    from PIL import Image

    write_images(tmp_path / "train", {"a": 30, "b": 30, "c": 30}, seed=1)
    write_images(tmp_path / "data", {"a": 10, "b": 10, "c": 10}, seed=2)
    paths = sorted((tmp_path / "train").glob("*/*.png"))
    images = np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in paths]) / 127.5 - 1
    labels = np.asarray(["abc".index(p.parent.name) for p in paths])
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    embedding = keras.layers.Dense(6, name="embedding")(x)
    scores = keras.layers.Dense(3, activation="softmax", name="scores")(x)
    model = keras.Model(inputs, [embedding, scores])
    model.compile(optimizer=keras.optimizers.Adam(0.05),
                  loss=["mse", "sparse_categorical_crossentropy"])
    colours = images.mean(axis=(1, 2))
    model.fit(images, [np.concatenate([colours, colours], axis=1), labels], epochs=30,
              batch_size=16, verbose=0)
    model.save(tmp_path / "two_heads.keras")
    out = tmp_path / "out"
    result = run_invoke("convert", "--model", str(tmp_path / "two_heads.keras"),
                        *quick_flags(tmp_path / "data", out), "--quant", "fp32")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((out / "two_heads" / "report.json").read_text())
    choice = report["dataset"]["preprocessing_choice"]
    assert choice["scores"] is not None, choice["reason"]
    assert choice["scores"]["-1..1"] > 0.9, choice
    assert max(choice["scores"]["0..1"], choice["scores"]["0..255"]) < 0.6, choice
    assert report["dataset"]["preprocessing"]["mode"] == "-1..1"
    assert "Keras accuracy on 8 labelled calibration images" in choice["reason"]
    assert report["reference"]["accuracy"] > 0.9
    [artifact] = report["artifacts"]  # two outputs of its own: generic metadata, and why
    assert artifact["metadata"]["written_for"].startswith("generic: MediaPipe's ObjectDetector")


@pytest.mark.parametrize("scale,offset,expected", [
    (1 / 255, 0.0, PreprocessingMode.RAW), (1 / 127.5, -1.0, PreprocessingMode.RAW),
    (2.0, -1.0, PreprocessingMode.UNIT), (1 / 60, -2.0, PreprocessingMode.RAW),  # mean 120, std 60
    (4.0, -2.0, PreprocessingMode.UNIT),  # a Normalization adapted on 0..1 images
])
def test_a_leading_layer_suggests_the_range_it_maps_to_unit_size(scale: float, offset: float,
                                                                  expected: PreprocessingMode) -> None:
    layer = {"layer": "l", "kind": "Rescaling", "scale": scale, "offset": offset}
    assert layer_preference(layer) is expected


def test_without_labels_the_layer_decides_else_0_to_1_is_assumed_and_said() -> None:
    auto = Preprocessing(PreprocessingMode.AUTO)
    layer = {"layer": "rescaling", "kind": "Rescaling", "scale": 1 / 255, "offset": 0.0}
    by_layer = choose(auto, layer, None, 0)
    assert by_layer.preprocessing.mode is PreprocessingMode.RAW and "Rescaling" in by_layer.reason
    assumed = choose(auto, None, None, 0)
    assert assumed.preprocessing.mode is PreprocessingMode.UNIT and "assumed 0..1" in assumed.reason
    tie = choose(auto, layer, {"0..1": 0.5, "-1..1": 0.51, "0..255": 0.5}, 9)
    assert tie.preprocessing.mode is PreprocessingMode.RAW  # scores tie: the layer decides
    mean_std = Preprocessing(PreprocessingMode.AUTO, (120.0,) * 3, (60.0,) * 3)
    best = choose(mean_std, None, {"0..1": 0.3, "-1..1": 0.3, "0..255": 0.4, "mean-std": 0.9}, 9)
    assert best.preprocessing == Preprocessing(PreprocessingMode.MEAN_STD, (120.0,) * 3, (60.0,) * 3)


def test_sample_model_and_sample_images_go_together(tmp_path: Path, tiny_h5: Path) -> None:
    from converters.inputs.sample import paired_with_sample

    sample = ROOT / "model" / "sample.h5"
    found = [sample, tiny_h5]  # what model/ holds when a user dropped a model in
    assert paired_with_sample(found, tmp_path, listed=False, dataset_given=True) == [tiny_h5]
    assert paired_with_sample([sample], ROOT / "dataset", listed=False, dataset_given=False) == [sample]
    assert paired_with_sample(found, ROOT / "dataset", listed=False, dataset_given=True) == found
    forgot = run_invoke("convert", "--model", str(tiny_h5), "--out", str(tmp_path / "out"))
    assert_user_error(forgot, f"no --dataset given for {tiny_h5}", "--dataset DIR")
    assert not (tmp_path / "out").exists()
