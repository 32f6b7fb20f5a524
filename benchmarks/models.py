"""Models the benchmarks build: keras.applications architectures, untrained and seeded, saved once."""

from __future__ import annotations

import os
from pathlib import Path


def mobilenet_96(folder: Path) -> Path:
    """MobileNetV2 alpha 0.35 at 96x96 with 4 classes (the bundled dataset's), weights=None."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(0)
    path = folder / "mobilenetv2_96.keras"
    keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None,
                                   classes=4).save(path)
    return path


def efficientnet_64(folder: Path) -> Path:
    """EfficientNetB0 at 64x64 with 4 classes, weights=None."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(0)
    path = folder / "efficientnetb0_64.keras"
    keras.applications.EfficientNetB0(input_shape=(64, 64, 3), weights=None, classes=4).save(path)
    return path
