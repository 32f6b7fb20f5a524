"""Minimal inference: run one image, or arrays from a ``.npz`` / ``.npy`` file, through a built
artifact; every output summarised, class scores (one vector per sample) as their top classes.

>>> from converters.commands.infer import infer
>>> infer(Path("build/sample/<target>/<artifact>"), Path("dataset/circle/0001.png"))[0].top
[Prediction(label='circle', index=0, score=0.98), ...]

Preprocessing, class names and input/output names come from the build folder the artifact sits
in (``data/dataset.json``, ``export/model.json``), so an artifact is run exactly as it was
validated; an artifact on its own is run with the class names and normalization its own
metadata carries. Arrays are used as given (cast to the input's dtype), as a build uses array datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.cache.build_state import build_folder, check_artifact
from converters.config import Preprocessing, PreprocessingMode
from converters.errors import ConfigError, DatasetError, ModelError
from converters.fsutil import read_json
from converters.inputs import arrays
from converters.inputs.array_files import DEFAULT_MAX_ARRAY_MB, listed
from converters.inputs.dataset import is_image_file, load_image, preprocess
from converters.inputs.model import Arrays, TensorInfo
from converters.stages import data, export
from converters.stages.pixel_normalization import preprocessing_of
from converters.targets import describe_artifact, open_runtime
from converters.validation.compare import run_named
from converters.validation.runtime import Runtime


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


@dataclass(frozen=True)
class BuildMetadata:
    preprocessing: Preprocessing
    class_names: list[str]
    inputs: tuple[TensorInfo, ...]  # the model's inputs, in its order (() when unknown)
    output_order: list[str]  # the model's output names, in its order ([] when unknown)


def build_metadata(artifact: Path) -> BuildMetadata:
    """Preprocessing, class names, inputs and output order of the build ``artifact`` belongs to
    (defaults otherwise): the nearest ``data/dataset.json`` above the artifact, within its
    model's build folder, and the ``export/model.json`` beside it. An artifact inside a build
    folder must belong with them (:mod:`converters.cache.build_state`)."""
    build_dir = build_folder(artifact)
    if build_dir is not None:
        check_artifact(artifact, build_dir, needed=(data.DATASET_INFO, export.MODEL_INFO))
    for folder in [build_dir] if build_dir else list(artifact.resolve().parents)[:3]:
        dataset_info = folder / data.DATASET_INFO
        if dataset_info.exists():
            info = read_json(dataset_info)
            model_info = read_json(folder / export.MODEL_INFO) if (
                folder / export.MODEL_INFO).exists() else {}
            preprocessing = info["preprocessing"] or {"mode": PreprocessingMode.UNIT.value}
            return BuildMetadata(
                Preprocessing.from_dict(preprocessing), list(info["class_names"]),
                tuple(TensorInfo.from_dict(t) for t in model_info.get("inputs", [])),
                [t["name"] for t in model_info.get("outputs", [])])
    return artifact_metadata(artifact)


def artifact_metadata(artifact: Path) -> BuildMetadata:
    """Outside a build folder: the class names and normalization the artifact's own metadata
    carries (0..1 when it says none)."""
    described = describe_artifact(artifact) if artifact.is_file() else None
    preprocessing = Preprocessing(PreprocessingMode.UNIT)
    if described is not None and described.normalization is not None:
        preprocessing = Preprocessing.from_dict(preprocessing_of(*described.normalization))
    return BuildMetadata(preprocessing, list(described.class_names) if described else [], (), [])


@dataclass(frozen=True)
class OutputSummary:
    """One output of the artifact for one sample: its range and, for class scores, top classes."""

    name: str
    shape: tuple[int, ...]
    minimum: float
    mean: float
    maximum: float
    top: list[Prediction]  # empty unless the output is one vector per sample


Sample = list[OutputSummary]  # every output of one sample, in the model's order


def infer(artifact: Path, source: Path, top_k: int = 5, threads: int = 1,
          preprocessing: Preprocessing | None = None, device: str | None = None,
          max_array_mb: int = DEFAULT_MAX_ARRAY_MB) -> Sample:
    """Every output of ``artifact`` for the one sample in ``source`` (an image, or an array
    file holding one sample; :func:`infer_samples` takes several), summarised; ``top_k``
    classes of class scores."""
    samples = infer_samples(artifact, source, top_k, threads, preprocessing, device,
                            max_array_mb)
    if len(samples) != 1:
        raise ConfigError(f"{source} holds {len(samples)} samples: infer runs one "
                          "(infer_samples runs each)")
    return samples[0]


def infer_samples(artifact: Path, source: Path, top_k: int = 5, threads: int = 1,
                  preprocessing: Preprocessing | None = None,
                  device: str | None = None,
                  max_array_mb: int = DEFAULT_MAX_ARRAY_MB) -> list[Sample]:
    """Every output of ``artifact`` for each sample of ``source`` (see :func:`predict`),
    summarised; ``top_k`` classes of class scores."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    metadata = build_metadata(artifact)
    outputs = predict(artifact, source, threads, preprocessing, device, metadata, max_array_mb)
    class_names = metadata.class_names
    count = len(next(iter(outputs.values())))
    return [[summarise(name, values[index], class_names, top_k)
             for name, values in outputs.items()] for index in range(count)]


def predict(artifact: Path, source: Path, threads: int = 1,
            preprocessing: Preprocessing | None = None, device: str | None = None,
            metadata: BuildMetadata | None = None,
            max_array_mb: int = DEFAULT_MAX_ARRAY_MB) -> Arrays:
    """Every output of ``artifact`` by name, in the model's order, first axis = samples, run by
    the runtime of the target that built it (``device`` picks an accelerator where the target
    has one). ``source``: an image file (a one-image-input model), or a ``.npz`` file (one array
    per input name, one sample or a first axis of samples) or a ``.npy`` file (a one-input
    model's array), checked against the artifact's inputs, whose arrays may declare at most
    ``max_array_mb``. ``metadata``: the artifact's :func:`build_metadata`, when the caller has
    read it already."""
    if not artifact.is_file():
        raise ModelError(f"artifact {artifact} does not exist: build it with invoke convert")
    given_arrays = source.suffix.lower() in arrays.ARRAY_SUFFIXES
    if given_arrays and not source.is_file():
        raise DatasetError(f"input file {source} does not exist")
    if not given_arrays and not is_image_file(source):
        raise DatasetError(f"image {source} does not exist or is not a jpg/png/bmp/gif/webp "
                           "file (arrays: a .npz or .npy file)")
    runner = open_runtime(artifact, threads, device)
    metadata = metadata or build_metadata(artifact)
    inputs = model_inputs(runner, metadata)
    if given_arrays:
        feeds = arrays.read_inputs(source, inputs, max_array_mb)
    else:
        feeds = image_feeds(artifact, source, inputs, preprocessing or metadata.preprocessing)
    outputs = run_named(runner, feeds, tuple(metadata.output_order) or ("output",), "")
    order = metadata.output_order
    return {name: outputs[name] for name in sorted(
        outputs, key=lambda name: order.index(name) if name in order else len(order))}


def model_inputs(runner: Runtime, metadata: BuildMetadata) -> tuple[TensorInfo, ...]:
    """The artifact's inputs (shapes and dtypes as it takes them), named as the model's when
    the artifact names its one input otherwise (a TensorRT engine's tensor, an older split
    pair's ``input``)."""
    found = runner.input_tensors
    if len(found) == 1 and len(metadata.inputs) == 1 and found[0].name != metadata.inputs[0].name:
        return (TensorInfo(metadata.inputs[0].name, found[0].shape, found[0].dtype),)
    return found


def image_feeds(artifact: Path, image: Path, inputs: tuple[TensorInfo, ...],
                preprocessing: Preprocessing) -> Arrays:
    """The image, preprocessed as the build validated it, for a model with one image input."""
    if len(inputs) != 1 or not inputs[0].is_image or None in inputs[0].shape:
        shapes = listed(f"'{t.name}' {t.shape}" for t in inputs)
        raise ModelError(f"artifact {artifact} does not take one image (height × width × 1, 3 "
                         f"or 4 channels); its inputs are {shapes}: give a .npz file with one "
                         "array per input name (or a .npy file for a one-input model) instead")
    [tensor] = inputs
    height, width, channels = (int(size) for size in tensor.shape)  # type: ignore[arg-type]
    try:
        pixels = load_image(image, height, width, channels)
    except (OSError, ValueError, SyntaxError) as error:
        raise DatasetError(f"cannot read image {image}: {error}") from None
    return {tensor.name: preprocess(pixels[None], preprocessing)}


def summarise(name: str, values: np.ndarray, class_names: list[str], top_k: int) -> OutputSummary:
    top = []
    if values.ndim == 1:
        order = np.argsort(-values, kind="stable")[:top_k]
        top = [Prediction(class_names[i] if i < len(class_names) else str(i), int(i),
                          float(values[i])) for i in order]
    return OutputSummary(name, tuple(values.shape), float(values.min()), float(values.mean()),
                         float(values.max()), top)


def lines(samples: list[Sample]) -> list[str]:
    """What ``invoke infer`` prints: a classifier's top classes as ``label<TAB>score``; with
    several outputs (or one that is not class scores) a summary line per output first; with
    several samples a ``sample N:`` line before each sample's lines, indented."""
    if len(samples) == 1:
        return sample_lines(samples[0])
    text = []
    for index, sample in enumerate(samples):
        text += [f"sample {index}:", *(f"  {line}" for line in sample_lines(sample))]
    return text


def sample_lines(outputs: Sample) -> list[str]:
    several = len(outputs) > 1
    text = []
    for output in outputs:
        if several or not output.top:
            text.append(f"{output.name}: shape {list(output.shape)}, min {output.minimum:.4f}, "
                        f"mean {output.mean:.4f}, max {output.maximum:.4f}")
        indent = "  " if several else ""
        text += [f"{indent}{p.label}\t{p.score:.4f}" for p in output.top]
    return text
