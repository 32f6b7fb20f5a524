"""The registry of targets. Shared code (plan, build, report, summary, bundle, infer, images,
tasks) goes through it and never names a target.

Adding a target is adding one package whose ``target`` module defines ``TARGET`` (a
:class:`Target`): list it in
``BUILT_IN``, or call :func:`register` (a plug-in, or a test's toy target).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from converters.errors import ConfigError, ModelError
from converters.setting_kinds import Setting
from converters.targets.base import (
    CORE_IMAGE,
    ArtifactDescription,
    BundleHooks,
    ClientCheck,
    PlanContext,
    ReportHooks,
    Target,
)

if TYPE_CHECKING:
    from converters.config import ConvertConfig
    from converters.validation.runtime import Runtime

# Packages under converters/targets/, in the order their stages and report rows appear.
BUILT_IN = ("tflite", "edgetpu", "onnx", "tensorrt")
_registered: dict[str, Target] = {}


def register(target: Target) -> None:
    """Add (or replace) a target; its stage functions must be importable by stage processes."""
    _registered[target.name] = target


def all_targets() -> dict[str, Target]:
    """Every target, built-in ones first (imported on first use)."""
    for name in BUILT_IN:
        if name not in _registered:
            register(importlib.import_module(f"converters.targets.{name}.target").TARGET)
    built_in = {name: _registered[name] for name in BUILT_IN}
    return {**built_in, **{n: t for n, t in _registered.items() if n not in built_in}}


def settings() -> tuple[Setting, ...]:
    """Every target's rows of the settings table, in registry order."""
    return tuple(row for target in all_targets().values() for row in target.settings)


def config_sections(get_setting: Callable[[str], Any]) -> dict[str, Any]:
    """Each target's section of the configuration, from the resolved settings."""
    return {name: target.config_section(get_setting) for name, target in all_targets().items()
            if target.config_section is not None}


def check_config(config: ConvertConfig) -> None:
    """The targets asked for exist, and each target accepts the configuration."""
    for name in config.targets:
        get(name)  # a registered target, or an error listing them
    for target in all_targets().values():
        target.check_config(config)


def get(name: str) -> Target:
    targets = all_targets()
    if name not in targets:
        raise ConfigError(f"unknown target '{name}': expected one of {', '.join(targets)}")
    return targets[name]


def parse_targets(value: str) -> tuple[str, ...]:
    """``"a,b"`` (or ``all``) as target names, in the order given, without repeats."""
    names = [item.strip() for item in value.split(",") if item.strip()]
    if "all" in names:
        return tuple(all_targets())
    if not names:
        raise ConfigError(f"no target given: expected one or more of {', '.join(all_targets())}")
    return tuple(dict.fromkeys(get(name).name for name in names))


def planned(names: tuple[str, ...]) -> list[Target]:
    """The targets to plan for ``names``, each after the ones it requires, in registry order."""
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name not in wanted:
            wanted.add(name)
            for required in get(name).requires:
                add(required)

    for name in names:
        add(name)
    return [target for name, target in all_targets().items() if name in wanted]


def client_checks() -> dict[str, ClientCheck]:
    """Each target's check in a real client (its name → the check), for the targets that have one."""
    return {name: target.client_check for name, target in all_targets().items()
            if target.client_check is not None}


def stage_function_path(kind: str) -> str | None:
    """``"module:function"`` of a target stage kind, or None when no target has it."""
    for target in all_targets().values():
        if kind in target.stage_functions:
            return target.stage_functions[kind]
    return None


def for_artifact(artifact: Path) -> Target | None:
    """The target whose artifacts end like ``artifact`` (the longest matching ending wins)."""
    matches = [(len(suffix), target) for target in all_targets().values()
               for suffix in target.artifact_suffixes if artifact.name.endswith(suffix)]
    return max(matches, key=lambda match: match[0])[1] if matches else None


def describe_artifact(artifact: Path) -> ArtifactDescription | None:
    """Class names and normalization from the artifact's own metadata, when it has any."""
    target = for_artifact(artifact)
    return target.describe(artifact) if target is not None else None


def open_runtime(artifact: Path, threads: int, device: str | None = None) -> Runtime:
    """The runtime of the target whose artifacts end like ``artifact``: what validation and
    ``invoke infer`` run every artifact with."""
    target = for_artifact(artifact)
    if target is None or target.runtime is None:
        endings = sorted({suffix for t in all_targets().values() if t.runtime is not None
                          for suffix in t.artifact_suffixes})
        raise ModelError(f"artifact {artifact} is not one this tool runs: expected a file ending "
                         f"in {', '.join(endings)}")
    return target.runtime(artifact, threads, device)


__all__ = ["BUILT_IN", "CORE_IMAGE", "ArtifactDescription", "BundleHooks", "ClientCheck",
           "PlanContext", "ReportHooks", "Target", "all_targets", "client_checks",
           "describe_artifact", "for_artifact", "get", "open_runtime", "parse_targets", "planned",
           "register", "stage_function_path"]
