"""One int8 calibration for two TF converter conversions of the same model.

The tflite target's int8 (dynamic batch) and the Edge TPU's int8 (batch 1, static shapes) are
two conversions of one model with the same calibration images: their float graphs differ
only in the ops that compute shapes at run time (SHAPE, STRIDED_SLICE, PACK: integer tensors),
so every float tensor's calibrated range is the same in both. Calibration (running the float
model on every representative image) was most of an int8 conversion with TF's calibrator
(MobileNetV2 224x224: about 10 s of 14 s for 100 images; with LiteRT computing the ranges,
:mod:`litert_calibration`, under a second), so the second conversion reuses the first one's
ranges, and both int8 models have the same ones:

* :func:`recording_ranges` wraps the first conversion and keeps the calibrated ranges: the
  min/max of the graph inputs and of every output of every float op, in execution order;
* :func:`replaying_ranges` wraps the second: the TF converter calibrates on the first sample
  only (to get its own graph with calibration slots), the recorded ranges then replace what
  that sample gave, op by op, and the converter quantizes as it always does. The graphs are
  aligned by their sequence of float ops (op code and per-sample output shapes must agree);
  if they do not, or the graph has calibrated tensors elsewhere (control-flow subgraphs, LSTM
  intermediates), :class:`RangesMismatch` is raised before anything is quantized.

The result is the converter's own quantization of the same ranges: the Edge TPU int8 made
this way has the same quantization parameters and weights as a conversion that calibrates
itself (tests/test_edgetpu.py compares them).

Both wrap ``tensorflow.lite.python.optimize.calibrator.Calibrator.calibrate``, the one call
between the converter's float graph and its quantizer (TensorFlow's QuantizationDebugger uses
the same seam); TensorFlow is pinned (constraints.txt) and the tests above fail if it moves.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

RANGES_FORMAT = "tec-int8-calibration-ranges/1"


class RangesMismatch(Exception):
    """The recorded ranges do not fit this graph (its float ops differ)."""


@dataclass
class Recording:
    """What :func:`recording_ranges` captured (``ranges`` is None until calibration ran)."""

    ranges: dict[str, Any] | None = None


@dataclass(frozen=True)
class _FloatOutput:
    op: int  # builtin op code
    shape: tuple[int, ...]  # per-sample shape (batch excluded)
    tensor: Any  # the flatbuffer object API's TensorT


def _float_outputs(model: Any) -> tuple[list[Any], list[_FloatOutput]]:
    """The main subgraph's input tensors and, in execution order, the outputs of ops whose
    outputs are all float32 (the tensors calibration gives ranges to)."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = model.subgraphs[0]
    outputs: list[_FloatOutput] = []
    for operator in graph.operators:
        code = model.operatorCodes[operator.opcodeIndex]
        op = max(code.builtinCode, code.deprecatedBuiltinCode)
        tensors = [graph.tensors[index] for index in operator.outputs]
        if tensors and all(t.type == schema.TensorType.FLOAT32 for t in tensors):
            outputs += [_FloatOutput(op, tuple(int(v) for v in t.shape[1:]), t) for t in tensors]
    return [graph.tensors[index] for index in graph.inputs], outputs


def tensor_range(tensor: Any) -> list[list[float]] | None:
    quantization = tensor.quantization
    if quantization is None or quantization.min is None or quantization.max is None:
        return None
    return [[float(v) for v in quantization.min], [float(v) for v in quantization.max]]


def ranges_of(calibrated: bytes) -> dict[str, Any]:
    """The calibrated ranges of a calibrated float model, JSON-ready."""
    from tensorflow.lite.tools import flatbuffer_utils

    inputs, outputs = _float_outputs(flatbuffer_utils.convert_bytearray_to_object(calibrated))
    return {"format": RANGES_FORMAT,
            "inputs": [tensor_range(tensor) for tensor in inputs],
            "outputs": [{"op": out.op, "shape": list(out.shape), "range": tensor_range(out.tensor)}
                        for out in outputs]}


def apply_ranges(calibrated: bytes, ranges: dict[str, Any]) -> bytes:
    """``calibrated`` (this graph, calibrated on any sample) with the recorded ranges instead."""
    import numpy as np
    from tensorflow.lite.tools import flatbuffer_utils

    if ranges.get("format") != RANGES_FORMAT:
        raise RangesMismatch(f"unknown ranges format {ranges.get('format')!r}")
    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    inputs, outputs = _float_outputs(model)
    recorded = ranges["outputs"]
    if len(inputs) != len(ranges["inputs"]) or len(outputs) != len(recorded):
        raise RangesMismatch(f"{len(inputs)} inputs and {len(outputs)} float op outputs here, "
                             f"{len(ranges['inputs'])} and {len(recorded)} recorded")
    pairs = list(zip(inputs, ranges["inputs"], strict=True))
    for index, (out, record) in enumerate(zip(outputs, recorded, strict=True)):
        if out.op != record["op"] or list(out.shape) != record["shape"]:
            raise RangesMismatch(f"float op output {index}: op {out.op} {list(out.shape)} here, "
                                 f"op {record['op']} {record['shape']} recorded")
        pairs.append((out.tensor, record["range"]))
    ranged = sum(tensor_range(t) is not None for graph in model.subgraphs for t in graph.tensors)
    covered = sum(tensor_range(tensor) is not None for tensor, _ in pairs)
    if covered != ranged:  # control flow bodies, LSTM intermediates, mixed-type outputs
        raise RangesMismatch(f"{ranged - covered} calibrated tensors are not outputs of the "
                             "main graph's float ops")
    for tensor, value in pairs:
        if (tensor_range(tensor) is None) != (value is None):
            raise RangesMismatch(f"tensor {tensor.name!r}: calibrated here and in the record "
                                 "differ")
        if value is not None:
            tensor.quantization.min = np.asarray(value[0], dtype=np.float32)
            tensor.quantization.max = np.asarray(value[1], dtype=np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


Calibrate = Callable[..., bytes]


@contextmanager
def calibrate_wrapped(wrap: Callable[[Calibrate], Calibrate]) -> Iterator[None]:
    from tensorflow.lite.python.optimize import calibrator

    original: Calibrate = calibrator.Calibrator.calibrate
    calibrator.Calibrator.calibrate = wrap(original)
    try:
        yield
    finally:
        calibrator.Calibrator.calibrate = original


@contextmanager
def recording_ranges() -> Iterator[Recording]:
    """Inside: TF converter int8 conversions keep their calibrated ranges in the yielded record."""
    recording = Recording()

    def wrap(original: Calibrate) -> Calibrate:
        def calibrate(self: Any, dataset_gen: Callable[[], Iterator[Any]]) -> bytes:
            calibrated = original(self, dataset_gen)
            recording.ranges = ranges_of(calibrated)
            return calibrated
        return calibrate

    with calibrate_wrapped(wrap):
        yield recording


@contextmanager
def replaying_ranges(ranges: dict[str, Any]) -> Iterator[None]:
    """Inside: a TF converter int8 conversion calibrates on its first sample only and quantizes
    with ``ranges`` (raises :class:`RangesMismatch` from the conversion when they do not fit)."""

    def wrap(original: Calibrate) -> Calibrate:
        def calibrate(self: Any, dataset_gen: Callable[[], Iterator[Any]]) -> bytes:
            calibrated = original(self, lambda: itertools.islice(dataset_gen(), 1))
            return apply_ranges(calibrated, ranges)
        return calibrate

    with calibrate_wrapped(wrap):
        yield
