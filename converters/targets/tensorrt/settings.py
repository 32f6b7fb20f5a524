"""The tensorrt target's rows of the settings table and its section of the configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from converters.errors import ConfigError
from converters.setting_kinds import TEXT, WHOLE, Setting
from converters.targets.tensorrt.io_plan import BatchProfile

NAME = "tensorrt"
SETTINGS = (
    Setting("batch", TEXT, "1,8,32", "optimization profile of the batch dimension min,opt,max",
            targets=(NAME,)),
    Setting("workspace_mb", WHOLE, 1024, "builder workspace limit in MiB", targets=(NAME,),
            minimum=1, maximum=1 << 20),
)


@dataclass(frozen=True)
class TensorRTConfig:
    batch: BatchProfile = field(default_factory=BatchProfile)  # the optimization profile
    workspace_mb: int = 1024  # the builder's workspace limit

    def __post_init__(self) -> None:
        if self.workspace_mb < 1:
            raise ConfigError(f"--workspace-mb must be at least 1, got {self.workspace_mb}")


def section(get: Callable[[str], Any]) -> TensorRTConfig:
    return TensorRTConfig(batch=BatchProfile.parse(get("batch")), workspace_mb=get("workspace_mb"))
