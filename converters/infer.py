"""Minimal inference: classify one image with a built artifact.

>>> from converters.infer import classify
>>> classify(Path("build/sample/<target>/<artifact>"), Path("dataset/circle/0001.png"))
[('circle', 0.98), ...]

Preprocessing and class names come from the build folder the artifact sits in
(``data/dataset.json``), so an artifact is run exactly as it was validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.config import Preprocessing, PreprocessingMode
from converters.dataset import is_image_file, load_image, preprocess
from converters.errors import ConfigError, DatasetError, ModelError
from converters.fsutil import read_json
from converters.stages import data
from converters.targets import open_runtime


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


def build_metadata(artifact: Path) -> tuple[Preprocessing, list[str]]:
    """Preprocessing and class names of the build ``artifact`` belongs to (defaults otherwise):
    the nearest ``data/dataset.json`` above the artifact, within its model's build folder."""
    for folder in list(artifact.resolve().parents)[:3]:
        dataset_info = folder / data.DATASET_INFO
        if dataset_info.exists():
            info = read_json(dataset_info)
            return Preprocessing.from_dict(info["preprocessing"]), list(info["class_names"])
    return Preprocessing(PreprocessingMode.UNIT), []


def classify(artifact: Path, image: Path, top_k: int = 5, threads: int = 1,
             preprocessing: Preprocessing | None = None,
             device: str | None = None) -> list[Prediction]:
    """The ``top_k`` classes for ``image`` according to ``artifact``, run by the runtime of the
    target that built it (``device`` picks an accelerator where the target has one)."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if not artifact.is_file():
        raise ModelError(f"artifact {artifact} does not exist: build it with invoke convert")
    if not is_image_file(image):
        raise DatasetError(f"image {image} does not exist or is not a jpg/png/bmp/gif/webp file")
    runner = open_runtime(artifact, threads, device)
    stored_preprocessing, class_names = build_metadata(artifact)
    height, width, channels = runner.image_size
    try:
        pixels = load_image(image, height, width, channels)
    except (OSError, ValueError, SyntaxError) as error:
        raise DatasetError(f"cannot read image {image}: {error}") from None
    inputs = preprocess(pixels[None], preprocessing or stored_preprocessing)
    scores = runner.predict(inputs)[0].reshape(-1)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [Prediction(class_names[i] if i < len(class_names) else str(i), int(i),
                       float(scores[i])) for i in order]
