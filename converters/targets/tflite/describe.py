"""What a TFLite artifact's metadata says, decided from the build: the model's name, a content
hash as its version, the input's normalization (the preprocessing ``data/dataset.json``
recorded, as MediaPipe applies it to pixels 0..255) and image properties, and the dataset's
class names as the labels of each class-score output. :func:`attach` writes it into the
artifact (:mod:`converters.targets.tflite.metadata`) and returns what the info JSON records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.fsutil import read_json
from converters.stages import data
from converters.stages.base import StageContext
from converters.stages.pixel_normalization import pixel_normalization
from converters.targets.base import ArtifactDescription
from converters.targets.tflite import flatbuffer as tflite_inspect
from converters.targets.tflite import metadata
from converters.targets.tflite.params import ModeParams

AUTHOR = "Tensor Edge Converter"
INTEGER_INPUTS = frozenset({"UINT8", "INT8"})


def normalization(preprocessing: dict[str, Any] | None) -> metadata.Normalization | None:
    """The preprocessing dataset.json recorded as mean/std on pixels 0..255 (one value when it
    is the same for every channel); None for array datasets (no pixels)."""
    found = pixel_normalization(preprocessing)
    return metadata.Normalization(*found).single() if found else None


def description(context: StageContext, graph: tflite_inspect.TFLiteGraph,
                flatbuffer: bytes) -> metadata.Description:
    """The metadata of this stage's artifact (``flatbuffer``, before any metadata)."""
    params = ModeParams.of(context)
    info = read_json(context.read(data.DATASET_INFO))
    image = _image_input(graph.inputs[0], info) if graph.inputs else None
    labels = tuple(str(name) for name in info["class_names"])
    segmentation = tuple(position for position, tensor in enumerate(graph.outputs)
                         if image is not None and len(tensor.shape) == 4)
    labelled = tuple(position for position, tensor in enumerate(graph.outputs)
                     if labels and (len(tensor.shape) == 2 or position in segmentation)
                     and tensor.shape[-1] == len(labels))
    model = context.model_path.name
    return metadata.Description(
        name=context.model_path.stem,
        version=metadata.content_version(flatbuffer),
        description=(f"{model} converted to TFLite {params.mode} by {AUTHOR}; "
                     + (f"{'segments' if segmentation else 'classifies'} {len(labels)} classes"
                        if labelled else "no class labels")),
        author=AUTHOR, image_input=image, labels=labels, labelled_outputs=labelled,
        segmentation_outputs=segmentation)


def written_for(described: metadata.Description, graph: tflite_inspect.TFLiteGraph) -> str:
    """Which MediaPipe Tasks API the metadata is written for, or why it is generic."""
    if described.image_input is None:
        return "generic: the model's first input is not an image from an image folder"
    if len(graph.outputs) != 1:
        return ("generic: MediaPipe's ObjectDetector takes a post-processed detector's four "
                "outputs (locations, classes, scores, count); this model has "
                f"{len(graph.outputs)} outputs of its own")
    if described.segmentation_outputs:
        return "MediaPipe ImageSegmenter"
    if len(graph.outputs[0].shape) == 2:
        return "MediaPipe ImageClassifier"
    return "generic: the output is neither class scores nor a class map"


def _image_input(tensor: tflite_inspect.TensorInfo, info: dict[str, Any]) -> metadata.ImageInput | None:
    """An image folder's one input (batch, height, width, 1 or 3 channels): float inputs are
    normalized as the build preprocessed; integer inputs take the pixels (no normalization)."""
    if info.get("kind") != data.IMAGES or len(tensor.shape) != 4 or \
            tensor.shape[-1] not in metadata.COLOR_SPACES:
        return None
    float_input = tensor.type not in INTEGER_INPUTS
    return metadata.ImageInput(metadata.COLOR_SPACES[tensor.shape[-1]],
                               normalization(info["preprocessing"]) if float_input else None)


def attach(context: StageContext, flatbuffer: bytes,
           graph: tflite_inspect.TFLiteGraph) -> tuple[bytes, dict[str, Any]]:
    """The artifact with its metadata, and what the info JSON records of it."""
    described = description(context, graph, flatbuffer)
    written = metadata.populate(flatbuffer, metadata.metadata_buffer(described, graph),
                                metadata.associated_files(described))
    image = described.image_input
    norm = image.normalization if image else None
    return written, {
        "name": described.name, "version": described.version,
        "description": described.description,
        "labels": len(described.labels) if described.labelled_outputs else 0,
        "written_for": written_for(described, graph),
        "color_space": image.color_space if image else None,
        "normalization": {"mean": list(norm.mean), "std": list(norm.std)} if norm else None,
        "per_channel": bool(norm and norm.per_channel),
        "added_bytes": len(written) - len(flatbuffer),
    }


def read_description(artifact: Path) -> ArtifactDescription | None:
    """The class names and input normalization a .tflite file's metadata carries."""
    found = metadata.read(artifact.read_bytes())
    if found is None:
        return None
    norm = found.normalization
    return ArtifactDescription(found.labels, (norm.mean, norm.std) if norm else None)
