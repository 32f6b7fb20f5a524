"""Target ``tflite``: the exported model converted to fp32, fp16, dynamic-range and int8 TFLite,
each validated with LiteRT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.config import Quantization
from converters.errors import ConfigError
from converters.stages.base import StageSpec
from converters.targets.base import CORE_IMAGE, TF_TOOLS, BundleHooks, PlanContext, Target

LITERT_TOOLS = ("ai-edge-litert", "numpy")
VALIDATION_RUNTIME = "ai-edge-litert"


def artifact(stem: str, mode: Quantization) -> str:
    return f"tflite/{stem}_{mode.value}.tflite"


def conversion_stages(context: PlanContext, name: str, mode: Quantization, path: str,
                      target: str, runtime: str, batch_size: int | None = None) -> list[StageSpec]:
    """Convert to one TFLite mode, then validate the artifact (one group of stages)."""
    config = context.config
    params: dict[str, object] = {
        "mode": mode.value,
        "allow_flex": config.allow_flex and mode is not Quantization.INT8,
        "artifact": path,
        "info": path.removesuffix(".tflite") + ".json",
        "batch_size": batch_size,
    }
    deps: tuple[str, ...] = ("export",)
    if mode is Quantization.INT8:
        params |= {"io_dtype": config.io_dtype.value,
                   "allow_float_fallback": config.allow_float_fallback}
        deps = ("export", "data")
    group = name.removeprefix("tflite-")
    return [
        StageSpec(name, "tflite", CORE_IMAGE, params, deps=deps,
                  outputs=(path, str(params["info"])), tools=TF_TOOLS, group=group),
        context.validation_stage(name, target, mode.value, path, runtime, LITERT_TOOLS, group),
    ]


def plan(context: PlanContext) -> list[StageSpec]:
    stages: list[StageSpec] = []
    for mode in context.config.quantizations:
        stages += conversion_stages(context, f"tflite-{mode.value}", mode,
                                    artifact(context.stem, mode), "tflite", VALIDATION_RUNTIME)
    return stages


def open_runtime(path: Path, threads: int, device: str | None) -> Any:
    from converters.validate import TFLiteRunner

    if device:
        raise ConfigError(f"--device applies to Edge TPU artifacts, not {path.name}")
    return TFLiteRunner(path, threads=threads)


TARGET = Target(
    name="tflite",
    plan=plan,
    stage_functions={"tflite": "converters.targets.tflite.convert"},
    bundle=BundleHooks(requirements=("ai-edge-litert", "numpy", "pillow"), runtime="litert",
                       images=(CORE_IMAGE,)),
    artifact_suffixes=(".tflite",),
    runtime=open_runtime,
)
