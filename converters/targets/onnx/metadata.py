"""What an ONNX artifact says about itself in its ``metadata_props`` (string keys and values, as
other exporters write them), so an app needs no side file:

- ``labels``: the class names, a JSON list (absent when the build had none);
- ``labelled_outputs``: the outputs that are class scores over those labels, a JSON list of names;
- ``preprocessing``: for a model whose first input is an image, a JSON object: ``input`` (its
  name), ``layout`` (``NHWC``), ``color_space`` (``RGB`` or ``GRAYSCALE``), ``mean`` and ``std``
  (``(pixel - mean) / std`` on pixels 0..255, one value or one per channel) and ``mode`` (the
  build's preprocessing name).

The quantized models are made from the fp32 model and keep these keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from converters.fsutil import read_json
from converters.stages import data, export
from converters.stages.base import StageContext
from converters.stages.pixel_normalization import pixel_normalization
from converters.targets.base import ArtifactDescription

LABELS_KEY = "labels"
LABELLED_OUTPUTS_KEY = "labelled_outputs"
PREPROCESSING_KEY = "preprocessing"
COLOR_SPACES = {1: "GRAYSCALE", 3: "RGB"}


def entries(context: StageContext) -> dict[str, str]:
    """The metadata_props this build's ONNX models carry."""
    info = read_json(context.read(data.DATASET_INFO))
    labels = [str(name) for name in info["class_names"]]
    outputs = export.model_outputs(context.build_dir)
    labelled = [tensor.name for tensor in outputs
                if labels and tensor.shape == (len(labels),)]  # shapes without the batch axis
    found: dict[str, str] = {}
    if labelled:
        found[LABELS_KEY] = json.dumps(labels, ensure_ascii=False)
        found[LABELLED_OUTPUTS_KEY] = json.dumps(labelled, ensure_ascii=False)
    image = export.model_inputs(context.build_dir)[0]
    normalization = pixel_normalization(info["preprocessing"])
    if info.get("kind") == data.IMAGES and normalization and len(image.shape) == 3 \
            and image.shape[-1] in COLOR_SPACES:
        mean, std = normalization
        found[PREPROCESSING_KEY] = json.dumps({
            "input": image.name, "layout": "NHWC", "color_space": COLOR_SPACES[image.shape[-1]],
            "mean": list(mean), "std": list(std), "mode": info["preprocessing"]["mode"]})
    return found


def write(model_proto: Any, props: dict[str, str]) -> None:
    """Set ``props`` in the model's metadata_props (replacing earlier values of those keys)."""
    kept = [p for p in model_proto.metadata_props if p.key not in props]
    del model_proto.metadata_props[:]
    model_proto.metadata_props.extend(kept)
    for key, value in props.items():
        model_proto.metadata_props.add(key=key, value=value)


def read(model_proto: Any) -> dict[str, Any]:
    """The labels and preprocessing an ONNX model says it has (empty when it says nothing)."""
    props = {p.key: p.value for p in model_proto.metadata_props}
    found: dict[str, Any] = {}
    for key in (LABELS_KEY, LABELLED_OUTPUTS_KEY, PREPROCESSING_KEY):
        if key in props:
            try:
                found[key] = json.loads(props[key])
            except json.JSONDecodeError:
                continue  # another exporter's value under the same key: not ours to read
    return found


def read_description(artifact: Path) -> ArtifactDescription | None:
    """The class names and image normalization an .onnx file's metadata_props carry."""
    import onnx

    return description_of(read(onnx.load(str(artifact), load_external_data=False)))


def description_of(found: dict[str, Any]) -> ArtifactDescription | None:
    """The class names and image normalization of what :func:`read` returns (or a TensorRT
    engine's sidecar, which keeps the same keys)."""
    if not found:
        return None
    preprocessing = found.get(PREPROCESSING_KEY)
    normalization = None
    if isinstance(preprocessing, dict) and {"mean", "std"} <= set(preprocessing):
        normalization = (tuple(float(v) for v in preprocessing["mean"]),
                         tuple(float(v) for v in preprocessing["std"]))
    return ArtifactDescription(tuple(str(name) for name in found.get(LABELS_KEY, [])), normalization)
