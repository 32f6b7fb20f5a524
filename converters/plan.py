"""The build graph: which stages a model needs for the requested targets, and their keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from converters import cache, report
from converters.config import ConvertConfig, Quantization, model_stem
from converters.fsutil import sha256_tree
from converters.runners import StageRunner
from converters.stages import data, export, reference
from converters.stages.base import StageSpec

TFLITE_IMAGE = "tflite"
HOST = "host"  # stages that only read JSON records run in the orchestrating process
TF_TOOLS = ("tensorflow", "keras", "numpy")
LITERT_TOOLS = ("ai-edge-litert", "numpy")


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
                   "seed": config.dataset.seed},
                  inputs=("dataset",), deps=("export",), outputs=data.OUTPUTS,
                  tools=("pillow", "numpy")),
        StageSpec("reference", "reference", TFLITE_IMAGE, {**model_params, **timing},
                  inputs=("model",), deps=("export", "data"),
                  outputs=(reference.OUTPUTS, reference.SUMMARY), tools=TF_TOOLS),
    ]
    for mode in config.quantizations:
        artifact = tflite_artifact(stem, mode)
        params: dict[str, object] = {
            "mode": mode.value,
            "allow_flex": config.allow_flex and mode is not Quantization.INT8,
            "artifact": artifact,
            "info": artifact.removesuffix(".tflite") + ".json",
        }
        deps: tuple[str, ...] = ("export",)
        if mode is Quantization.INT8:
            params |= {"io_dtype": config.io_dtype.value,
                       "allow_float_fallback": config.allow_float_fallback}
            deps = ("export", "data")
        stages.append(StageSpec(f"tflite-{mode.value}", "tflite", TFLITE_IMAGE, params, deps=deps,
                                outputs=(artifact, str(params["info"])), tools=TF_TOOLS,
                                group=mode.value))
        record = validation_record("tflite", mode.value)
        stages.append(StageSpec(
            f"validate-tflite-{mode.value}", "validate", TFLITE_IMAGE,
            {"target": "tflite", "variant": mode.value, "artifact": artifact, "output": record,
             **timing},
            deps=(f"tflite-{mode.value}", "data", "reference"), outputs=(record,),
            tools=LITERT_TOOLS, group=mode.value))
    records = [spec.outputs[0] for spec in stages if spec.kind == "validate"]
    stages.append(StageSpec(
        "report", "report", HOST,
        {"records": records, "max_accuracy_drop": config.max_accuracy_drop},
        inputs=("model", "dataset"), deps=tuple(spec.name for spec in stages),
        outputs=report.OUTPUTS, tools=("matplotlib",)))
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
    for spec in stages:
        environments[spec.name] = runners[spec.image].environment(spec)
        keys[spec.name] = cache.stage_key(spec, input_hashes, keys, environments[spec.name])
    return ModelPlan(stem, model_path, config.dataset.path, config.out / stem, tuple(stages), keys,
                     environments, input_hashes, config.threads)
