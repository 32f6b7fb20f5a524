"""The onnx target's rows of the settings table and its section of the configuration (the
tensorrt target, which builds on it, reads the same section)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from converters.errors import ConfigError
from converters.setting_kinds import WHOLE, Setting

NAME = "onnx"
MIN_OPSET, MAX_OPSET = 13, 18
SETTINGS = (
    Setting("opset", WHOLE, 17, "ONNX opset", targets=(NAME, "tensorrt"), minimum=MIN_OPSET,
            maximum=MAX_OPSET),
)


@dataclass(frozen=True)
class OnnxConfig:
    opset: int = 17

    def __post_init__(self) -> None:
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ConfigError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got "
                              f"{self.opset}")


def section(get: Callable[[str], Any]) -> OnnxConfig:
    return OnnxConfig(opset=get("opset"))
