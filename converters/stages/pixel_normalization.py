"""The preprocessing a build chose (``data/dataset.json``), said the way model metadata says it:
``(pixel - mean) / std`` on pixels 0..255, one value per channel. Every target's metadata
(TFLite's normalization options, ONNX's metadata_props) is written from this."""

from __future__ import annotations

from typing import Any

# Each fixed preprocessing as (pixel - mean) / std on pixels 0..255 (converters/inputs/imaging.py).
FIXED = {"0..1": ((0.0,), (255.0,)),
         "-1..1": ((127.5,), (127.5,)),
         "0..255": ((0.0,), (1.0,))}


def pixel_normalization(preprocessing: dict[str, Any] | None
                        ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` on pixels 0..255 for the preprocessing dataset.json recorded (one value
    for a fixed range, one per channel for mean-std); None for array datasets (no pixels)."""
    if preprocessing is None:
        return None
    mode = preprocessing["mode"]
    if mode in FIXED:
        return FIXED[mode]
    return (tuple(float(v) for v in preprocessing["mean"]),
            tuple(float(v) for v in preprocessing["std"]))


def preprocessing_of(mean: tuple[float, ...], std: tuple[float, ...]) -> dict[str, Any]:
    """The preprocessing (as ``Preprocessing.as_dict`` writes it) that ``(pixel - mean) / std``
    is: a fixed range's name when it is one, else mean-std."""
    for mode, fixed in FIXED.items():
        if set(mean) == set(fixed[0]) and set(std) == set(fixed[1]):
            return {"mode": mode, "mean": None, "std": None}
    return {"mode": "mean-std", "mean": list(mean), "std": list(std)}
