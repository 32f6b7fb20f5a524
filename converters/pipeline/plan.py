"""The build graph: which stages a model needs for the requested targets, and their keys."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.cache import stage_cache
from converters.config import ConvertConfig, model_stem
from converters.fsutil import sha256_tree
from converters.reporting import report_params as report
from converters.runners import StageRunner
from converters.stages import data_params as data
from converters.stages import export
from converters.stages import reference_params as reference
from converters.stages.base import StageSpec
from converters.stages.device_run_params import DEVICE_RECORD, DeviceRunParams, device_slug
from converters.targets import CORE_IMAGE, PlanContext, planned
from converters.targets import get as get_target
from converters.targets.base import TF_TOOLS, ValidateParams

if TYPE_CHECKING:
    from converters.devices.probe import ProbeOutcome

HOST = "host"  # stages that only read JSON records run in the orchestrating process


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
    threads: int  # each stage process's TensorFlow threads (ConvertConfig.stage_threads)

    def stage(self, name: str) -> StageSpec:
        return next(spec for spec in self.stages if spec.name == name)

    def dep_keys(self, spec: StageSpec) -> dict[str, str]:
        """The keys of ``spec``'s upstream stages (recorded in its stamp)."""
        return {name: self.keys[name] for name in spec.deps}


def model_stages(config: ConvertConfig, stem: str,
                 devices: tuple[ProbeOutcome, ...] = ()) -> list[StageSpec]:
    """The shared stages, then each planned target's, then each artifact's run on each of
    ``devices``, then the report over all of them."""
    context = PlanContext(config, stem)
    stages = [
        StageSpec("export", "export", CORE_IMAGE, export.ExportParams(**context.model_loading),
                  inputs=("model",),
                  outputs=(export.MODEL_INFO,), tools=TF_TOOLS),
        StageSpec("data", "data", CORE_IMAGE,
                  data.DataParams(**context.model_loading,
                                  preprocessing=config.data_preprocessing().as_dict(),
                                  calibration_size=config.dataset.calibration_size,
                                  validation_size=config.dataset.validation_size,
                                  seed=config.dataset.seed,
                                  max_array_mb=config.dataset.max_array_mb,
                                  labels=list(config.dataset.labels) or None,
                                  task=config.task,
                                  allow_class_mismatch=config.allow_class_mismatch),
                  inputs=("model", "dataset"), deps=("export",), outputs=data.OUTPUTS,
                  tools=TF_TOOLS + ("pillow",)),
        StageSpec("reference", "reference", CORE_IMAGE,
                  reference.ReferenceParams(**context.model_loading,
                                            threads=config.threads,
                                            latency_runs=config.latency_runs, task=config.task),
                  inputs=("model",), deps=("export", "data"),
                  outputs=(reference.OUTPUTS, reference.SUMMARY), tools=TF_TOOLS),
    ]
    sections: dict[str, Any] = {}
    for target in planned(config.targets):
        own = [replace(spec, function=target.stage_functions.get(spec.kind, ""))
               for spec in target.plan(context)]
        stages += own
        if target.report is not None and target.name in config.targets:
            sections[target.name] = target.report.params(context, own)
    records = [spec.outputs[0] for spec in stages if spec.kind == "validate"]
    runs = device_stages(config, stages, devices)
    stages += runs
    stages.append(StageSpec(
        "report", "report", HOST,
        report.ReportParams(records=records, max_accuracy_drop=config.max_accuracy_drop,
                            max_relative_error=config.max_relative_error,
                            targets=sections, device_records=[spec.outputs[0] for spec in runs],
                            devices=[outcome.name for outcome in devices],
                            recommend_on=config.recommend_on),
        inputs=("model", "dataset"), deps=tuple(spec.name for spec in stages),
        outputs=report.OUTPUTS, tools=("matplotlib",)))
    return stages


def device_stages(config: ConvertConfig, stages: list[StageSpec],
                  devices: tuple[ProbeOutcome, ...]) -> list[StageSpec]:
    """A ``device-run`` stage per validated artifact and device (host stages: they only wait on
    the device). Artifacts that need more than a CPU (an Edge TPU, a GPU) and stand-ins are not
    measured there."""
    found = []
    for spec in stages:
        params = spec.params
        if spec.kind != "validate" or not isinstance(params, ValidateParams) or params.stand_in_for:
            continue
        hooks = get_target(params.target).bundle
        if hooks is None or hooks.device_needs is not None:
            continue
        for outcome in devices:
            slug = device_slug(outcome.name)
            record = DEVICE_RECORD.format(device=slug, target=params.target, variant=params.variant)
            found.append(StageSpec(
                f"device-{slug}-{params.target}-{params.variant}", "device-run", HOST,
                DeviceRunParams(device=outcome.name,
                                identity=outcome.facts.identity() if outcome.facts else None,
                                unavailable=outcome.problem, target=params.target,
                                variant=params.variant, artifact=params.artifact,
                                validation_record=params.output, output=record,
                                threads=device_threads(config, outcome),
                                runs=config.latency_runs,
                                timeout=config.device_timeout, cache_folder=config.device_cache),
                deps=(spec.name, "data", "reference"), outputs=(record,), tools=("numpy",)))
    return found


def device_threads(config: ConvertConfig, outcome: ProbeOutcome) -> int:
    """--threads when given, else every core of the device (as on the host)."""
    if config.device_threads is not None:
        return config.device_threads
    return (outcome.facts.cpus if outcome.facts else None) or 1


def stage_images(config: ConvertConfig) -> set[str]:
    """The images whose stages a build with ``config`` runs (the same for every model)."""
    return {spec.image for spec in model_stages(config, "model")}


def plan_model(config: ConvertConfig, model_path: Path, runners: Mapping[str, StageRunner],
               dataset_hash: str | None = None,
               devices: tuple[ProbeOutcome, ...] = ()) -> ModelPlan:
    """Stages and keys of one model; pass ``dataset_hash`` to hash a shared dataset only once.

    ``runners`` maps each image to the runner of its stages (its environment enters the keys);
    ``devices``: the --device devices as probed for this build.
    """
    stem = model_stem(model_path)
    stages = model_stages(config, stem, devices)
    input_hashes = {"model": sha256_tree(model_path),
                    "dataset": dataset_hash or sha256_tree(config.dataset.path)}
    keys: dict[str, str] = {}
    environments: dict[str, dict[str, str]] = {}
    build_dir = config.out / stem
    for index, spec in enumerate(stages):
        if spec.kind == "report":  # keys of every earlier stage are known now
            spec = stages[index] = with_earlier_records(spec, build_dir, stages, keys["reference"])
        environments[spec.name] = runners[spec.image].environment(spec)
        keys[spec.name] = stage_cache.stage_key(spec, input_hashes, keys, environments[spec.name])
    return ModelPlan(stem, model_path, config.dataset.path, build_dir, tuple(stages), keys,
                     environments, input_hashes, config.stage_threads())


def with_earlier_records(report_spec: StageSpec, build_dir: Path, stages: list[StageSpec],
                         reference_key: str) -> StageSpec:
    """The report stage, also listing validation records that earlier builds of this folder
    wrote for other targets and that are still valid (see stage_cache.still_valid), and the
    stages that made them.

    The report is of the build folder, not of the last command: after a build for another target
    the earlier rows stay. Each record's stage key is in the params, so the report's key (and
    the report) changes whenever that set of records changes.
    """
    planned = {spec.name for spec in stages}
    earlier: dict[str, str] = {}
    upstream: set[str] = set()  # the earlier records' stages and the stages they were built from

    def add_with_upstream(name: str) -> bool:
        """Add stage ``name`` and its upstream when they all still hold their outputs."""
        if name in planned or name in upstream:
            return True
        stamp = stage_cache.read_stamp(build_dir, name)
        if stamp is None or not stage_cache.outputs_intact(build_dir, stamp) \
                or not all([add_with_upstream(dep) for dep in stamp.get("deps", {})]):
            return False
        upstream.add(name)
        return True

    for stamp_file in sorted((build_dir / stage_cache.STAMP_DIR).glob("validate-*.json")):
        if stamp_file.stem in planned:
            continue
        stamp = stage_cache.still_valid(build_dir, stamp_file.stem, reference_key)
        if stamp is not None and stamp.get("kind") == "validate":
            earlier |= dict.fromkeys(stamp["outputs"], stamp["key"])
            add_with_upstream(stamp_file.stem)
    if not earlier:
        return report_spec
    params = report_spec.params
    assert isinstance(params, report.ReportParams)
    return replace(report_spec, params=replace(params, records=[*params.records, *sorted(earlier)],
                                               earlier_records=earlier,
                                               earlier_stages=sorted(upstream)))
