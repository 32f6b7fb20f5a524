"""Target ``tensorrt``: one engine per precision (fp32, fp16, int8 from its own Q/DQ ONNX model),
built and validated in the NGC TensorRT image on an NVIDIA GPU. The int8 Q/DQ model is made and
checked here too, in the core image: quantized for TensorRT (converters/targets/onnx/quantize.py)
and validated in onnxruntime with TensorRT's arithmetic (graph optimizations off)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.config import Quantization
from converters.errors import BundleError, ToolMissingError
from converters.fsutil import read_json
from converters.image_definition import ImageDefinition
from converters.stages.base import StageSpec
from converters.targets.base import (
    CORE_IMAGE,
    ArtifactDescription,
    BundleHooks,
    BundleRequest,
    PlanContext,
    ReportHooks,
    Target,
)
from converters.targets.onnx.params import (
    Int8Scheme,
    QuantizeParams,
    calibration_record,
    onnx_artifact,
)
from converters.targets.onnx.target import ONNX_TOOLS, ONNXRUNTIME_TOOLS
from converters.targets.tensorrt import params, report, settings
from converters.targets.tensorrt.settings import TensorRTConfig

if TYPE_CHECKING:
    from converters.validation.runtime import Runtime

IMAGE = "tensorrt"
RUNTIME = "tensorrt"
QDQ_VARIANT = "int8-tensorrt"  # the onnx artifact variant TensorRT's int8 engine is built from
QDQ_STAGE = f"onnx-{QDQ_VARIANT}"
QDQ_RUNTIME = "onnxruntime (CPU, graph optimizations off: Q/DQ computed as TensorRT does)"
STAND_IN = ("the TensorRT int8 engine: build the engine from it, or run it in onnxruntime only "
            "with graph optimizations off (the onnx int8 model is the one for onnxruntime)")


def qdq_stages(context: PlanContext) -> list[StageSpec]:
    """The Q/DQ int8 ONNX model quantized for TensorRT, and its validation in onnxruntime."""
    stem = context.stem
    qdq = onnx_artifact(stem, QDQ_VARIANT)
    info = qdq.removesuffix(".onnx") + ".json"
    calibration = calibration_record(qdq)
    return [
        StageSpec(QDQ_STAGE, "onnx-quantize", CORE_IMAGE,
                  QuantizeParams(source=onnx_artifact(stem, "fp32"), artifact=qdq, info=info,
                                 calibration=calibration, method="MinMax",
                                 scheme=Int8Scheme.TENSORRT),
                  deps=("onnx-fp32", "data"), outputs=(qdq, info, calibration),
                  tools=ONNX_TOOLS, group=QDQ_STAGE),
        context.validation_stage(QDQ_STAGE, "onnx", QDQ_VARIANT, qdq, QDQ_RUNTIME,
                                 ONNXRUNTIME_TOOLS, QDQ_STAGE, stand_in_for=STAND_IN),
    ]


def plan(context: PlanContext) -> list[StageSpec]:
    """One engine per precision asked for, each validated in the tensorrt image (where the
    engine can run); dynamic has no TensorRT counterpart."""
    config, stem = context.config, context.stem
    section = config.section(settings.NAME, TensorRTConfig)
    planned: list[StageSpec] = (qdq_stages(context) if Quantization.INT8 in config.quantizations
                                else [])
    for mode in config.quantizations:
        if mode in (Quantization.DYNAMIC, Quantization.INT8_MIXED):
            continue  # no TensorRT counterpart of TFLite's hybrid kernels or per-op mix
        source = QDQ_VARIANT if mode is Quantization.INT8 else "fp32"  # the Q/DQ model for int8
        name = f"tensorrt-{mode.value}"
        engine = params.engine_artifact(stem, mode.value)
        engine_dir = engine.rsplit("/", 1)[0]
        record = params.engine_record(stem, mode.value)
        validation = context.validation_stage(name, "tensorrt", mode.value, engine, RUNTIME,
                                              ("tensorrt", "cuda-python", "numpy"), name,
                                              image=IMAGE)
        planned += [
            StageSpec(name, "tensorrt-engine", IMAGE,
                      params.EngineParams(
                          precision=mode.value, source=onnx_artifact(stem, source),
                          engine=engine, engine_dir=engine_dir, record=record,
                          validation=validation.outputs[0], batch=section.batch.as_dict(),
                          workspace_bytes=section.workspace_mb * 2**20,
                          latency_runs=config.latency_runs),
                      deps=(f"onnx-{source}", "data"), outputs=(engine_dir, record),
                      tools=("tensorrt", "cuda-python"), group=name),
            validation,
        ]
    return planned


def report_params(context: PlanContext, planned: list[StageSpec]) -> list[str]:
    return [spec.params.record for spec in planned if isinstance(spec.params, params.EngineParams)]


def select(request: BundleRequest, built: dict[str, Any]) -> tuple[list[Path], dict[str, Any]]:
    engine = next((e for e in built.get("tensorrt") or [] if e["precision"] == request.variant),
                  None)
    if engine is None or not engine["ran"]:
        why = engine["reason"] if engine else "it was not asked for (--target tensorrt)"
        raise BundleError(f"no {request.variant} TensorRT engine in {request.build_dir}: {why}")
    path = request.build_dir / engine["engine"]
    return [path, path.with_suffix(".json")], {**engine, "target": "tensorrt",
                                               "variant": request.variant,
                                               "path": engine["engine"]}


def readme(request: BundleRequest, built: dict[str, Any]) -> list[str]:
    return ["", "TensorRT itself is not in `wheels/`: the device's JetPack (or the NGC image) "
            "provides it. The engine runs only with the TensorRT version and GPU architecture "
            "named in `artifacts/*.json`."]


def describe(path: Path) -> ArtifactDescription | None:
    """The class names and image normalization an engine's sidecar JSON keeps for it."""
    from converters.targets.onnx import metadata

    sidecar = path.with_suffix(".json")
    return metadata.description_of(read_json(sidecar)) if sidecar.is_file() else None


def open_runtime(path: Path, threads: int, device: str | None) -> Runtime:
    from converters.targets.tensorrt.engine import EngineRuntime, tensorrt_problem

    if (problem := tensorrt_problem()) is not None:
        raise ToolMissingError(f"cannot run {path}: {problem}; a TensorRT engine runs only with "
                               "TensorRT on an NVIDIA GPU (run the .onnx instead)")
    return EngineRuntime.from_file(path)


TARGET = Target(
    name="tensorrt",
    plan=plan,
    requires=("onnx",),
    stage_functions={"tensorrt-engine": "converters.targets.tensorrt.stages"},
    images=(ImageDefinition(
        IMAGE, "docker/tensorrt.Dockerfile", gpus=True,
        not_bootstrappable="its base is NVIDIA's NGC TensorRT image (TensorRT and CUDA come with "
                           "it): build it with --base pull on a host that reaches nvcr.io (`docker "
                           "login nvcr.io`), then move it with docker save / docker load"),),
    report=ReportHooks(params=report_params, section=report.section, empty=[],
                       markdown=report.markdown, html=report.html_section,
                       summary=lambda engines: [f"TensorRT: {line}"
                                                for line in report.engine_lines(engines)]),
    bundle=BundleHooks(requirements=("numpy", "pillow", "cuda-python"), runtime="tensorrt",
                       device_runner="converters.targets.tensorrt.device_runner",
                       images=(CORE_IMAGE, IMAGE), select=select, readme=readme,
                       device_needs="an NVIDIA GPU with TensorRT"),
    artifact_suffixes=(".engine",),
    runtime=open_runtime,
    describe=describe,
    settings=settings.SETTINGS,
    config_section=settings.section,
)
