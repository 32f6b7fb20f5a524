"""Target ``edgetpu``: full int8 at batch 1 with static shapes, the op-mapping pre-check, the
optional head/tail split, and ``edgetpu_compiler`` in its own image."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from converters.config import ConvertConfig, IODType, Quantization
from converters.errors import BundleError, ConfigError
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
    ValidateParams,
)
from converters.targets.edgetpu import report, settings, stages
from converters.targets.edgetpu.runtime import EDGETPU_SUFFIX, open_runtime
from converters.targets.edgetpu.settings import EdgeTpuConfig
from converters.targets.tflite.target import LITERT_TOOLS, conversion_stages, int8_ranges

IMAGE = "edgetpu"
COMPILER_RESOURCE = "edgetpu_compiler"
VALIDATION_RUNTIME = "ai-edge-litert on the CPU (the int8 model before Edge TPU compilation)"
NOT_TIMED_ON_TPU = "timed on this host's CPU before Edge TPU compilation, not on an Edge TPU"


def plan(context: PlanContext) -> list[StageSpec]:
    config, stem = context.config, context.stem
    artifact = stages.int8_artifact(stem)
    planned = conversion_stages(context, "edgetpu-int8", Quantization.INT8, artifact, "edgetpu",
                                VALIDATION_RUNTIME, batch_size=1,
                                # the tflite target's int8 calibrates once for both
                                ranges_in=int8_ranges(context))
    # Its accuracy is the Edge TPU's (same integers), its CPU latency is not: no "fastest".
    planned = [replace(spec, params=replace(spec.params, latency_not_on_runtime=NOT_TIMED_ON_TPU))
               if isinstance(spec.params, ValidateParams) else spec for spec in planned]
    precheck = stages.precheck_record(stem)
    planned.append(StageSpec("edgetpu-check", "edgetpu-check", CORE_IMAGE,
                             stages.CheckParams(artifact=artifact, output=precheck),
                             deps=("edgetpu-int8",), outputs=(precheck,), tools=LITERT_TOOLS,
                             group="edgetpu-int8"))
    section = config.section(settings.NAME, EdgeTpuConfig)
    split = section.split
    compile_stage = StageSpec("edgetpu-compile", "edgetpu-compile", IMAGE,
                              stages.CompileParams(artifact=artifact,
                                                   options=section.compile.as_dict(),
                                                   output_dir=stages.COMPILED_DIR,
                                                   record=stages.COMPILE_RECORD,
                                                   precheck=precheck,
                                                   # the split's head is compiled too
                                                   split_record=stages.split_record(stem)
                                                   if split else None),
                              deps=("edgetpu-int8", "edgetpu-split") if split else ("edgetpu-int8",),
                              outputs=(stages.COMPILED_DIR, stages.COMPILE_RECORD),
                              tools=(stages.COMPILER_TOOL,))
    return [*planned, *([stages.split_stage(artifact)] if split else []), compile_stage]


def check_config(config: ConvertConfig) -> None:
    wanted = "edgetpu" in config.targets
    if wanted and config.io_dtype is IODType.FLOAT32:
        raise ConfigError("--target edgetpu needs integer input and output: pass --io-dtype "
                          "uint8 (what Coral's examples use) or int8, not float32")
    if config.section(settings.NAME, EdgeTpuConfig).split and not wanted:
        raise ConfigError("--edgetpu-split splits the Edge TPU model: add --target edgetpu")


def report_params(context: PlanContext, planned: list[StageSpec]) -> dict[str, str]:
    return {"precheck": stages.precheck_record(context.stem), "compile": stages.COMPILE_RECORD,
            **stages.split_report_params(
                context.stem, context.config.section(settings.NAME, EdgeTpuConfig).split)}


def problems(build_dir: Path, config: ConvertConfig) -> list[str]:
    return stages.build_problems(build_dir,
                                config.section(settings.NAME, EdgeTpuConfig).min_tpu_ops)


def select(request: BundleRequest, built: dict[str, Any]) -> tuple[list[Path], dict[str, Any]]:
    """The compiled model(s) (and with --edgetpu-split the CPU tail and the pair's record)."""
    build_dir = request.build_dir
    entry = next((a for a in built["artifacts"]
                  if a["target"] == "edgetpu" and a["variant"] == request.variant), None)
    if entry is None:
        raise BundleError(f"{build_dir} has no edgetpu {request.variant} artifact: run invoke "
                          "convert --target edgetpu first")
    edgetpu = built.get("edgetpu") or {}
    if not edgetpu.get("compiled"):
        raise BundleError(f"the Edge TPU compile did not run for {build_dir}: there is no "
                          f"*{EDGETPU_SUFFIX} to bundle. {edgetpu.get('not_run_reason', '')}")
    split = edgetpu.get("split") or {}
    pair = [build_dir / split[key] for key in ("record", "tail")] if split.get("split") else []
    return [build_dir / path for path in edgetpu["compiled_models"]] + pair, entry


def readme(request: BundleRequest, built: dict[str, Any]) -> list[str]:
    version = (built.get("edgetpu") or {}).get("runtime_version_needed")
    return ["", "## Edge TPU runtime", "",
            f"The compiled model needs Edge TPU runtime {version} or newer. Install "
            "`libedgetpu1-std` (or `libedgetpu1-max`, maximum frequency, runs hotter) from "
            "Coral's apt repository on a USB Accelerator host, or use the Dev Board's "
            "Mendel image, which includes it. `python run.py IMAGE --device usb` (or pci)."]


def facts(built: dict[str, Any]) -> dict[str, Any]:
    edgetpu = built.get("edgetpu") or {}
    return {"edgetpu_runtime_version_needed": edgetpu.get("runtime_version_needed")}


CORAL_UNREACHABLE = ("Coral's package repository (https://packages.cloud.google.com) is unreachable: "
                     "build the edgetpu image on an x86-64 host that reaches it (pass --ca-bundle "
                     "behind a TLS-intercepting proxy), then move it with docker save / docker load")

def describe(path: Path) -> ArtifactDescription | None:
    from converters.targets.tflite.describe import read_description

    return read_description(path)


TARGET = Target(
    name="edgetpu",
    plan=plan,
    stage_functions={"edgetpu-check": "converters.targets.edgetpu.stages:precheck",
                     "edgetpu-compile": "converters.targets.edgetpu.stages:compile_model",
                     "edgetpu-split": "converters.targets.edgetpu.stages:split"},
    # On Ray, compiles go to nodes started with this resource (they have the compiler or image).
    images=(ImageDefinition(
        IMAGE, "docker/edgetpu.Dockerfile", platform="linux/amd64",
        resources=((COMPILER_RESOURCE, 1),),
        # docker/edgetpu.Dockerfile exits 42 when Coral's package repository is out of reach.
        build_failures=tuple((marker, CORAL_UNREACHABLE) for marker in
                             ("exit code: 42", "coral's package repository"))),),
    check_config=check_config,
    report=ReportHooks(params=report_params, section=report.section, empty=None,
                       markdown=report.markdown, html=report.html_section,
                       summary=lambda section: [f"Edge TPU: {line}"
                                                for line in report.summary_lines(section)]),
    problems=problems,
    bundle=BundleHooks(requirements=("ai-edge-litert", "numpy", "pillow"), runtime="litert-edgetpu",
                       device_runner="converters.targets.tflite.device_runner",
                       images=(CORE_IMAGE, IMAGE), select=select, readme=readme, facts=facts,
                       device_needs="a Coral Edge TPU"),
    artifact_suffixes=(EDGETPU_SUFFIX, "_split.json"),
    runtime=open_runtime,
    describe=describe,
    tasks="converters.targets.edgetpu.tasks",
    settings=settings.SETTINGS,
    config_section=settings.section,
)
