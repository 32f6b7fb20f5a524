"""int8 calibration ranges computed by LiteRT, quantized by the TF converter as always.

TF's calibrator runs the float model one sample at a time on its logging kernels, single
threaded: about 0.1 s per 224x224 MobileNetV2 image, most of an int8 conversion (9.6 s of 13.5 s
for 100 images). LiteRT runs the very same float model (the one the converter hands its
calibrator) with XNNPACK on every core and all intermediate tensors kept
(``experimental_preserve_all_tensors``) in under a second, and the min/max of each tensor is
all the calibrator records. So, inside :func:`calibrating_with_litert`, a TF converter int8
conversion:

1. calibrates on its first sample only, which gives the converter's own calibrated graph (which
   tensors get a range);
2. runs every sample through LiteRT and sets each of those tensors' min/max to what LiteRT saw;
3. quantizes as it always does (same quantizer, same options).

The ranges are the true min/max of every tensor (a max of at least FLT_MIN, as TF's
calibrator records it), with one known difference from TF's calibrator: TF logs an op's
inputs after the op ran, so the input of an in-place op (a residual ADD writing its sum into
the buffer of the convolution feeding it) is recorded with the range of the sum as well.
LiteRT's ranges are the convolution's own, narrower ones (MobileNetV2: the 6-10 "project"
convolutions that feed residual ADDs; the rest agree within float rounding).
benchmarks/litert_calibration.py compares the two on trained models (agreement with Keras,
accuracy). ``--quant-engine tflite-converter`` keeps TF's own calibrator.

Where LiteRT cannot stand in, TF's calibrator calibrates as before and the outcome says why:
ranges in control-flow subgraphs, op intermediates (LSTM), a tensor LiteRT does not compute, a
model or sample LiteRT cannot run, a tensor with no finite value (NaN everywhere).
XNNPACK's intermediate tensors are checked on the first sample against LiteRT's reference
kernels (no delegate); if they disagree, the reference kernels compute every range.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from converters.targets.tflite import calibration_share

CALIBRATED_BY_LITERT = "litert"
CALIBRATED_BY_TF = "tf.lite calibrator"
# XNNPACK's values must match the reference kernels' within this fraction of the tensor's scale.
DELEGATE_TOLERANCE = 1e-3


class LiteRTCannotCalibrate(Exception):
    """LiteRT cannot compute this graph's calibration ranges (the reason is the message)."""


@dataclass
class Outcome:
    """Who calibrated (``CALIBRATED_BY_*``) and, when TF's calibrator had to, why."""

    calibrated_by: str | None = None
    fallback_reason: str | None = None
    delegate: str | None = None  # "XNNPACK" or None (reference kernels)


Sample = dict[str, np.ndarray] | list[np.ndarray] | tuple[Any, ...]


def _ranged_tensors(calibrated: bytes) -> tuple[Any, list[int]]:
    """The calibrated model object and the main graph's tensors that carry a range; raises
    :class:`LiteRTCannotCalibrate` where LiteRT cannot compute one of them."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(calibrated)
    for index, graph in enumerate(model.subgraphs[1:], start=1):
        if any(calibration_share.tensor_range(tensor) is not None for tensor in graph.tensors):
            raise LiteRTCannotCalibrate(f"subgraph {index} (control flow) has calibrated tensors")
    graph = model.subgraphs[0]
    if any(op.intermediates is not None and len(op.intermediates) for op in graph.operators):
        raise LiteRTCannotCalibrate("ops with intermediate tensors (LSTM) are calibrated")
    computed = set(int(i) for i in graph.inputs)
    for op in graph.operators:
        computed.update(int(i) for i in op.outputs)
    ranged = [i for i, tensor in enumerate(graph.tensors)
              if calibration_share.tensor_range(tensor) is not None]
    if not_computed := [i for i in ranged if i not in computed]:
        name = graph.tensors[not_computed[0]].name.decode(errors="replace")
        raise LiteRTCannotCalibrate(f"tensor {name!r} is calibrated but no op computes it")
    return model, ranged


def _interpreter(float_model: bytes, threads: int, delegate: bool) -> Any:
    from ai_edge_litert import interpreter as litert

    resolver = (litert.OpResolverType.AUTO if delegate
                else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    try:
        with warnings.catch_warnings():  # "intended for debugging": keeping every tensor is the point
            warnings.simplefilter("ignore", UserWarning)
            return litert.Interpreter(model_content=float_model, num_threads=threads,
                                      experimental_preserve_all_tensors=True,
                                      experimental_op_resolver_type=resolver)
    except (ValueError, RuntimeError) as error:  # an op or op version LiteRT does not have
        raise LiteRTCannotCalibrate(f"LiteRT cannot load the float model: {error}") from None


def _run(interpreter: Any, sample: Sample) -> None:
    """One sample through the interpreter; LiteRT's errors become :class:`LiteRTCannotCalibrate`."""
    try:
        _feed(interpreter, sample)
    except (ValueError, RuntimeError, TypeError, KeyError) as error:
        raise LiteRTCannotCalibrate(f"LiteRT cannot run a calibration sample: {error}") from None


def _feed(interpreter: Any, sample: Sample) -> None:
    """A dict by signature input name, a (signature key, dict) pair as TF's calibrator takes
    it, or a list of arrays in input order."""
    if isinstance(sample, dict):
        interpreter.get_signature_runner()(**sample)
        return
    if isinstance(sample, tuple) and len(sample) == 2 and isinstance(sample[1], dict):
        interpreter.get_signature_runner(sample[0])(**sample[1])
        return
    details = interpreter.get_input_details()
    if len(details) != len(sample):
        raise LiteRTCannotCalibrate(f"a sample has {len(sample)} arrays for {len(details)} inputs")
    for detail, array in zip(details, sample, strict=True):
        if tuple(detail["shape"]) != np.shape(array):
            interpreter.resize_tensor_input(detail["index"], np.shape(array))
    interpreter.allocate_tensors()
    for detail, array in zip(details, sample, strict=True):
        interpreter.set_tensor(detail["index"], array)
    interpreter.invoke()


def _extremes(interpreter: Any, tensors: list[int]) -> np.ndarray:
    """(len(tensors), 2) min and max of each tensor after a run, NaN values left out (as TF's
    calibrator does); +inf/-inf where a tensor had no number."""
    rows = []
    for index in tensors:
        try:
            values = interpreter.get_tensor(index)
        except ValueError as error:  # a tensor the runtime did not keep (no data)
            raise LiteRTCannotCalibrate(f"LiteRT kept no value of tensor {index}: {error}") from None
        numbers = values[~np.isnan(values)] if values.dtype.kind == "f" else values
        rows.append([numbers.min(), numbers.max()] if numbers.size else [np.inf, -np.inf])
    return np.array(rows, dtype=np.float64)


def _delegate_agrees(delegated: np.ndarray, reference: np.ndarray) -> bool:
    scale = np.maximum(np.abs(reference).max(axis=1), np.finfo(np.float32).tiny)
    return bool((np.abs(delegated - reference).max(axis=1) <= DELEGATE_TOLERANCE * scale).all())


def litert_ranges(float_model: bytes, calibrated: bytes, samples: Iterable[Sample],
                  threads: int, outcome: Outcome) -> bytes:
    """``calibrated`` (the converter's graph calibrated on any sample) with every range set to
    the min/max LiteRT computes over ``samples`` on ``float_model``."""
    model, tensors = _ranged_tensors(calibrated)
    iterator = iter(samples)
    first = next(iterator, None)
    if first is None:
        raise LiteRTCannotCalibrate("no calibration sample")
    interpreter = _interpreter(float_model, threads, delegate=True)
    _run(interpreter, first)
    extremes = _extremes(interpreter, tensors)
    reference = _interpreter(float_model, 1, delegate=False)
    _run(reference, first)
    reference_extremes = _extremes(reference, tensors)
    outcome.delegate = "XNNPACK"
    if not _delegate_agrees(extremes, reference_extremes):
        interpreter, extremes, outcome.delegate = reference, reference_extremes, None
    for sample in iterator:
        _run(interpreter, sample)
        seen = _extremes(interpreter, tensors)
        extremes[:, 0] = np.minimum(extremes[:, 0], seen[:, 0])
        extremes[:, 1] = np.maximum(extremes[:, 1], seen[:, 1])
    graph = model.subgraphs[0]
    if not np.isfinite(extremes).all():
        index = tensors[int(np.flatnonzero(~np.isfinite(extremes).all(axis=1))[0])]
        name = graph.tensors[index].name.decode(errors="replace")
        raise LiteRTCannotCalibrate(f"tensor {name!r} has no finite range on the calibration "
                                    "samples")
    # TF's calibrator starts each max at FLT_MIN (the smallest positive float), so a tensor
    # of zeros (or of negative numbers) gets a max of FLT_MIN, never 0: the same here, so that
    # the quantizer gets the ranges TF's calibrator would give it.
    extremes[:, 1] = np.maximum(extremes[:, 1], np.finfo(np.float32).tiny)
    for index, (low, high) in zip(tensors, extremes, strict=True):
        quantization = graph.tensors[index].quantization
        quantization.min = np.asarray([low], dtype=np.float32)
        quantization.max = np.asarray([high], dtype=np.float32)
    from tensorflow.lite.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@contextmanager
def calibrating_with_litert(threads: int) -> Iterator[Outcome]:
    """Inside: TF converter int8 conversions take their calibrated ranges from LiteRT
    (:func:`litert_ranges`), or calibrate as before and say why in the yielded outcome (the
    calibrator then sees the first sample twice: min/max are unchanged by that)."""
    outcome = Outcome()

    def wrap(original: calibration_share.Calibrate) -> calibration_share.Calibrate:
        def calibrate(self: Any, dataset_gen: Callable[[], Iterator[Any]]) -> bytes:
            calibrated: bytes = original(self, lambda: itertools.islice(dataset_gen(), 1))
            try:
                # the float model the converter handed its calibrator (kept by the calibrator)
                result = litert_ranges(bytes(self._model_content), calibrated, dataset_gen(),
                                       threads, outcome)
            except LiteRTCannotCalibrate as reason:
                outcome.calibrated_by, outcome.fallback_reason = CALIBRATED_BY_TF, str(reason)
                outcome.delegate = None
                full: bytes = original(self, dataset_gen)
                return full
            outcome.calibrated_by = CALIBRATED_BY_LITERT
            return result
        return calibrate

    with calibration_share.calibrate_wrapped(wrap):
        yield outcome
