"""Minimal inference: run one image through a built artifact; every output summarised, class
scores (one vector per sample) as their top classes.

>>> from converters.infer import infer
>>> infer(Path("build/sample/<target>/<artifact>"), Path("dataset/circle/0001.png"))[0].top
[Prediction(label='circle', index=0, score=0.98), ...]

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
from converters.stages import data, export
from converters.targets import open_runtime
from converters.validate import run_named


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


@dataclass(frozen=True)
class BuildMetadata:
    preprocessing: Preprocessing
    class_names: list[str]
    output_order: list[str]  # the model's output names, in its order ([] when unknown)


def build_metadata(artifact: Path) -> BuildMetadata:
    """Preprocessing, class names and output order of the build ``artifact`` belongs to
    (defaults otherwise): the nearest ``data/dataset.json`` above the artifact, within its
    model's build folder, and the ``export/model.json`` beside it."""
    for folder in list(artifact.resolve().parents)[:3]:
        dataset_info = folder / data.DATASET_INFO
        if dataset_info.exists():
            info = read_json(dataset_info)
            model_info = folder / export.MODEL_INFO
            order = ([t["name"] for t in read_json(model_info).get("outputs", [])]
                     if model_info.exists() else [])
            preprocessing = info["preprocessing"] or {"mode": PreprocessingMode.UNIT.value}
            return BuildMetadata(Preprocessing.from_dict(preprocessing), list(info["class_names"]),
                                 order)
    return BuildMetadata(Preprocessing(PreprocessingMode.UNIT), [], [])


@dataclass(frozen=True)
class OutputSummary:
    """One output of the artifact for the image: its range and, for class scores, top classes."""

    name: str
    shape: tuple[int, ...]
    minimum: float
    mean: float
    maximum: float
    top: list[Prediction]  # empty unless the output is one vector per sample


def infer(artifact: Path, image: Path, top_k: int = 5, threads: int = 1,
          preprocessing: Preprocessing | None = None,
          device: str | None = None) -> list[OutputSummary]:
    """Every output of ``artifact`` for ``image``, run by the runtime of the target that built
    it (``device`` picks an accelerator where the target has one)."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if not artifact.is_file():
        raise ModelError(f"artifact {artifact} does not exist: build it with invoke convert")
    if not is_image_file(image):
        raise DatasetError(f"image {image} does not exist or is not a jpg/png/bmp/gif/webp file")
    runner = open_runtime(artifact, threads, device)
    metadata = build_metadata(artifact)
    height, width, channels = runner.image_size
    if not height:
        raise ModelError(f"artifact {artifact} does not take an image (its input is not "
                         "height × width × channels): invoke infer runs image models")
    try:
        pixels = load_image(image, height, width, channels)
    except (OSError, ValueError, SyntaxError) as error:
        raise DatasetError(f"cannot read image {image}: {error}") from None
    inputs = preprocess(pixels[None], preprocessing or metadata.preprocessing)
    outputs = run_named(runner, {"input": inputs}, ("output",), "")
    ranked = sorted(outputs, key=lambda name: metadata.output_order.index(name)
                    if name in metadata.output_order else len(metadata.output_order))
    return [summarise(name, outputs[name][0], metadata.class_names, top_k) for name in ranked]


def summarise(name: str, values: np.ndarray, class_names: list[str], top_k: int) -> OutputSummary:
    top = []
    if values.ndim == 1:
        order = np.argsort(-values, kind="stable")[:top_k]
        top = [Prediction(class_names[i] if i < len(class_names) else str(i), int(i),
                          float(values[i])) for i in order]
    return OutputSummary(name, tuple(values.shape), float(values.min()), float(values.mean()),
                         float(values.max()), top)


def lines(outputs: list[OutputSummary]) -> list[str]:
    """What ``invoke infer`` prints: a classifier's top classes as ``label<TAB>score``; with
    several outputs (or one that is not class scores) a summary line per output first."""
    several = len(outputs) > 1
    text = []
    for output in outputs:
        if several or not output.top:
            text.append(f"{output.name}: shape {list(output.shape)}, min {output.minimum:.4f}, "
                        f"mean {output.mean:.4f}, max {output.maximum:.4f}")
        indent = "  " if several else ""
        text += [f"{indent}{p.label}\t{p.score:.4f}" for p in output.top]
    return text
