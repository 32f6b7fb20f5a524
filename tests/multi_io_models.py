"""Builders of small trained Keras models with several named inputs and outputs, and the
conversion helper their tests share (tests/test_multi_io.py, tests/test_tensorrt.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import run_invoke

EPOCHS = 8


def convert(model: Path, dataset: Path, out: Path, *extra: str) -> dict[str, Any]:
    result = run_invoke("convert", "--model", str(model), "--dataset", str(dataset), "--out",
                        str(out), "--calibration-size", "32", "--validation-size", "48",
                        "--latency-runs", "2", "--threads", "1", "--runner", "local",
                        "--quant", "fp32,int8", "--io-dtype", "float32", *extra)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report: dict[str, Any] = json.loads((out / model_name(model) / "report.json").read_text())
    return report


def model_name(model: Path) -> str:
    return model.name if model.is_dir() else model.stem


def train(model: Any, inputs: Any, targets: Any, losses: Any) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=losses)
    model.fit(inputs, targets, epochs=EPOCHS, batch_size=32, verbose=0)


def two_input_samples(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class = brightest image channel, shifted by one when the vector's first value is high."""
    rng = np.random.default_rng(seed)
    channel = rng.integers(0, 3, count)
    shift = rng.integers(0, 2, count)
    images = rng.uniform(0, 0.3, (count, 8, 8, 3)).astype(np.float32)
    images[np.arange(count), :, :, channel] += 0.6
    vectors = rng.normal(0, 0.2, (count, 4)).astype(np.float32)
    vectors[:, 0] += shift
    return images, vectors, (channel + shift) % 3


def fusion_model(root: Path, channel_means: bool = False) -> tuple[Path, Path]:
    """An image (8×8×3) + vector (4,) model trained to the ``label`` of two_input_samples and,
    with ``channel_means``, a second output ``channel_means`` (3 × 1: the image's mean per
    channel, a regression head); and a folder of one .npz per sample (both inputs and the label).
    """
    import keras

    keras.utils.set_random_seed(3)
    image = keras.Input((8, 8, 3), name="image")
    vector = keras.Input((4,), name="vector")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 1, activation="relu")(image))
    x = keras.layers.Concatenate()([x, vector])
    x = keras.layers.Dense(16, activation="relu")(x)
    outputs = [keras.layers.Dense(3, name="label")(x)]
    images, vectors, labels = two_input_samples(1024, seed=0)
    targets: list[np.ndarray] = [labels]
    losses: list[Any] = [keras.losses.SparseCategoricalCrossentropy(from_logits=True)]
    if channel_means:
        means = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(image))
        outputs.append(keras.layers.Reshape((3, 1), name="channel_means")(means))
        targets.append(images.mean(axis=(1, 2))[..., None])
        losses.append("mse")
    model = keras.Model([image, vector], outputs if channel_means else outputs[0])
    train(model, [images, vectors], targets if channel_means else labels,
          losses if channel_means else losses[0])
    name = "fusion2" if channel_means else "fusion"
    model.save(root / f"{name}.keras")
    folder = root / "samples"
    folder.mkdir()
    images, vectors, labels = two_input_samples(80, seed=1)
    for index in range(len(labels)):
        np.savez(folder / f"{index:03d}.npz", vector=vectors[index], image=images[index],
                 label=labels[index])
    return root / f"{name}.keras", folder
