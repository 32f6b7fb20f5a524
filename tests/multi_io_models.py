"""Small models trained a few epochs on generated data, shared by the tests of models with
several inputs and outputs and non-image inputs (``test_multi_io.py``,
``test_infer_arrays.py``, ``test_tensorrt.py``): a two-head detector, a two-input model (image
+ vector, optionally with a second output) and an audio-shaped model (256 × 1 waveform), and the
conversion helper these tests share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.conftest import run_invoke

EPOCHS = 8


def train(model: Any, inputs: Any, targets: Any, losses: Any) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(0.01), loss=losses)
    model.fit(inputs, targets, epochs=EPOCHS, batch_size=32, verbose=0)


def convert(model: Path, dataset: Path, out: Path, *extra: str, succeeds: bool = True
            ) -> dict[str, Any]:
    """``invoke convert`` of a small multi-I/O model (fp32 and int8, float I/O): its report
    (``succeeds=False``: a build some of whose stages cannot run here, e.g. TensorRT engines)."""
    result = run_invoke("convert", "--model", str(model), "--dataset", str(dataset), "--out",
                        str(out), "--calibration-size", "32", "--validation-size", "48",
                        "--latency-runs", "2", "--threads", "1", "--runner", "local",
                        "--quant", "fp32,int8", "--io-dtype", "float32", *extra)
    assert (result.returncode == 0) == succeeds, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    report: dict[str, Any] = json.loads((out / model_name(model) / "report.json").read_text())
    return report


def model_name(model: Path) -> str:
    return model.name if model.is_dir() else model.stem


def rectangle_maps(count: int, size: int, seed: int) -> np.ndarray:
    """Class maps (count × size × size) holding a rectangle of class 1 and one of class 2 on
    class 0, at seeded places and sizes (segmentation tests draw their images from them)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((count, size, size), np.int64)
    for n in range(count):
        for label in (1, 2):
            top, left = rng.integers(0, size * 5 // 8, 2)
            height, width = rng.integers(size * 3 // 16, size * 7 // 16, 2)
            labels[n, top:top + height, left:left + width] = label
    return labels


# --- detector: class logits (anchors × classes) and boxes (anchors × 4) --------------------

def detection_samples(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """16×16 images, 2×2 anchors (8×8 cells): each cell is empty or holds a dim (class 1) or a
    bright (class 2) square; the box is its centre and size in the cell, in 0..1."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.1, 0.03, (count, 16, 16, 3)).astype(np.float32)
    classes = rng.integers(0, 3, (count, 4))
    boxes = np.zeros((count, 4, 4), np.float32)
    for n in range(count):
        for anchor in range(4):
            if classes[n, anchor] == 0:
                continue
            size = int(rng.integers(3, 7))
            top, left = (int(v) for v in rng.integers(0, 8 - size + 1, 2))
            row, col = 8 * (anchor // 2) + top, 8 * (anchor % 2) + left
            images[n, row:row + size, col:col + size] = 0.5 if classes[n, anchor] == 1 else 0.95
            boxes[n, anchor] = [(top + size / 2) / 8, (left + size / 2) / 8, size / 8, size / 8]
    return np.clip(images, 0, 1), classes, boxes


def detector_model() -> Any:
    """Input ``image`` (16, 16, 3), outputs ``class_logits`` (4, 3) and ``boxes`` (4, 4),
    trained; the box head ends in a LeakyReLU, no Edge TPU op (an ``--edgetpu-split`` tail)."""
    import keras

    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(4)(x)  # 2×2 cells
    logits = keras.layers.Reshape((4, 3), name="class_logits")(keras.layers.Conv2D(3, 1)(x))
    boxes = keras.layers.Reshape((4, 4), name="boxes")(
        keras.layers.LeakyReLU(negative_slope=0.1)(keras.layers.Conv2D(4, 1)(x)))
    model = keras.Model(inputs, [logits, boxes])
    images, classes, targets = detection_samples(768, seed=0)
    train(model, images, [classes, targets],
          [keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"])
    return model


# --- two inputs: image + vector ------------------------------------------------------------

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


def two_input_model(channel_means: bool = False) -> Any:
    """Inputs ``image`` (8, 8, 3) and ``vector`` (4,), output ``label`` (3 logits), trained;
    with ``channel_means`` a second output ``channel_means`` (3 × 1: the image's mean per
    channel, a regression head)."""
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
    return model


def fusion_model(root: Path, channel_means: bool = False) -> tuple[Path, Path]:
    """:func:`two_input_model` saved in ``root``, and a folder of one .npz per sample (both
    inputs and the label)."""
    name = "fusion2" if channel_means else "fusion"
    two_input_model(channel_means).save(root / f"{name}.keras")
    folder = root / "samples"
    folder.mkdir()
    images, vectors, labels = two_input_samples(80, seed=1)
    for index in range(len(labels)):
        np.savez(folder / f"{index:03d}.npz", vector=vectors[index], image=images[index],
                 label=labels[index])
    return root / f"{name}.keras", folder


# --- non-image: audio-shaped (samples × 1) input -----------------------------------------------

def audio_samples(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """256-sample clips: a low (class 0) or a high (class 1) tone in noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    time = np.arange(256) / 256
    frequency = np.where(labels == 0, 4, 32)[:, None] * rng.uniform(0.9, 1.1, (count, 1))
    phase = rng.uniform(0, 2 * np.pi, (count, 1))
    clips = np.sin(2 * np.pi * frequency * time + phase) + rng.normal(0, 0.3, (count, 256))
    return clips[..., None].astype(np.float32), labels


def audio_model() -> Any:
    """Input ``waveform`` (256, 1), output ``tone`` (2 class probabilities), trained."""
    import keras

    keras.utils.set_random_seed(4)
    inputs = keras.Input((256, 1), name="waveform")
    x = keras.layers.Conv1D(8, 9, strides=2, activation="relu")(inputs)
    x = keras.layers.Conv1D(8, 9, strides=2, activation="relu")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="tone")(
        keras.layers.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, outputs)
    clips, labels = audio_samples(512, seed=0)
    train(model, clips, labels, "sparse_categorical_crossentropy")
    return model
