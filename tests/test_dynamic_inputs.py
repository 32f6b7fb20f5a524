"""A model whose input has no static size takes the size of an array dataset's samples (and
says so) instead of requiring --input-shape; a dataset whose samples do not fit is refused
naming both shapes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from converters.errors import ModelError
from converters.inputs.model import load
from tests.conftest import quick_flags, run_invoke
from tests.test_cli import assert_user_error

STEPS, FEATURES = 40, 3


def sequences(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences of 3 features; class 1's second feature rises over time, class 0's falls."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    ramp = np.linspace(-1.0, 1.0, STEPS, dtype=np.float32)
    values = rng.normal(0.0, 0.3, (count, STEPS, FEATURES)).astype(np.float32)
    values[:, :, 1] += np.where(labels[:, None] == 1, ramp, -ramp)
    return values, labels


@pytest.fixture(scope="module")
def any_length(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Conv1D classifier over sequences of any length (input (None, None, 3)), trained 10
    epochs; and a .npz of 40-step sequences with labels."""
    import keras

    root = tmp_path_factory.mktemp("any_length")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, FEATURES), name="series")
    x = keras.layers.Conv1D(8, 5, activation="relu")(inputs)
    x = keras.layers.Conv1D(8, 5, activation="relu", strides=2)(x)
    scores = keras.layers.Dense(2, activation="softmax", name="scores")(
        keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, scores)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    train, labels = sequences(400, seed=1)
    history = model.fit(train, labels, epochs=10, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.9
    model.save(root / "any_length.keras")
    data, data_labels = sequences(60, seed=2)
    np.savez(root / "series.npz", series=data, labels=data_labels)
    return root / "any_length.keras", root / "series.npz"


def test_the_input_takes_the_size_of_the_dataset_samples(any_length: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    model, data = any_length
    out = tmp_path / "out"
    result = run_invoke("convert", "--model", str(model), *quick_flags(data, out),
                        "--quant", "fp32,int8", "--io-dtype", "float32")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ("input 'series': no static size in the model, the size of the dataset's samples "
            "is used") in result.stdout
    report = json.loads((out / "any_length" / "report.json").read_text())
    assert report["model"]["input_shape"] == [STEPS, FEATURES]
    assert report["model"]["input_shapes_from_dataset"] == ["series"]
    assert "sizes of series from the dataset's samples" in (out / "any_length" / "report.md").read_text()
    assert report["reference"]["accuracy"] > 0.9
    rows = {row["variant"]: row for row in report["artifacts"] if row["target"] == "tflite"}
    assert rows["fp32"]["metrics"]["top1_agreement"] == 1.0
    assert rows["int8"]["metrics"]["accuracy"] > 0.85


def test_a_dataset_whose_samples_do_not_fit_is_refused_naming_both(
        any_length: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = any_length
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, series=np.zeros((20, STEPS, FEATURES + 1), np.float32))
    out = tmp_path / "out"
    result = run_invoke("convert", "--model", str(model), *quick_flags(wrong, out), "--quant", "fp32")
    assert_user_error(result, "input 'series' has no static size (None, None, 3)",
                      "the dataset's array for it has per-sample shape (40, 4), which does not fit",
                      "--input-shape")
    assert not (out / "any_length" / "tflite").exists()


def test_input_shape_wins_over_the_data_and_a_single_array_fits_by_position(
        any_length: tuple[Path, Path]) -> None:
    model, _ = any_length
    from_data = load(model, data_shapes=(("x", (24, FEATURES)),))  # one input, one array
    assert from_data.inputs[0].shape == (24, FEATURES)
    assert from_data.shapes_from_data == ("series",)
    given = load(model, input_shape=(16, FEATURES), data_shapes=(("series", (24, FEATURES)),))
    assert given.inputs[0].shape == (16, FEATURES) and given.shapes_from_data == ()
    with pytest.raises(ModelError, match="no static size"):
        load(model, data_shapes=(("series", (24,)),))
