"""Pixels in, model inputs out: the one image pipeline every artifact is validated and run with.

Needs only numpy and Pillow and imports nothing else of this package, so deployment bundles
ship this very file beside their ``run.py``: a device preprocesses exactly as the build did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def read_pixels(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """One image as uint8 HxWxC, resized (bilinear) and converted to ``channels``.

    Raises ValueError for a channel count images cannot be read as, OSError for a bad file.
    """
    from PIL import Image

    if channels not in CHANNEL_MODES:
        raise ValueError(f"the model expects {channels} input channels; images can be read as "
                         "1, 3 or 4 channels")
    with Image.open(path) as image:
        image.seek(0)  # first frame of an animated GIF/WebP
        converted = image.convert(CHANNEL_MODES[channels])
        resized = converted.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(resized, dtype=np.uint8)
    return array.reshape(height, width, channels)


def normalize(pixels: np.ndarray, mode: str, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None) -> np.ndarray:
    """uint8 pixels (…×C) → float32 model inputs: ``0..1``, ``-1..1``, ``0..255`` or
    ``mean-std`` (per channel)."""
    values = pixels.astype(np.float32)
    if mode == "0..1":
        return values / np.float32(255.0)
    if mode == "-1..1":
        return values / np.float32(127.5) - np.float32(1.0)
    if mode == "0..255":
        return values
    if mode != "mean-std" or mean is None or std is None:
        raise ValueError(f"unknown preprocessing '{mode}' (or mean-std without mean and std)")
    if len(mean) != pixels.shape[-1]:
        raise ValueError(f"--mean/--std give {len(mean)} values but the model has "
                         f"{pixels.shape[-1]} input channels: give one value per channel")
    return (values - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
