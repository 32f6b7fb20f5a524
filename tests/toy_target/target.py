"""``TARGET``: the toy target's plan, stage kind, runtime and bundle hook."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters.setting_kinds import TEXT, Setting
from converters.stages.base import StageSpec
from converters.targets import CORE_IMAGE, BundleHooks, PlanContext, Target
from converters.validation.runtime import Runtime
from tests.toy_target.stages import CopyParams

SUFFIX = "_copy.tflite"
NAME = "copy"
# The toy's own flag (--copy-note, invoke.yaml copy_note) and its section of the configuration.
SETTINGS = (Setting("copy_note", TEXT, "a copy", "what the copy's record says", targets=(NAME,)),)


@dataclass(frozen=True)
class CopyConfig:
    note: str = "a copy"


def section(get: Callable[[str], Any]) -> CopyConfig:
    return CopyConfig(note=get("copy_note"))


def plan(context: PlanContext) -> list[StageSpec]:
    artifact = f"copy/{context.stem}{SUFFIX}"
    info = artifact.removesuffix(".tflite") + ".json"
    source = f"tflite/{context.stem}_fp32.tflite"
    return [
        StageSpec("copy-fp32", "copy", CORE_IMAGE,
                  CopyParams(source=source, source_info=source.removesuffix(".tflite") + ".json",
                             artifact=artifact, info=info,
                             note=context.config.section(NAME, CopyConfig).note),
                  deps=("tflite-fp32",), outputs=(artifact, info), tools=()),
        context.validation_stage("copy-fp32", "copy", "fp32", artifact, "ai-edge-litert",
                                 ("ai-edge-litert",), "copy"),
    ]


def open_runtime(path: Path, threads: int, device: str | None) -> Runtime:
    from converters.validation.compare import TFLiteRuntime

    return TFLiteRuntime(path, threads=threads)


TARGET = Target(
    name="copy",
    plan=plan,
    stage_functions={"copy": "tests.toy_target.stages:copy"},
    requires=("tflite",),
    bundle=BundleHooks(requirements=("ai-edge-litert", "numpy", "pillow"), runtime="litert",
                       device_runner="converters.targets.tflite.device_runner",
                       images=(CORE_IMAGE,)),
    artifact_suffixes=(SUFFIX,),
    runtime=open_runtime,
    settings=SETTINGS,
    config_section=section,
)
