"""Target ``tflite``: the model converted to fp32 TFLite, and fp16, dynamic-range, int8
and int8-mixed made from it (ai-edge-quantizer) or converted (TF converter), each validated
with LiteRT."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.config import ConvertConfig, IODType, QuantEngine, Quantization
from converters.errors import ConfigError
from converters.stages.base import StageContext, StageSpec
from converters.targets.base import (
    CORE_IMAGE,
    TF_TOOLS,
    VALIDATION_RECORD,
    ArtifactDescription,
    BundleHooks,
    ClientCheck,
    PlanContext,
    Target,
)
from converters.targets.tflite import engine_choice
from converters.targets.tflite.params import MixedParams, ModeParams, QuantizeParams

if TYPE_CHECKING:
    from converters.validation.runtime import Runtime

LITERT_TOOLS = ("ai-edge-litert", "numpy")
QUANTIZER_TOOLS = ("ai-edge-quantizer", "ai-edge-litert", "numpy")
VALIDATION_RUNTIME = "ai-edge-litert"
FP32_STAGE = "tflite-fp32"  # the conversion every ai-edge-quantizer mode is derived from
INT8_STAGE = "tflite-int8"  # records the int8 calibration the Edge TPU's int8 reuses


def artifact(stem: str, mode: Quantization) -> str:
    return f"tflite/{stem}_{mode.value}.tflite"


def int8_ranges(context: PlanContext) -> str | None:
    """Where the tflite target's int8 conversion records its calibrated ranges for the Edge TPU's
    batch-1 int8 to reuse (:mod:`calibration_share`): when both targets convert int8 with the TF
    converter from the same export and calibration images; else None."""
    config = context.config
    if not {"tflite", "edgetpu"} <= set(config.targets) or Quantization.INT8 not in config.quantizations:
        return None
    request = engine_choice.ModeRequest(Quantization.INT8, config.io_dtype,
                                        config.allow_float_fallback, config.allow_flex,
                                        fixed_batch=False)
    if engine_choice.engine_for(request, config.quant_engine) != engine_choice.TF_CONVERTER:
        return None
    return artifact(context.stem, Quantization.INT8).removesuffix(".tflite") + ".ranges.json"


def conversion_stages(context: PlanContext, name: str, mode: Quantization, path: str,
                      target: str, runtime: str, batch_size: int | None = None,
                      ranges_out: str | None = None, ranges_in: str | None = None,
                      over_bound_of: str | None = None) -> list[StageSpec]:
    """Make one TFLite mode, then validate the artifact (one group of stages).

    The engine (:mod:`engine_choice`) decides the stage: a TF converter conversion of the
    model, or ai-edge-quantizer deriving the mode from the fp32 artifact (stage
    ``tflite-fp32``, which the tflite target plans whenever a mode needs it). Quantized modes of
    the tflite target also record their per-op error against that fp32 artifact. A TF converter
    int8 may record its calibrated ranges (``ranges_out``) or reuse another int8 conversion's
    (``ranges_in``, the stage that wrote them: ``INT8_STAGE``). An automatic int8-mixed runs
    only when plain int8's validation (``over_bound_of``) is over ``--max-accuracy-drop``.
    """
    config = context.config
    request = engine_choice.ModeRequest(mode, config.io_dtype, config.allow_float_fallback,
                                        config.allow_flex, fixed_batch=batch_size is not None)
    engine = engine_choice.engine_for(request, config.quant_engine)
    integer = mode in (Quantization.INT8, Quantization.INT8_MIXED)
    # The tflite target's int8 has the same float graph as its fp32 artifact (dynamic batch)
    from_fp32 = (mode is Quantization.INT8 and batch_size is None and target == "tflite"
                 and engine == engine_choice.TF_CONVERTER)
    # Per-op errors against the fp32 artifact, which the tflite target plans (the Edge TPU's
    # int8 gets them when both targets are built); it must run in LiteRT: no Flex ops.
    against = (artifact(context.stem, Quantization.FP32)
               if mode is not Quantization.FP32 and "tflite" in config.targets
               and not config.allow_flex else None)
    common = ModeParams(
        **context.model_loading, mode=mode.value, artifact=path, info=path.removesuffix(".tflite") + ".json",
        allow_flex=config.allow_flex and mode in (Quantization.FP32, Quantization.FP16,
                                                  Quantization.DYNAMIC),
        batch_size=batch_size, op_errors_against=against,
        io_dtype=config.io_dtype.value if integer else None,
        allow_float_fallback=config.allow_float_fallback if integer else False,
        ranges_out=ranges_out, ranges_in=ranges_in,
        litert_calibration=litert_calibrates(config, mode),
        from_fp32=artifact(context.stem, Quantization.FP32) if from_fp32 else None)
    # Quantized modes calibrate or measure on the data; every artifact's metadata reads it
    deps: tuple[str, ...] = ("data",)
    if ranges_in:
        deps += (INT8_STAGE,)
    if against or from_fp32:
        deps += (FP32_STAGE,)
    group = name.removeprefix("tflite-")
    outputs = (path, common.info, *([ranges_out] if ranges_out else []))
    if engine == engine_choice.TF_CONVERTER:
        stage = StageSpec(name, "tflite", CORE_IMAGE, common, inputs=("model",),
                          deps=("export", *deps), outputs=outputs, tools=TF_TOOLS, group=group,
                          optional_deps=(INT8_STAGE,) if ranges_in else ())
    else:
        mixed = mode is Quantization.INT8_MIXED
        integer_io = mode is Quantization.INT8 and config.io_dtype is IODType.INT8
        derived = {**common.as_dict(), "source": artifact(context.stem, Quantization.FP32),
                   "threads": config.threads, "latency_runs": config.latency_runs,
                   "io_type": "int8" if integer_io else "float32"}
        params: QuantizeParams = QuantizeParams(**derived)
        if mixed:  # float I/O: the search compares float outputs
            params = MixedParams(**{**derived, "io_dtype": "float32"},
                                 max_accuracy_drop=config.max_accuracy_drop,
                                 over_bound_of=over_bound_of)
            deps += ("reference", *([f"validate-{INT8_STAGE}"] if over_bound_of else []))
        stage = StageSpec(name, "tflite-quantize", CORE_IMAGE, params,
                          deps=tuple(dict.fromkeys((FP32_STAGE, *deps))), outputs=outputs,
                          tools=QUANTIZER_TOOLS, group=group)
    # The validation also runs MediaPipe (TARGET.client_check) when installed
    tools = LITERT_TOOLS + ("mediapipe",)
    return [stage, context.validation_stage(name, target, mode.value, path, runtime, tools, group)]


def plan(context: PlanContext) -> list[StageSpec]:
    """fp32 first (the source of the derived modes; validated only when asked for), then each
    other mode asked for, then the automatic int8-mixed (:func:`automatic_mixed`)."""
    modes = context.config.quantizations
    stages: list[StageSpec] = []
    for mode in (Quantization.FP32, *(m for m in modes if m is not Quantization.FP32)):
        planned = conversion_stages(context, f"tflite-{mode.value}", mode,
                                    artifact(context.stem, mode), "tflite", VALIDATION_RUNTIME,
                                    ranges_out=int8_ranges(context)
                                    if mode is Quantization.INT8 else None)
        stages += planned if mode in modes else planned[:1]
    if automatic_mixed(context.config):
        mixed = Quantization.INT8_MIXED
        stages += conversion_stages(context, f"tflite-{mixed.value}", mixed,
                                    artifact(context.stem, mixed), "tflite", VALIDATION_RUNTIME,
                                    over_bound_of=VALIDATION_RECORD.format(
                                        target="tflite", variant=Quantization.INT8.value))
    return stages


def litert_calibrates(config: ConvertConfig, mode: Quantization) -> bool:
    """A TF converter int8 takes its calibration ranges from LiteRT (:mod:`litert_calibration`)
    unless ``--quant-engine tflite-converter`` asks for the TF converter's own calibrator."""
    return mode is Quantization.INT8 and config.quant_engine is not QuantEngine.TFLITE_CONVERTER


def automatic_mixed(config: ConvertConfig) -> bool:
    """Plan int8-mixed behind plain int8 (it searches only if int8's drop is over the bound):
    int8 asked for without int8-mixed, and an engine choice that lets ai-edge-quantizer make it
    (not the TF converter alone; no Flex ops in the fp32 model)."""
    modes = config.quantizations
    return (Quantization.INT8 in modes and Quantization.INT8_MIXED not in modes
            and config.quant_engine is not QuantEngine.TFLITE_CONVERTER and not config.allow_flex)


def check_config(config: ConvertConfig) -> None:
    """Refuse up front a mode the chosen --quant-engine cannot make."""
    if "tflite" in config.targets:
        for mode in config.quantizations:
            engine_choice.engine_for(engine_choice.ModeRequest(
                mode, config.io_dtype, config.allow_float_fallback, config.allow_flex,
                fixed_batch=False), config.quant_engine)


def mediapipe_check(context: StageContext, artifact: Path, litert: dict[str, Any]) -> dict[str, Any]:
    """The artifact in MediaPipe's ImageClassifier (imported here: the check imports mediapipe)."""
    from converters.targets.tflite import mediapipe_check as check

    return check.check(context, artifact, litert)


def open_runtime(path: Path, threads: int, device: str | None) -> Runtime:
    from converters.validation.compare import TFLiteRuntime

    if device:
        raise ConfigError(f"--device applies to Edge TPU artifacts, not {path.name}")
    return TFLiteRuntime(path, threads=threads)


def describe(path: Path) -> ArtifactDescription | None:
    from converters.targets.tflite.describe import read_description

    return read_description(path)


TARGET = Target(
    name="tflite",
    plan=plan,
    check_config=check_config,
    stage_functions={"tflite": "converters.targets.tflite.convert",
                     "tflite-quantize": "converters.targets.tflite.quantize"},
    bundle=BundleHooks(requirements=("ai-edge-litert", "numpy", "pillow"), runtime="litert",
                       device_runner="converters.targets.tflite.device_runner",
                       images=(CORE_IMAGE,)),
    artifact_suffixes=(".tflite",),
    runtime=open_runtime,
    describe=describe,
    client_check=ClientCheck(key="mediapipe", title="MediaPipe ImageClassifier (real client)",
                             run=mediapipe_check),
)

