"""Recurrent models to TFLite: small models trained a few epochs (an LSTM text classifier, a GRU
with Masking on padded sequences, a Bidirectional LSTM under a SimpleRNN with Masking) convert to
fp32 that matches Keras and an int8 that agrees with it, and the report says how the loop was
converted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import run_invoke

STEPS, VOCABULARY, FEATURES, CLASSES = 16, 20, 3, 3


def token_samples(count: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Token sequences: most tokens of class c come from its own six ids (1 + 6c ... 6 + 6c)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    own = 1 + 6 * labels[:, None] + rng.integers(0, 6, (count, STEPS))
    noise = rng.integers(1, VOCABULARY, (count, STEPS))
    tokens = np.where(rng.random((count, STEPS)) < 0.7, own, noise).astype(np.int32)
    return {"tokens": tokens}, labels


def padded_samples(count: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Sequences of 5..16 steps padded with zeros at the end; the class is the feature that is
    largest on average over the real steps (the padding would hide it if it were counted)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    sequences = rng.normal(0, 1, (count, STEPS, FEATURES)).astype(np.float32)
    sequences[np.arange(count), :, labels] += 1.2
    lengths = rng.integers(5, STEPS + 1, count)
    sequences[np.arange(STEPS)[None, :] >= lengths[:, None]] = 0.0
    return {"sequence": sequences}, labels


def lstm_text_classifier() -> Any:
    import keras

    tokens = keras.Input((STEPS,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCABULARY, 8)(tokens)
    x = keras.layers.LSTM(16)(x)
    return keras.Model(tokens, keras.layers.Dense(CLASSES, activation="softmax", name="label")(x))


def masked_gru() -> Any:
    import keras

    sequence = keras.Input((STEPS, FEATURES), name="sequence")
    x = keras.layers.Masking(0.0)(sequence)
    x = keras.layers.GRU(12)(x)
    return keras.Model(sequence, keras.layers.Dense(CLASSES, activation="softmax", name="label")(x))


def bidirectional() -> Any:
    import keras

    sequence = keras.Input((STEPS, FEATURES), name="sequence")
    x = keras.layers.Masking(0.0)(sequence)
    x = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True))(x)
    x = keras.layers.SimpleRNN(8)(x)
    return keras.Model(sequence, keras.layers.Dense(CLASSES, activation="softmax", name="label")(x))


Samples = Callable[[int, int], tuple[dict[str, np.ndarray], np.ndarray]]
MODELS: dict[str, tuple[Callable[[], Any], Samples]] = {
    "lstm_text": (lstm_text_classifier, token_samples),
    "masked_gru": (masked_gru, padded_samples),
    "bidirectional": (bidirectional, padded_samples),
}


def trained(name: str, root: Path) -> tuple[Path, Path, float]:
    """The model trained a few epochs, saved; its held-out .npz and Keras' accuracy on it."""
    import keras

    build, samples = MODELS[name]
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    inputs, labels = samples(384, 0)
    model.fit(inputs, labels, epochs=6, batch_size=32, verbose=0)
    test, test_labels = samples(96, 1)
    accuracy = float(np.mean(model.predict(test, verbose=0).argmax(-1) == test_labels))
    model.save(root / f"{name}.keras")
    np.savez(root / f"{name}.npz", **test, labels=test_labels)
    return root / f"{name}.keras", root / f"{name}.npz", accuracy


@pytest.mark.parametrize("name", list(MODELS))
def test_recurrent_model_converts_and_matches_keras(name: str, tmp_path: Path) -> None:
    model, data, keras_accuracy = trained(name, tmp_path)
    assert keras_accuracy > 0.85  # the model has learnt its task
    result = run_invoke("convert", "--model", str(model), "--dataset", str(data), "--out",
                        str(tmp_path / "out"), "--runner", "local", "--quant", "fp32,int8",
                        "--io-dtype", "float32", "--calibration-size", "32",
                        "--validation-size", "64", "--latency-runs", "2", "--threads", "1",
                        # Masking's comparison (NOT_EQUAL) cannot be int8, and the unrolled
                        # LSTM's int8 keeps one SPLIT in float in some conversions
                        "--allow-float-fallback")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / name / "report.json").read_text())
    artifacts = {a["variant"]: a for a in report["artifacts"] if a["target"] == "tflite"}
    fp32, int8 = artifacts["fp32"], artifacts["int8"]
    # Softmax outputs: at most 1, so an absolute error under 1e-4 is under 1e-4 relative.
    assert fp32["metrics"]["max_abs_error"] < 1e-4
    assert fp32["metrics"]["top1_agreement"] == 1.0
    assert "as a WHILE loop" in fp32["recurrence"] and "batch 1" in fp32["recurrence"]
    assert fp32["io"]["input"]["shape"][0] == 1
    assert "unrolled" in int8["recurrence"]
    assert int8["metrics"]["top1_agreement"] > 0.9
    assert int8["accuracy_drop"] < 0.05
    if int8["accuracy_drop"] > 0.01:  # the automatic int8-mixed cannot search a loop
        assert "a loop" in {n["path"]: n["reason"] for n in report["not_needed"]}[
            f"tflite/{name}_int8-mixed.tflite"]
    markdown = (tmp_path / "out" / name / "report.md").read_text()
    assert f"`tflite/{name}_fp32.tflite`: recurrent layers as a WHILE loop" in markdown
