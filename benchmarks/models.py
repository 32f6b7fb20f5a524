"""Models the benchmarks build: keras.applications architectures, untrained and seeded, saved once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def saved_application(folder: Path, file_name: str, architecture: str, **arguments: Any) -> Path:
    """``keras.applications.<architecture>(weights=None, **arguments)`` with the seed 0 (the same
    weights in every run), saved as ``folder / file_name``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(0)
    path = folder / file_name
    getattr(keras.applications, architecture)(weights=None, **arguments).save(path)
    return path


def mobilenet(size: int, alpha: float, folder: Path) -> Path:
    """MobileNetV2 at ``size`` x ``size`` and width ``alpha``, 1000 classes."""
    return saved_application(folder, f"mobilenetv2_{size}_{alpha}.keras", "MobileNetV2",
                             input_shape=(size, size, 3), alpha=alpha)


def mobilenet_96(folder: Path) -> Path:
    """MobileNetV2 alpha 0.35 at 96x96 with 4 classes (the bundled dataset's)."""
    return saved_application(folder, "mobilenetv2_96.keras", "MobileNetV2",
                             input_shape=(96, 96, 3), alpha=0.35, classes=4)


def efficientnet_64(folder: Path) -> Path:
    """EfficientNetB0 at 64x64 with 4 classes."""
    return saved_application(folder, "efficientnetb0_64.keras", "EfficientNetB0",
                             input_shape=(64, 64, 3), classes=4)
