"""The one interface every target's inference runtime offers (LiteRT, onnxruntime, TensorRT, the
Edge TPU head/tail pair): validation, ``invoke infer`` and the benchmarks use only this.

A target's ``open_runtime(artifact, threads, device)`` loads it; arrays go in and come out by
name (the model's input and output names), float32, a batch at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from converters.validation.latency import Latency

if TYPE_CHECKING:  # converters.inputs.model imports config, which imports the targets, which import this
    from converters.inputs.model import TensorInfo

Arrays = dict[str, np.ndarray]


class Runtime(Protocol):
    @property
    def input_names(self) -> tuple[str, ...]:
        """The artifact's inputs, in its order."""

    @property
    def output_names(self) -> tuple[str, ...]:
        """The artifact's outputs, in its order."""

    @property
    def input_tensors(self) -> tuple[TensorInfo, ...]:
        """The artifact's inputs as callers feed them, in its order: name, per-sample shape (None
        where any size goes) and the dtype ``predict_named`` takes (float32 for float and
        quantized inputs: the runtime quantizes them)."""

    def predict_named(self, inputs: Arrays, description: str = "") -> Arrays:
        """Float32 outputs by name for float32 inputs by name (first axis: samples)."""

    def latency_named(self, sample: Arrays, runs: int) -> Latency:
        """Wall time of one single-sample call (``sample`` without its batch axis)."""
