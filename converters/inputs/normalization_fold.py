"""A per-channel ``--mean``/``--std`` folded into the model: ``(pixel - mean) / std`` becomes the
model's first operations, so every artifact takes pixels 0..255 as they are.

MediaPipe Tasks (and TFLite metadata's readers) take one mean and one std for every channel, so
an artifact whose input wants a different one per channel cannot be run by them. Folded, the
artifact's metadata says mean 0 / std 1 and any client feeds it pixels; an int8 artifact's input
then is the pixels themselves (scale 1). The folded model is checked against the model on
normalized inputs when it is exported (``export/model.json``: ``folded_normalization``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from converters.inputs.model import LoadedModel, input_specs, predictor

# A float32 model gives the same outputs on normalized inputs and, folded, on pixels within
# rounding (the two compute (pixel - mean) * (1 / std) in float32 either way).
SAMPLES = 4


def folded(model: LoadedModel, mean: tuple[float, ...], std: tuple[float, ...]) -> LoadedModel:
    """``model`` taking pixels 0..255 in its first input, normalized per channel inside (made
    once per process for the model the process keeps: its function is traced once)."""
    key = (id(model), mean, std)
    if key not in _FOLDED:
        _FOLDED.clear()
        _FOLDED[key] = _fold(model, mean, std)
    return _FOLDED[key]


_FOLDED: dict[tuple[int, tuple[float, ...], tuple[float, ...]], LoadedModel] = {}


def _fold(model: LoadedModel, mean: tuple[float, ...], std: tuple[float, ...]) -> LoadedModel:
    import tensorflow as tf

    offset = tf.constant(np.asarray(mean, np.float32))
    scale = tf.constant(1.0 / np.asarray(std, np.float32))
    specs = input_specs(model.inputs)
    inner = model.graph_function

    @tf.function(input_signature=specs)
    def graph_function(*tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels, *rest = tensors
        return dict(inner((pixels - offset) * scale, *rest))

    def export(directory: Path) -> None:
        if model.format == "saved_model":
            module = tf.Module()
            module.loaded = model.trackable  # tracks the variables the signature captures
            module.serve = graph_function
            tf.saved_model.save(module, str(directory), signatures={
                "serving_default": graph_function.get_concrete_function()})
            return
        import keras

        archive = keras.export.ExportArchive()
        archive.track(model.trackable)
        archive.add_endpoint(name="serve", fn=graph_function, input_signature=specs)
        archive.write_out(str(directory), verbose=False)

    def static_function(batch_size: int, unroll: bool) -> Any:
        assert model.static_function is not None
        inner_static = model.static_function(batch_size, unroll)

        @tf.function(input_signature=input_specs(model.inputs, batch_size))
        def normalized_first(*tensors: tf.Tensor) -> dict[str, tf.Tensor]:
            pixels, *rest = tensors
            return dict(inner_static((pixels - offset) * scale, *rest))

        return normalized_first

    return dataclasses.replace(
        model, predict=predictor(graph_function, model.inputs), graph_function=graph_function,
        export=export, input_preprocessing=None,
        static_function=static_function if model.static_function is not None else None)


def check(model: LoadedModel, folded_model: LoadedModel, mean: tuple[float, ...],
          std: tuple[float, ...]) -> dict[str, Any]:
    """What ``export/model.json`` records of the fold: the values, and the largest difference
    between the folded model on pixels and the model on the same pixels normalized."""
    rng = np.random.default_rng(0)
    first, *rest = model.inputs
    shape = tuple(size or 1 for size in first.shape)
    pixels = rng.integers(0, 256, (SAMPLES, *shape)).astype(np.float32)
    others = {tensor.name: rng.random((SAMPLES, *(size or 1 for size in tensor.shape)))
              .astype(tensor.dtype) for tensor in rest}
    normalized = ((pixels - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))
    expected = model.predict({first.name: normalized, **others})
    found = folded_model.predict({first.name: pixels, **others})
    difference = max(float(np.max(np.abs(found[name] - expected[name]), initial=0.0))
                     for name in expected)
    return {"mean": list(mean), "std": list(std), "input": first.name,
            "max_abs_difference": difference}
