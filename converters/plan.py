"""The build graph: which stages a model needs for the requested targets, and their keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from converters import cache, report
from converters.config import ConvertConfig, Quantization, Target, model_stem
from converters.fsutil import sha256_tree
from converters.runners import StageRunner
from converters.stages import data, export, reference
from converters.stages.base import StageSpec
from converters.targets.edgetpu import stages as edgetpu
from converters.targets.onnx import export as onnx
from converters.targets.tensorrt import stages as tensorrt

TFLITE_IMAGE = "tflite"
EDGETPU_IMAGE = "edgetpu"
TENSORRT_IMAGE = "tensorrt"
HOST = "host"  # stages that only read JSON records run in the orchestrating process
TF_TOOLS = ("tensorflow", "keras", "numpy")
# What the validate stage runs each target's artifact with (shown in the report).
VALIDATION_RUNTIMES = {
    "tflite": "ai-edge-litert",
    "edgetpu": "ai-edge-litert on the CPU (the int8 model before Edge TPU compilation)",
    "onnx": "onnxruntime (CPU)",
}
LITERT_TOOLS = ("ai-edge-litert", "numpy")
ONNX_TOOLS = ("tensorflow", "tf2onnx", "onnx", "onnxruntime", "numpy")
ONNXRUNTIME_TOOLS = ("onnxruntime", "numpy")


@dataclass(frozen=True)
class ModelPlan:
    """All stages of one model, in dependency order, with their keys."""

    stem: str
    model_path: Path
    dataset_dir: Path
    build_dir: Path
    stages: tuple[StageSpec, ...]
    keys: dict[str, str]
    environments: dict[str, dict[str, str]]
    input_hashes: dict[str, str]
    threads: int

    def stage(self, name: str) -> StageSpec:
        return next(spec for spec in self.stages if spec.name == name)

    def dep_keys(self, spec: StageSpec) -> dict[str, str]:
        """The keys of ``spec``'s upstream stages (recorded in its stamp)."""
        return {name: self.keys[name] for name in spec.deps}


def tflite_artifact(stem: str, mode: Quantization) -> str:
    return f"tflite/{stem}_{mode.value}.tflite"


def validation_record(target: str, variant: str) -> str:
    return f"validation/{target}_{variant}.json"


def model_stages(config: ConvertConfig, stem: str) -> list[StageSpec]:
    model_params = {
        "unsafe": config.unsafe,
        "input_shape": list(config.input_shape) if config.input_shape else None,
    }
    timing = {"threads": config.threads, "latency_runs": config.latency_runs}
    stages = [
        StageSpec("export", "export", TFLITE_IMAGE, model_params, inputs=("model",),
                  outputs=(export.SAVED_MODEL, export.MODEL_INFO), tools=TF_TOOLS),
        StageSpec("data", "data", TFLITE_IMAGE,
                  {"preprocessing": config.dataset.preprocessing.as_dict(),
                   "calibration_size": config.dataset.calibration_size,
                   "validation_size": config.dataset.validation_size,
                   "seed": config.dataset.seed,
                   "allow_class_mismatch": config.allow_class_mismatch},
                  inputs=("dataset",), deps=("export",), outputs=data.OUTPUTS,
                  tools=("pillow", "numpy")),
        StageSpec("reference", "reference", TFLITE_IMAGE, {**model_params, **timing},
                  inputs=("model",), deps=("export", "data"),
                  outputs=(reference.OUTPUTS, reference.SUMMARY), tools=TF_TOOLS),
    ]
    if Target.TFLITE in config.targets:
        for mode in config.quantizations:
            stages += tflite_stages(config, f"tflite-{mode.value}", mode, tflite_artifact(stem, mode),
                                    "tflite", timing)
    if Target.EDGETPU in config.targets:
        stages += edgetpu_stages(config, stem, timing)
    if Target.ONNX in config.targets or Target.TENSORRT in config.targets:
        stages += onnx_stages(config, stem, timing)
    if Target.TENSORRT in config.targets:
        stages += tensorrt_stages(config, stem)
    records = [spec.outputs[0] for spec in stages if spec.kind == "validate"]
    report_params: dict[str, object] = {"records": records,
                                        "max_accuracy_drop": config.max_accuracy_drop}
    if Target.EDGETPU in config.targets:
        report_params["edgetpu"] = {"precheck": edgetpu.precheck_record(stem),
                                    "compile": edgetpu.COMPILE_RECORD,
                                    **edgetpu.split_report_params(stem, config.edgetpu_split)}
    report_params["tensorrt"] = [spec.params["record"] for spec in stages
                                 if spec.kind == "tensorrt-engine"]
    stages.append(StageSpec(
        "report", "report", HOST, report_params,
        inputs=("model", "dataset"), deps=tuple(spec.name for spec in stages),
        outputs=report.OUTPUTS, tools=("matplotlib",)))
    return stages


def tflite_stages(config: ConvertConfig, name: str, mode: Quantization, artifact: str,
                  target: str, timing: dict[str, int], batch_size: int | None = None,
                  ) -> list[StageSpec]:
    """Convert to one TFLite mode, then validate the artifact (one group of stages)."""
    params: dict[str, object] = {
        "mode": mode.value,
        "allow_flex": config.allow_flex and mode is not Quantization.INT8,
        "artifact": artifact,
        "info": artifact.removesuffix(".tflite") + ".json",
        "batch_size": batch_size,
    }
    deps: tuple[str, ...] = ("export",)
    if mode is Quantization.INT8:
        params |= {"io_dtype": config.io_dtype.value,
                   "allow_float_fallback": config.allow_float_fallback}
        deps = ("export", "data")
    group = name.removeprefix("tflite-")
    return [
        StageSpec(name, "tflite", TFLITE_IMAGE, params, deps=deps,
                  outputs=(artifact, str(params["info"])), tools=TF_TOOLS, group=group),
        validation_stage(name, target, mode.value, artifact, timing, LITERT_TOOLS, group),
    ]


def validation_stage(converted_by: str, target: str, variant: str, artifact: str,
                     timing: dict[str, int], tools: tuple[str, ...], group: str) -> StageSpec:
    """Run ``artifact`` on the validation split against the Keras outputs."""
    record = validation_record(target, variant)
    return StageSpec(f"validate-{target}-{variant}", "validate", TFLITE_IMAGE,
                     {"target": target, "variant": variant, "artifact": artifact,
                      "output": record, "runtime": VALIDATION_RUNTIMES[target], **timing},
                     deps=(converted_by, "data", "reference"), outputs=(record,), tools=tools,
                     group=group)


def edgetpu_stages(config: ConvertConfig, stem: str, timing: dict[str, int]) -> list[StageSpec]:
    """Full int8 at batch 1 with static shapes, the pre-check, and the compiler (its own image)."""
    artifact = edgetpu.int8_artifact(stem)
    stages = tflite_stages(config, "edgetpu-int8", Quantization.INT8, artifact, "edgetpu", timing,
                           batch_size=1)
    precheck = edgetpu.precheck_record(stem)
    stages.append(StageSpec("edgetpu-check", "edgetpu-check", TFLITE_IMAGE,
                            {"artifact": artifact, "output": precheck},
                            deps=("edgetpu-int8",), outputs=(precheck,), tools=LITERT_TOOLS,
                            group="edgetpu-int8"))
    stages.append(StageSpec("edgetpu-compile", "edgetpu-compile", EDGETPU_IMAGE,
                            {"artifact": artifact, "options": config.edgetpu.as_dict(),
                             "output_dir": edgetpu.COMPILED_DIR, "record": edgetpu.COMPILE_RECORD,
                             "precheck": precheck},
                            deps=("edgetpu-int8",),
                            outputs=(edgetpu.COMPILED_DIR, edgetpu.COMPILE_RECORD),
                            tools=(edgetpu.COMPILER_TOOL,)))
    if config.edgetpu_split:
        compile_stage = stages.pop()
        stages += [edgetpu.split_stage(artifact), edgetpu.compile_after_split(compile_stage, stem)]
    return stages


def onnx_stages(config: ConvertConfig, stem: str, timing: dict[str, int]) -> list[StageSpec]:
    """fp32 ONNX export, and the int8 Q/DQ model when int8 is asked for (or TensorRT int8)."""
    fp32 = onnx.onnx_artifact(stem, "fp32")
    fp32_info = fp32.removesuffix(".onnx") + ".json"
    stages = [
        StageSpec("onnx-fp32", "onnx-export", TFLITE_IMAGE,
                  {"opset": config.onnx_opset, "artifact": fp32, "info": fp32_info},
                  deps=("export",), outputs=(fp32, fp32_info), tools=ONNX_TOOLS, group="onnx-fp32"),
        validation_stage("onnx-fp32", "onnx", "fp32", fp32, timing, ONNXRUNTIME_TOOLS, "onnx-fp32"),
    ]
    if Quantization.INT8 in config.quantizations:
        int8 = onnx.onnx_artifact(stem, "int8")
        int8_info = int8.removesuffix(".onnx") + ".json"
        calibration = onnx.calibration_record(stem)
        stages += [
            StageSpec("onnx-int8", "onnx-quantize", TFLITE_IMAGE,
                      {"source": fp32, "artifact": int8, "info": int8_info,
                       "calibration": calibration, "method": "MinMax"},
                      deps=("onnx-fp32", "data"), outputs=(int8, int8_info, calibration),
                      tools=ONNX_TOOLS, group="onnx-int8"),
            validation_stage("onnx-int8", "onnx", "int8", int8, timing, ONNXRUNTIME_TOOLS,
                             "onnx-int8"),
        ]
    return stages


def tensorrt_stages(config: ConvertConfig, stem: str) -> list[StageSpec]:
    """One engine per precision asked for (fp32, fp16, int8 from the Q/DQ model)."""
    stages = []
    for mode in config.quantizations:
        if mode is Quantization.DYNAMIC:
            continue  # no TensorRT counterpart of TFLite's hybrid kernels
        source = "int8" if mode is Quantization.INT8 else "fp32"  # the Q/DQ model for int8
        engine = tensorrt.engine_artifact(stem, mode.value)
        engine_dir = engine.rsplit("/", 1)[0]
        record = tensorrt.engine_record(stem, mode.value)
        stages.append(StageSpec(
            f"tensorrt-{mode.value}", "tensorrt-engine", TENSORRT_IMAGE,
            {"precision": mode.value, "source": onnx.onnx_artifact(stem, source),
             "engine": engine, "engine_dir": engine_dir, "record": record,
             "batch": config.batch.as_dict(), "workspace_bytes": config.workspace_mb * 2**20,
             "latency_runs": config.latency_runs},
            deps=(f"onnx-{source}", "data", "reference"),
            outputs=(engine_dir, record), tools=("tensorrt", "cuda-python")))
    return stages


def stage_images(config: ConvertConfig) -> set[str]:
    """The images whose stages a build with ``config`` runs (the same for every model)."""
    return {spec.image for spec in model_stages(config, "model")}


def plan_model(config: ConvertConfig, model_path: Path, runners: Mapping[str, StageRunner],
               dataset_hash: str | None = None) -> ModelPlan:
    """Stages and keys of one model; pass ``dataset_hash`` to hash a shared dataset only once.

    ``runners`` maps each image to the runner of its stages (its environment enters the keys).
    """
    stem = model_stem(model_path)
    stages = model_stages(config, stem)
    input_hashes = {"model": sha256_tree(model_path),
                    "dataset": dataset_hash or sha256_tree(config.dataset.path)}
    keys: dict[str, str] = {}
    environments: dict[str, dict[str, str]] = {}
    build_dir = config.out / stem
    for index, spec in enumerate(stages):
        if spec.kind == "report":  # keys of every earlier stage are known now
            spec = stages[index] = with_earlier_records(spec, build_dir, stages, keys["reference"])
        environments[spec.name] = runners[spec.image].environment(spec)
        keys[spec.name] = cache.stage_key(spec, input_hashes, keys, environments[spec.name])
    return ModelPlan(stem, model_path, config.dataset.path, build_dir, tuple(stages), keys,
                     environments, input_hashes, config.threads)


def with_earlier_records(report_spec: StageSpec, build_dir: Path, stages: list[StageSpec],
                         reference_key: str) -> StageSpec:
    """The report stage, also listing validation records that earlier builds of this folder
    wrote for other targets and that are still valid (see cache.still_valid).

    The report is of the build folder, not of the last command: after ``--target edgetpu``
    the TFLite rows stay. Each record's stage key is in the params, so the report's key (and
    the report) changes whenever that set of records changes.
    """
    planned = {spec.name for spec in stages}
    earlier: dict[str, str] = {}
    for stamp_file in sorted((build_dir / cache.STAMP_DIR).glob("validate-*.json")):
        if stamp_file.stem in planned:
            continue
        stamp = cache.still_valid(build_dir, stamp_file.stem, reference_key)
        if stamp is not None and stamp.get("kind") == "validate":
            earlier |= dict.fromkeys(stamp["outputs"], stamp["key"])
    if not earlier:
        return report_spec
    params = {**report_spec.params,
              "records": [*report_spec.params["records"], *sorted(earlier)],
              "earlier_records": earlier}
    return replace(report_spec, params=params)
