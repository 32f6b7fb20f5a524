"""Target ``onnx``: the exported model as fp32 ONNX (tf2onnx) and, with int8, a Q/DQ int8 model
for onnxruntime on any CPU (onnxruntime static quantization), each validated with onnxruntime
(its default session options). TensorRT's own Q/DQ model is planned by the tensorrt target
(converters/targets/onnx/quantize.py says why they differ)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from converters.config import Quantization
from converters.errors import ConfigError
from converters.stages.base import StageSpec
from converters.targets.base import CORE_IMAGE, ArtifactDescription, BundleHooks, PlanContext, Target
from converters.targets.onnx import settings
from converters.targets.onnx.params import (
    ExportParams,
    Int8Scheme,
    QuantizeParams,
    calibration_record,
    onnx_artifact,
)
from converters.targets.onnx.settings import OnnxConfig

if TYPE_CHECKING:
    from converters.validation.runtime import Runtime

ONNX_TOOLS = ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "numpy")
ONNXRUNTIME_TOOLS = ("onnxruntime", "numpy")
VALIDATION_RUNTIME = "onnxruntime (CPU, default session options)"


def plan(context: PlanContext) -> list[StageSpec]:
    """The model as a SavedModel (what tf2onnx converts), fp32 ONNX, and the int8 Q/DQ model
    when int8 is asked for."""
    stem = context.stem
    config = context.config
    fp32 = onnx_artifact(stem, "fp32")
    fp32_info = fp32.removesuffix(".onnx") + ".json"
    stages = [
        context.saved_model_stage(group="onnx-fp32"),
        StageSpec("onnx-fp32", "onnx-export", CORE_IMAGE,
                  ExportParams(opset=config.section(settings.NAME, OnnxConfig).opset,
                               artifact=fp32, info=fp32_info),
                  deps=("export", "saved-model", "data"), outputs=(fp32, fp32_info), tools=ONNX_TOOLS,
                  group="onnx-fp32"),
        context.validation_stage("onnx-fp32", "onnx", "fp32", fp32, VALIDATION_RUNTIME,
                                 ONNXRUNTIME_TOOLS, "onnx-fp32"),
    ]
    if Quantization.INT8 in config.quantizations:
        int8 = onnx_artifact(stem, "int8")
        int8_info = int8.removesuffix(".onnx") + ".json"
        calibration = calibration_record(int8)
        stages += [
            StageSpec("onnx-int8", "onnx-quantize", CORE_IMAGE,
                      QuantizeParams(source=fp32, artifact=int8, info=int8_info,
                                     calibration=calibration, method="MinMax",
                                     scheme=Int8Scheme.ONNXRUNTIME),
                      deps=("onnx-fp32", "data"), outputs=(int8, int8_info, calibration),
                      tools=ONNX_TOOLS, group="onnx-int8"),
            context.validation_stage("onnx-int8", "onnx", "int8", int8, VALIDATION_RUNTIME,
                                     ONNXRUNTIME_TOOLS, "onnx-int8"),
        ]
    return stages


def open_runtime(path: Path, threads: int, device: str | None) -> Runtime:
    from converters.targets.onnx.runtime import OnnxRuntime

    if device:
        raise ConfigError(f"--device applies to Edge TPU artifacts, not {path.name}")
    return OnnxRuntime(path, threads)


def describe(path: Path) -> ArtifactDescription | None:
    from converters.targets.onnx.metadata import read_description

    return read_description(path)


TARGET = Target(
    name="onnx",
    plan=plan,
    stage_functions={"onnx-export": "converters.targets.onnx.export:export_onnx",
                     "onnx-quantize": "converters.targets.onnx.quantize:quantize_onnx"},
    bundle=BundleHooks(requirements=("onnxruntime", "numpy", "pillow"), runtime="onnxruntime",
                       device_runner="converters.targets.onnx.device_runner",
                       images=(CORE_IMAGE,)),
    artifact_suffixes=(".onnx",),
    runtime=open_runtime,
    describe=describe,
    settings=settings.SETTINGS,
    config_section=settings.section,
)

