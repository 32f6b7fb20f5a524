"""Pixels in, model inputs out: the one image pipeline every artifact is validated and run with.

Needs only numpy and Pillow and imports nothing else of this package, so deployment bundles
ship this very file beside their ``run.py``: a device preprocesses exactly as the build did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

CHANNEL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
# Pillow's modes for 16-bit greyscale (PNG, TIFF, PGM). "I" is 32-bit integer; Pillow uses it
# for 16-bit data too, so it is read as 16-bit when its values fit.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def read_pixels(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """One image as uint8 HxWxC, resized (bilinear) and converted to ``channels``.

    Raises ValueError for a channel count images cannot be read as, OSError for a bad file.
    """
    from PIL import Image

    if channels not in CHANNEL_MODES:
        raise ValueError(f"the model expects {channels} input channels; images can be read as "
                         "1, 3 or 4 channels")
    try:
        opened = Image.open(path)
    except Image.DecompressionBombError as error:
        raise ValueError(f"{error} Pillow refuses it as a possible decompression bomb; "
                         "downscale the image first") from None
    with opened as image:
        image.seek(0)  # first frame of an animated GIF/WebP
        converted = eight_bit(image).convert(CHANNEL_MODES[channels])
        resized = converted.resize((width, height), Image.Resampling.BILINEAR)
        array = np.asarray(resized, dtype=np.uint8)
    return array.reshape(height, width, channels)


def eight_bit(image: Any) -> Any:
    """``image`` with 8-bit channels: 16-bit greyscale is scaled (65535 → 255), not clipped.

    Pillow's own ``convert`` clips 16-bit values at 255, which turns most such images white.
    A float image ("F") has no defined range and is refused.
    """
    from PIL import Image

    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"a {image.mode} image with values outside 0..65535: save it as an "
                             "8- or 16-bit image")
        return Image.fromarray(np.round(values / 257.0).astype(np.uint8), "L")
    if image.mode == "F":
        raise ValueError("a 32-bit float image (mode F) has no defined pixel range: save it as an "
                         "8- or 16-bit image")
    return image


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
