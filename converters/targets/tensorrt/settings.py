"""The tensorrt target's rows of the settings table and its section of the configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from converters.errors import ConfigError
from converters.setting_kinds import TEXT, WHOLE, Setting

MAX_BATCH = 4096  # samples per engine call: the profile's largest batch


@dataclass(frozen=True)
class BatchProfile:
    """The optimization profile of the dynamic batch dimension: ``--batch min,opt,max``."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max <= MAX_BATCH:
            raise ConfigError(f"--batch must be min,opt,max with 1 <= min <= opt <= max <= "
                              f"{MAX_BATCH}, got {self.min},{self.opt},{self.max}")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        try:
            low, opt, high = (int(part) for part in text.split(","))
        except ValueError:
            raise ConfigError(f"--batch must be three integers min,opt,max (e.g. 1,8,32), "
                              f"got '{text}'") from None
        return cls(low, opt, high)

    def as_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


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
