"""What a target is: the hooks shared code calls (planning, report, problems, bundles, infer).

A target package (``converters/targets/<name>/``) defines ``TARGET = Target(...)``; the
registry (:mod:`converters.targets`) lists them. Importing a target package is cheap: stage
functions are named as ``"module:function"`` strings and imported only when a stage runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from converters.image_definition import CORE_IMAGE, ImageDefinition
from converters.setting_kinds import Setting
from converters.stages.base import StageContext, StageParams, StageSpec

if TYPE_CHECKING:
    from converters.config import ConvertConfig
    from converters.validation.runtime import Runtime

__all__ = ["CORE_IMAGE", "ImageDefinition"]  # re-exported for the target packages


class BundleRequest(Protocol):
    """What a target's bundle hooks read of a bundle request (converters.bundles.bundle.BundleRequest)."""

    @property
    def build_dir(self) -> Path: ...

    @property
    def variant(self) -> str: ...

TF_TOOLS = ("tensorflow", "keras", "numpy")  # what a stage that loads the Keras model uses
VALIDATION_RECORD = "validation/{target}_{variant}.json"


@dataclass(frozen=True, kw_only=True)
class ValidateParams(StageParams):
    """The core ``validate`` stage's parameters (see :meth:`PlanContext.validation_stage`)."""

    target: str
    variant: str
    artifact: str  # the artifact to run, relative to the build folder
    output: str  # the validation record it writes
    runtime: str  # what runs it, as the report names it
    threads: int
    latency_runs: int
    # Set when the artifact is checked on behalf of another runtime's artifact (the TensorRT
    # engine's Q/DQ model): what it stands in for. Such an artifact is never recommended.
    stand_in_for: str | None = None
    # Set when the artifact's latency is not measured on the runtime it deploys with (the Edge
    # TPU's int8 before compilation, timed on the CPU): why. It does not compete for fastest.
    latency_not_on_runtime: str | None = None


@dataclass(frozen=True)
class PlanContext:
    """What a target's planner needs: the configuration and the model's name."""

    config: ConvertConfig
    stem: str

    @property
    def model_loading(self) -> dict[str, Any]:
        """How every stage that loads the model loads it (``--unsafe``, ``--input-shape``, an
        array dataset's sample shapes, ``--custom-objects``, a folded per-channel
        normalization): the fields of :class:`~converters.stages.export.ExportParams`, which
        their params extend."""
        shape = self.config.input_shape
        return {"unsafe": self.config.unsafe, "input_shape": list(shape) if shape else None,
                "data_shapes": self.data_shapes,
                "custom_objects": [file.as_dict() for file in self.config.custom_objects],
                "fold_normalization": self.config.folded_normalization()}

    @functools.cached_property
    def data_shapes(self) -> list[tuple[str, list[int]]]:
        """An array dataset's per-sample shapes by array name (headers only); [] otherwise."""
        from converters.inputs import arrays

        dataset = self.config.dataset
        if not arrays.is_array_dataset(dataset.path):
            return []
        return [(name, list(shape))
                for name, shape in arrays.sample_shapes(dataset.path, dataset.max_array_mb)]

    def saved_model_stage(self, group: str) -> StageSpec:
        """Stage ``saved-model``: the model as a SavedModel (``export.SAVED_MODEL``), for a
        target's stages that convert from one (they depend on ``saved-model``)."""
        from converters.stages import export  # (it imports the target registry)

        return StageSpec("saved-model", "saved-model", CORE_IMAGE,
                         export.ExportParams(**self.model_loading), inputs=("model",),
                         deps=("export",), outputs=(export.SAVED_MODEL,), tools=TF_TOOLS,
                         group=group)

    def validation_stage(self, converted_by: str, target: str, variant: str, artifact: str,
                         runtime: str, tools: tuple[str, ...], group: str,
                         image: str = CORE_IMAGE, stand_in_for: str | None = None) -> StageSpec:
        """Run ``artifact`` on the validation split against the Keras outputs (a core stage,
        run in ``image``: the core image unless the artifact's runtime lives elsewhere)."""
        record = VALIDATION_RECORD.format(target=target, variant=variant)
        return StageSpec(f"validate-{target}-{variant}", "validate", image,
                         ValidateParams(target=target, variant=variant, artifact=artifact,
                                        output=record, runtime=runtime,
                                        threads=self.config.threads,
                                        latency_runs=self.config.latency_runs,
                                        stand_in_for=stand_in_for),
                         deps=(converted_by, "data", "reference"), outputs=(record,),
                         tools=tools, group=group)


@dataclass(frozen=True)
class ReportHooks:
    """A target's own section of report.json (``report[target.name]``) and how it is shown."""

    params: Callable[[PlanContext, list[StageSpec]], Any]  # what the report stage reads
    section: Callable[[Path, Any], Any]  # the section, from the build folder and those params
    empty: Any  # the section when the target was not built
    markdown: Callable[[Any], list[str]]
    html: Callable[[Any], str]
    summary: Callable[[Any], list[str]]  # console lines


@dataclass(frozen=True)
class ClientCheck:
    """An artifact checked in a runtime apps deploy with (not only in our own harness), run by
    the validate stage after its own comparison. Its result is the validation record's (and
    report.json's artifact entry's) ``key``: ``ran``, and a ``summary`` phrase when it ran or a
    ``reason`` when it did not."""

    key: str  # e.g. "mediapipe"
    title: str  # how report.md names it
    # (stage context, artifact, the validation's metrics) → the record's entry
    run: Callable[[StageContext, Path, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class BundleHooks:
    """What a deployment bundle of this target carries and says."""

    requirements: tuple[str, ...]  # runtime distributions (pinned from constraints.txt)
    runtime: str  # bundle.json's "runtime": what run.py loads the artifact with
    # The module (dotted name) the bundle ships as device_runner.py: its make_runner(bundle,
    # artifact, device) runs the artifact on the device (standard library, numpy and the runtime).
    device_runner: str
    images: tuple[str, ...]  # the stage images --with-images saves
    # The files to ship and the report entry describing them; None: the artifact of
    # report["artifacts"] with this target and variant.
    select: Callable[[BundleRequest, dict[str, Any]], tuple[list[Path], dict[str, Any]]] | None = None
    readme: Callable[[BundleRequest, dict[str, Any]], list[str]] = lambda request, report: []
    facts: Callable[[dict[str, Any]], dict[str, Any]] = lambda report: {}  # extra bundle.json keys
    # What a device needs beyond a CPU and Python to run it (an Edge TPU, an NVIDIA GPU): such an
    # artifact is not measured on --device; None: any Linux device with Python 3 runs it.
    device_needs: str | None = None


@dataclass(frozen=True)
class ArtifactDescription:
    """What an artifact says about itself in its own metadata (no build folder needed)."""

    class_names: tuple[str, ...]  # empty: it names no classes
    # (mean, std) on pixels 0..255 of its image input; None: not said (or not an image)
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None


@dataclass(frozen=True)
class Target:
    """One target: its stages, and the hooks shared code calls instead of naming it."""

    name: str
    plan: Callable[[PlanContext], list[StageSpec]]
    stage_functions: Mapping[str, str]  # stage kind → "module:function" (or "module": run)
    requires: tuple[str, ...] = ()  # targets whose stages this one builds on (planned first)
    images: tuple[ImageDefinition, ...] = ()  # toolchain images besides the core one
    check_config: Callable[[ConvertConfig], None] = lambda config: None
    report: ReportHooks | None = None
    # Why a finished, reported build must still exit non-zero (a tool that did not run here).
    problems: Callable[[Path, ConvertConfig], list[str]] = lambda build_dir, config: []
    bundle: BundleHooks | None = None
    # infer: the artifact file endings this target runs, and how (artifact, threads, device).
    artifact_suffixes: tuple[str, ...] = ()
    runtime: Callable[[Path, int, str | None], Runtime] | None = None
    # What an artifact's own metadata says (None: it carries none this target reads).
    describe: Callable[[Path], ArtifactDescription | None] = lambda artifact: None
    tasks: str | None = None  # a module whose Invoke tasks join tasks.py's (e.g. edgetpu-check)
    client_check: ClientCheck | None = None  # run on each of its validated artifacts
    # Its rows of the settings table (its flags and invoke.yaml keys), and how its section of
    # the configuration (ConvertConfig.sections[name]) is made from their resolved values.
    settings: tuple[Setting, ...] = ()
    config_section: Callable[[Callable[[str], Any]], Any] | None = None
