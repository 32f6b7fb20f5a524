"""What every stage is: a declared, hashable unit of work with outputs under the model's build dir."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar


@dataclass(frozen=True, kw_only=True)
class StageParams:
    """What a stage is asked to do: each stage declares a frozen dataclass of this kind beside
    its ``run()``. Fields hold JSON values only (str, int, float, bool, None, lists, dicts): a
    job file carries them to the stage process and the stage key hashes them."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls: type[P], context: StageContext) -> P:
        """The running stage's parameters, as this class (a plan/stage mismatch is a bug)."""
        params = context.spec.params
        if not isinstance(params, cls):
            raise TypeError(f"stage {context.spec.name} has {type(params).__name__}, not "
                            f"{cls.__name__}")
        return params


P = TypeVar("P", bound=StageParams)


def params_type(params: StageParams) -> str:
    """``module:Class`` of a stage's parameters (the job file names it to rebuild them)."""
    return f"{type(params).__module__}:{type(params).__qualname__}"


def load_params(path: str, values: dict[str, Any]) -> StageParams:
    module_name, _, class_name = path.partition(":")
    params_class = getattr(importlib.import_module(module_name), class_name)
    params: StageParams = params_class(**values)
    return params


@dataclass(frozen=True)
class StageSpec:
    """A stage as planned: pure data, serialisable into a job file.

    ``inputs`` names external inputs (``model``, ``dataset``) whose content hashes enter the key;
    ``deps`` names upstream stages whose keys enter it. ``outputs`` are paths relative to the
    model's build directory. ``tools`` are the distributions whose versions enter the key when
    the stage runs on the host (in a container the image ID stands for them).
    """

    name: str
    kind: str
    image: str
    params: StageParams
    inputs: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    # With -j > 1, stages of different groups (one per TFLite mode, say) run in separate
    # processes in parallel; "" is the model's shared preparation.
    group: str = ""
    # "module:function" that runs it, for a target's stage kinds: stage processes (and
    # containers) then need no target registry, a registered plug-in's stages included.
    function: str = ""
    # Of ``deps``, those this stage can do without: their failure does not stop it (it reads
    # their outputs when they are there; the Edge TPU int8 calibrates itself without the
    # tflite int8's ranges).
    optional_deps: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "image": self.image,
            "params": self.params.as_dict(),
            "params_type": params_type(self.params),
            "inputs": list(self.inputs),
            "deps": list(self.deps),
            "outputs": list(self.outputs),
            "tools": list(self.tools),
            "group": self.group,
            "function": self.function,
            "optional_deps": list(self.optional_deps),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageSpec:
        return cls(
            name=data["name"],
            kind=data["kind"],
            image=data["image"],
            params=load_params(data["params_type"], data["params"]),
            inputs=tuple(data["inputs"]),
            deps=tuple(data["deps"]),
            outputs=tuple(data["outputs"]),
            tools=tuple(data["tools"]),
            group=data.get("group", ""),
            function=data.get("function", ""),
            optional_deps=tuple(data.get("optional_deps", ())),
        )


class StageSkipped(Exception):  # noqa: N818 (an outcome, not an error)
    """Raised by a stage that cannot run here (no compiler, no GPU) after writing its record.

    The executor keeps the stage's outputs and stamps it as skipped with the reason; the build
    finishes, reports, and exits non-zero saying which stages did not run and why.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StageNotNeeded(StageSkipped):
    """Raised by a stage whose work this build does not need (an automatic int8-mixed when plain
    int8 is within the bound), after writing whichever outputs say so.

    Stamped like a skipped stage (its dependents record the same outcome), but not a problem:
    the build does not exit non-zero for it, and its missing outputs do not make it stale.
    """


@dataclass(frozen=True)
class StageContext:
    """Where a running stage reads and writes.

    A stage reads upstream outputs from ``build_dir`` and writes its own outputs under
    ``staging_dir`` with the same relative names; the executor moves them into place only when
    the stage succeeded, so a killed stage never leaves a partial artifact.
    """

    spec: StageSpec
    model_path: Path
    dataset_dir: Path
    build_dir: Path
    staging_dir: Path
    # Why an upstream stage did not run here (its stamp says skipped), or None. A stage that
    # needs an upstream artifact (the validation of an engine that was not built) records the
    # same outcome instead of failing on the missing file.
    upstream_skipped: str | None = None
    upstream_not_needed: bool = False  # ... because its work was not needed (StageNotNeeded)

    def read(self, relative: str) -> Path:
        return self.build_dir / relative

    def write(self, relative: str) -> Path:
        if relative not in self.spec.outputs:
            raise KeyError(f"stage {self.spec.name} does not declare output {relative}")
        path = self.staging_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path
