"""The one interface every target's inference runtime offers (LiteRT, onnxruntime, TensorRT, the
Edge TPU head/tail pair): validation, ``invoke infer`` and the benchmarks use only this.

A target's ``open_runtime(artifact, threads, device)`` loads it; arrays go in and come out by
name (the model's input and output names), float32, a batch at a time.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from converters.latency import Latency

Arrays = dict[str, np.ndarray]


class Runtime(Protocol):
    @property
    def input_names(self) -> tuple[str, ...]:
        """The artifact's inputs, in its order."""

    @property
    def output_names(self) -> tuple[str, ...]:
        """The artifact's outputs, in its order."""

    @property
    def image_size(self) -> tuple[int, int, int]:
        """(height, width, channels) of an image input; (0, 0, 0) when the input is not one."""

    def predict_named(self, inputs: Arrays, description: str = "") -> Arrays:
        """Float32 outputs by name for float32 inputs by name (first axis: samples)."""

    def latency_named(self, sample: Arrays, runs: int) -> Latency:
        """Wall time of one single-sample call (``sample`` without its batch axis)."""
