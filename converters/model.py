"""Load a Keras model (.h5, .keras, SavedModel dir), describe its signature, export it once.

Imports TensorFlow inside functions: only the stages that need it pay for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.config import MODEL_SUFFIXES
from converters.errors import ModelError

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class LoadedModel:
    """A single-input, single-output image model, whatever file it came from."""

    path: Path
    format: str  # "h5" | "keras" | "saved_model"
    input_name: str
    input_shape: tuple[int, int, int]  # H, W, C (batch excluded)
    output_shape: tuple[int | None, ...]
    parameters: int | None
    # The model's own leading Rescaling/Normalization layer: what it expects its input to be.
    input_preprocessing: dict[str, Any] | None
    predict: Predict  # float32 N×H×W×C → float32 outputs
    graph_function: Any  # a tf.function taking one N×H×W×C float32 tensor (for timing)
    export: Callable[[Path], None]  # write a SavedModel with a fixed H×W×C, dynamic batch

    def info(self) -> dict[str, Any]:
        return {
            "name": self.path.name if self.format == "saved_model" else self.path.stem,
            "path": str(self.path),
            "format": self.format,
            "input_name": self.input_name,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "parameters": self.parameters,
            "input_preprocessing": self.input_preprocessing,
        }


def check_model_path(path: Path) -> str:
    """Validate the path without loading anything; return the model format."""
    if not path.exists():
        raise ModelError(
            f"model {path} does not exist: pass --model with a .h5 or .keras file or a "
            "SavedModel directory"
        )
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ModelError(
                f"model {path} is a folder but not a SavedModel (no saved_model.pb in it): pass a "
                ".h5 or .keras file or a SavedModel directory"
            )
        return "saved_model"
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(
            f"model {path} has the unsupported extension '{path.suffix}': expected .h5, .hdf5, "
            ".keras or a SavedModel directory"
        )
    return "keras" if path.suffix.lower() == ".keras" else "h5"


def load(path: Path, unsafe: bool = False,
         input_shape: tuple[int, ...] | None = None) -> LoadedModel:
    """Load and check a model: one image input (N×H×W×C) with a static size, one output."""
    model_format = check_model_path(path)
    if model_format == "saved_model":
        return _load_saved_model(path, input_shape)
    return _load_keras(path, model_format, unsafe, input_shape)


def _load_keras(path: Path, model_format: str, unsafe: bool,
                input_shape: tuple[int, ...] | None) -> LoadedModel:
    import keras
    import tensorflow as tf

    try:
        model = keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except Exception as error:  # Keras raises many types for bad files; all mean "cannot load"
        raise _load_error(path, error) from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(
            f"model {path} has {len(model.inputs)} input(s) and {len(model.outputs)} output(s) "
            f"({', '.join(t.name for t in model.inputs)} → {', '.join(t.name for t in model.outputs)}); "
            "this tool converts models with exactly one image input and one output"
        )
    declared = tuple(model.inputs[0].shape)
    shape = _resolve_input_shape(path, model.inputs[0].name, declared, input_shape)
    spec = tf.TensorSpec((None, *shape), tf.float32, name="input")

    @tf.function(input_signature=[spec])
    def graph_function(images: tf.Tensor) -> tf.Tensor:
        return model(images, training=False)

    def predict(images: np.ndarray) -> np.ndarray:
        # Through the tf.function, not an eager call: eager Keras on a batch of 32 224x224
        # images held 2.5 GB more (benchmarks/memory_notes.md), which the process never returns.
        return np.asarray(graph_function(tf.constant(images, tf.float32)), dtype=np.float32)

    def export(directory: Path) -> None:
        model.export(str(directory), format="tf_saved_model", input_signature=[spec],
                     verbose=False)

    return LoadedModel(
        path=path,
        format=model_format,
        input_name=model.inputs[0].name,
        input_shape=shape,
        output_shape=tuple(model.outputs[0].shape),
        parameters=int(model.count_params()),
        input_preprocessing=leading_preprocessing(model),
        predict=predict,
        graph_function=graph_function,
        export=export,
    )


def leading_preprocessing(model: Any) -> dict[str, Any] | None:
    """The affine map ``x * scale + offset`` of the model's leading Rescaling or Normalization
    layer (looking one level into a nested model such as a keras.applications base), or None.

    Layers that only reshape or pass through (InputLayer) are skipped; any other first layer
    means the model has no built-in preprocessing.
    """
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if not layers:
        return None
    first = layers[0]
    kind = type(first).__name__
    if kind == "Rescaling":
        scale = float(np.mean(np.asarray(first.scale, dtype=np.float64)))
        offset = float(np.mean(np.asarray(first.offset, dtype=np.float64)))
        return {"layer": first.name, "kind": kind, "scale": scale, "offset": offset}
    if kind == "Normalization" and getattr(first, "mean", None) is not None:
        mean = float(np.mean(np.asarray(first.mean, dtype=np.float64)))
        std = float(np.sqrt(np.mean(np.asarray(first.variance, dtype=np.float64)))) or 1.0
        return {"layer": first.name, "kind": kind, "scale": 1.0 / std, "offset": -mean / std}
    if hasattr(first, "layers"):  # a nested model: its own first layer decides
        return leading_preprocessing(first)
    return None


def _load_error(path: Path, error: Exception) -> ModelError:
    text = str(error)
    if "safe_mode" in text:
        return ModelError(
            f"model {path} needs unsafe deserialisation (it contains a Lambda layer or other "
            "arbitrary code), which Keras' safe mode refuses. If you trust this file, re-run "
            "with --unsafe"
        )
    if "File not found" in text and path.is_file():
        text = "not a valid .keras archive (a zip file); it may be truncated or corrupt"
    first_line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return ModelError(
        f"cannot load model {path}: {first_line[:300]}. Is it a complete Keras model file? "
        "Re-save it with model.save('name.keras') and try again"
    )


def _load_saved_model(path: Path, input_shape: tuple[int, ...] | None) -> LoadedModel:
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:  # TF raises several types for unreadable SavedModels
        raise _load_error(path, error) from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ModelError(
            f"SavedModel {path} has no 'serving_default' signature: export it with "
            "model.export(dir) or tf.saved_model.save(..., signatures=...)"
        )
    inputs = signature.structured_input_signature[1]
    outputs = signature.structured_outputs
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"SavedModel {path} has {len(inputs)} input(s) and {len(outputs)} output(s) "
            f"({', '.join(inputs)} → {', '.join(outputs)}); this tool converts models with "
            "exactly one image input and one output"
        )
    input_name, input_spec = next(iter(inputs.items()))
    output_name, output_spec = next(iter(outputs.items()))
    shape = _resolve_input_shape(path, input_name, tuple(input_spec.shape), input_shape)
    spec = tf.TensorSpec((None, *shape), tf.float32, name="input")

    @tf.function(input_signature=[spec])
    def graph_function(images: tf.Tensor) -> tf.Tensor:
        return signature(**{input_name: images})[output_name]

    def predict(images: np.ndarray) -> np.ndarray:
        return np.asarray(graph_function(tf.constant(images, tf.float32)), dtype=np.float32)

    def export(directory: Path) -> None:
        module = tf.Module()
        module.loaded = loaded  # tracks the variables the signature captures
        module.serve = graph_function
        tf.saved_model.save(module, str(directory),
                            signatures={"serving_default": graph_function.get_concrete_function()})

    return LoadedModel(
        path=path,
        format="saved_model",
        input_name=input_name,
        input_shape=shape,
        output_shape=tuple(output_spec.shape),
        parameters=None,
        input_preprocessing=None,
        predict=predict,
        graph_function=graph_function,
        export=export,
    )


def _resolve_input_shape(path: Path, name: str, declared: tuple[int | None, ...],
                         override: tuple[int, ...] | None) -> tuple[int, int, int]:
    if len(declared) != 4:
        raise ModelError(
            f"model {path} input '{name}' has shape {_shape_text(declared)}; this tool converts "
            "image models with input batch×height×width×channels"
        )
    spatial = declared[1:]
    if override is not None:
        for axis, (have, want) in enumerate(zip(spatial, override, strict=True)):
            if have is not None and have != want:
                raise ModelError(
                    f"--input-shape {','.join(map(str, override))} conflicts with model {path} "
                    f"input '{name}' {_shape_text(declared)} (dimension {axis + 1} is {have})"
                )
        return (override[0], override[1], override[2])
    if any(size is None for size in spatial):
        raise ModelError(
            f"model {path} input '{name}' has no static size {_shape_text(declared)}: pass "
            "--input-shape HEIGHT,WIDTH,CHANNELS (for example --input-shape 224,224,3)"
        )
    return (int(spatial[0]), int(spatial[1]), int(spatial[2]))  # type: ignore[arg-type]


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"
