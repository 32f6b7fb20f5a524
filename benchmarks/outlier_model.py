"""A small classifier built so that plain int8 loses accuracy and mixed precision recovers it.

Four Gaussian classes in 16 dimensions feed ``hidden`` (Dense 64, ReLU), ``wide`` (Dense 32,
linear) and ``head`` (Dense 4, softmax), trained a few epochs. Afterwards one output channel of
``wide`` is turned into an outlier: its weights are scaled up ``OUTLIER_SCALE`` times and the
head ignores it (zero weights), so the float model keeps its accuracy while ``wide``'s output
tensor spans a range thousands of times larger than its informative channels. A per-tensor
int8 scale for that tensor rounds the informative channels to a few levels: plain int8 loses
far more than 1-2 % accuracy; keeping ``wide`` and ``head`` in float restores it. This is the
activation-outlier pattern of real models (one channel with a huge dynamic range).

Deterministic for a seed (data, weights, training on one thread with op determinism).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FEATURES = 16
CLASSES = 4
OUTLIER_SCALE = 3000.0


@dataclass(frozen=True)
class OutlierData:
    """Train, calibration and validation splits of the generated classes (float32, int64)."""

    train_x: np.ndarray
    train_y: np.ndarray
    calibration_x: np.ndarray
    validation_x: np.ndarray
    validation_y: np.ndarray


def generate(seed: int = 0, train: int = 2000, calibration: int = 100,
             validation: int = 400) -> OutlierData:
    """Four overlapping Gaussian blobs: centres drawn N(0, 1) per feature, points N(centre, 1)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.0, (CLASSES, FEATURES)).astype(np.float32)

    def draw(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, CLASSES, count)
        points = centres[labels] + rng.normal(0.0, 1.0, (count, FEATURES)).astype(np.float32)
        return points.astype(np.float32), labels.astype(np.int64)

    train_x, train_y = draw(train)
    calibration_x, _ = draw(calibration)
    validation_x, validation_y = draw(validation)
    return OutlierData(train_x, train_y, calibration_x, validation_x, validation_y)


def build(data: OutlierData, seed: int = 0, epochs: int = 8) -> Any:
    """The trained Keras model with the outlier channel injected (see the module docstring)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    inputs = keras.Input((FEATURES,), name="features")
    x = keras.layers.Dense(64, activation="relu", name="hidden")(inputs)
    x = keras.layers.Dense(32, name="wide")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="head")(x)
    model = keras.Model(inputs, outputs, name="outlier_classifier")
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(data.train_x, data.train_y, epochs=epochs, batch_size=64, shuffle=True, verbose=0)
    inject_outlier(model)
    return model


def inject_outlier(model: Any, channel: int = 0) -> None:
    """Scale ``wide``'s ``channel`` by OUTLIER_SCALE and zero the head's weights on it."""
    wide = model.get_layer("wide")
    kernel, bias = (np.array(w) for w in wide.get_weights())
    kernel[:, channel] *= OUTLIER_SCALE
    bias[channel] *= OUTLIER_SCALE
    wide.set_weights([kernel, bias])
    head = model.get_layer("head")
    head_kernel, head_bias = (np.array(w) for w in head.get_weights())
    head_kernel[channel, :] = 0.0
    head.set_weights([head_kernel, head_bias])


def to_tflite_fp32(model: Any, workdir: str) -> bytes:
    """fp32 flatbuffer through a SavedModel (``model.export`` then ``from_saved_model``: the
    project's route until session 7; it now freezes the serving function, the same model,
    benchmarks/frozen_vs_saved_model.out.md)."""
    import tensorflow as tf

    model.export(workdir, verbose=False)
    flatbuffer: bytes = tf.lite.TFLiteConverter.from_saved_model(workdir).convert()
    return flatbuffer
