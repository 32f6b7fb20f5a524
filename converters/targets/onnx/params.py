"""What the ONNX stages are asked to do (their parameters and file names): what planning needs,
without the stages' libraries (tf2onnx, onnx, onnxruntime, numpy)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from converters.stages.base import StageParams


def onnx_artifact(stem: str, variant: str) -> str:
    return f"onnx/{stem}_{variant}.onnx"


def calibration_record(artifact: str) -> str:
    """The calibration ranges' file beside an int8 model (``x_int8.onnx`` →
    ``x_int8_calibration.json``)."""
    return artifact.removesuffix(".onnx") + "_calibration.json"


class Int8Scheme(str, Enum):
    """Which runtime a Q/DQ int8 model is made for (see converters.targets.onnx.quantize)."""

    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


@dataclass(frozen=True, kw_only=True)
class ExportParams(StageParams):
    opset: int
    artifact: str
    info: str


@dataclass(frozen=True, kw_only=True)
class QuantizeParams(StageParams):
    source: str  # the fp32 ONNX model
    artifact: str
    info: str
    calibration: str  # the calibration record (ranges)
    method: str  # onnxruntime's calibration method
    scheme: str  # an Int8Scheme value (a job file carries it as text)
