"""Parameters of the tflite target's two stage kinds: ``tflite`` (a TF converter conversion of
the model) and ``tflite-quantize`` (ai-edge-quantizer from the fp32 artifact)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from converters.stages.export import ExportParams


@dataclass(frozen=True, kw_only=True)
class ModeParams(ExportParams):
    """One TFLite mode, whichever engine makes it (``tflite`` stages use these alone); the model
    is loaded as the export stage loads it."""

    mode: str  # a Quantization value
    allow_flex: bool
    artifact: str
    info: str  # the artifact's info JSON
    batch_size: int | None = None  # fixed batch (the Edge TPU's 1); None keeps it dynamic
    op_errors_against: str | None = None  # the fp32 artifact per-op errors are measured against
    io_dtype: str | None = None  # int8 modes: an IODType value
    allow_float_fallback: bool = False
    # TF converter int8: write the calibrated ranges here (for another conversion to reuse) ...
    ranges_out: str | None = None
    # ... or quantize with the ranges another conversion of this model recorded
    # (converters.targets.tflite.calibration_share)
    ranges_in: str | None = None
    # TF converter int8: LiteRT computes the calibration ranges
    # (converters.targets.tflite.litert_calibration); False: TF's calibrator does
    litert_calibration: bool = False
    # TF converter int8: quantize this fp32 artifact (the same float graph) instead of converting
    # the model again (converters.targets.tflite.int8_from_fp32)
    from_fp32: str | None = None


@dataclass(frozen=True, kw_only=True)
class QuantizeParams(ModeParams):
    """A mode derived from the fp32 artifact by ai-edge-quantizer."""

    source: str  # the fp32 artifact
    threads: int
    latency_runs: int
    io_type: Literal["float32", "int8"]  # the quantizer's I/O type


@dataclass(frozen=True, kw_only=True)
class MixedParams(QuantizeParams):
    """int8-mixed: the accuracy-aware search, bounded by ``--max-accuracy-drop``."""

    max_accuracy_drop: float
    # Automatic int8-mixed: search only when this validation record (plain int8's) shows a drop
    # over the bound; otherwise the stage is not needed. None: --quant int8-mixed, always.
    over_bound_of: str | None = None
