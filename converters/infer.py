"""Minimal inference: classify one image with a built artifact.

>>> from converters.infer import classify
>>> classify(Path("build/sample/tflite/sample_int8.tflite"), Path("dataset/circle/0001.png"))
[('circle', 0.98), ...]

Preprocessing and class names come from the build folder the artifact sits in
(``data/dataset.json``), so an artifact is run exactly as it was validated.
"""

from __future__ import annotations

import ctypes
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.config import Preprocessing, PreprocessingMode
from converters.dataset import is_image_file, load_image, preprocess
from converters.errors import ConfigError, DatasetError, ModelError, ToolMissingError
from converters.fsutil import read_json
from converters.stages import data
from converters.validate import OnnxRunner, TFLiteRunner


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    score: float


EDGETPU_SUFFIX = "_edgetpu.tflite"
RUNTIMES = {".tflite": "LiteRT", ".onnx": "onnxruntime", ".engine": "TensorRT",
            ".json": "LiteRT (an Edge TPU head/tail pair, *_split.json)"}
EDGETPU_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib",
                     "Windows": "edgetpu.dll"}


def build_metadata(artifact: Path) -> tuple[Preprocessing, list[str]]:
    """Preprocessing and class names of the build ``artifact`` belongs to (defaults otherwise):
    the nearest ``data/dataset.json`` above the artifact, within its model's build folder."""
    for folder in list(artifact.resolve().parents)[:3]:
        dataset_info = folder / data.DATASET_INFO
        if dataset_info.exists():
            info = read_json(dataset_info)
            return Preprocessing.from_dict(info["preprocessing"]), list(info["class_names"])
    return Preprocessing(PreprocessingMode.UNIT), []


def artifact_runner(artifact: Path, threads: int, device: str | None) -> Any:
    """LiteRT (with the Edge TPU delegate for *_edgetpu.tflite), onnxruntime or TensorRT."""
    if artifact.suffix == ".onnx":
        return OnnxRunner(artifact, threads)
    if artifact.suffix == ".json":
        from converters.targets.edgetpu.split import Pipeline, head_to_run, read_record

        record = read_record(artifact)
        head = head_to_run(artifact, record)
        return Pipeline(head, artifact.parent / record["tail"], threads,
                        edgetpu_delegates(head, device))
    if artifact.suffix == ".engine":
        from converters.targets.tensorrt.engine import EngineRunner, tensorrt_problem

        if (problem := tensorrt_problem()) is not None:
            raise ToolMissingError(f"cannot run {artifact}: {problem}; a TensorRT engine runs "
                                   "only with TensorRT on an NVIDIA GPU (run the .onnx instead)")
        return EngineRunner.from_file(artifact)
    return TFLiteRunner(artifact, threads=threads, delegates=edgetpu_delegates(artifact, device))


def edgetpu_delegates(artifact: Path, device: str | None) -> list[Any] | None:
    """The Edge TPU delegate for a compiled ``*_edgetpu.tflite``; None for other artifacts."""
    if not artifact.name.endswith(EDGETPU_SUFFIX):
        if device:
            raise ConfigError(f"--device applies to *{EDGETPU_SUFFIX} artifacts, not {artifact.name}")
        return None
    from ai_edge_litert.interpreter import load_delegate

    library = EDGETPU_LIBRARIES.get(platform.system(), EDGETPU_LIBRARIES["Linux"])
    try:
        # Load the library first: LiteRT's Delegate fails noisily at exit when it cannot.
        ctypes.CDLL(library)
        return [load_delegate(library, {"device": device} if device else {})]
    except (ValueError, OSError, RuntimeError) as error:
        where = f" for device '{device}'" if device else ""
        raise ToolMissingError(
            f"the Edge TPU runtime {library} could not be loaded{where} ({error}): install "
            "libedgetpu (libedgetpu1-std, or libedgetpu1-max for maximum frequency, from Coral's "
            "apt repository) and plug in the Edge TPU (--device usb|pci|usb:N); to run on the "
            f"CPU instead use the uncompiled {artifact.name.replace(EDGETPU_SUFFIX, '.tflite')}"
        ) from None


def classify(artifact: Path, image: Path, top_k: int = 5, threads: int = 1,
             preprocessing: Preprocessing | None = None,
             device: str | None = None) -> list[Prediction]:
    """The ``top_k`` classes for ``image`` according to ``artifact`` (a .tflite file; an
    ``*_edgetpu.tflite`` runs through the Edge TPU delegate on ``device``)."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, got {top_k}")
    if not artifact.is_file():
        raise ModelError(f"artifact {artifact} does not exist: build it with invoke convert")
    if artifact.suffix not in RUNTIMES:
        raise ModelError(
            f"artifact {artifact} has the unsupported extension '{artifact.suffix}': infer runs "
            f"{', '.join(RUNTIMES)} files"
        )
    if not is_image_file(image):
        raise DatasetError(f"image {image} does not exist or is not a jpg/png/bmp/gif/webp file")
    stored_preprocessing, class_names = build_metadata(artifact)
    runner = artifact_runner(artifact, threads, device)
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
