"""The edgetpu target's rows of the settings table and its section of the configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from converters.errors import ConfigError
from converters.setting_kinds import FRACTION, SWITCH, TEXT, WHOLE, Setting
from converters.targets.edgetpu.compiler import CompileOptions

NAME = "edgetpu"
SETTINGS = (
    Setting("min_runtime_version", WHOLE, None, "oldest Edge TPU runtime the model must run on "
            "(the compiler's min_runtime_version; default: the compiler's, 14)", targets=(NAME,),
            minimum=10,
            maximum=99),
    Setting("num_segments", WHOLE, 1, "split the model for pipelining across N Edge TPUs "
            "(the compiler's num_segments)", targets=(NAME,), minimum=1, maximum=64),
    Setting("search_delegate", SWITCH, False, "search for the largest graph prefix that compiles "
            "(the compiler's search_delegate)", targets=(NAME,)),
    Setting("delegate_search_step", WHOLE, None, "op step of that search (the compiler's "
            "delegate_search_step)",
            targets=(NAME,), minimum=1, maximum=100_000),
    Setting("compiler_timeout", WHOLE, 180, "compiler timeout in seconds", targets=(NAME,),
            minimum=1, maximum=86_400),
    Setting("intermediate_tensors", TEXT, "", "comma list of tensors to expose as outputs "
            "(the compiler's intermediate_tensors)", targets=(NAME,)),
    Setting("min_tpu_ops", FRACTION, None, "fail the build when a smaller fraction of ops maps "
            "to the Edge TPU", targets=(NAME,), minimum=0, maximum=1),
    Setting("edgetpu_split", SWITCH, False, "also write the Edge TPU head and the CPU tail of a "
            "partly mapped model as two .tflite files", targets=(NAME,)),
)


@dataclass(frozen=True)
class EdgeTpuConfig:
    """What the edgetpu target is asked for besides the common settings."""

    compile: CompileOptions = field(default_factory=CompileOptions)
    min_tpu_ops: float | None = None  # fail the build when fewer ops map to the Edge TPU
    split: bool = False  # also write the Edge TPU head and the CPU tail

    def __post_init__(self) -> None:
        if self.min_tpu_ops is not None and not 0 <= self.min_tpu_ops <= 1:
            raise ConfigError(f"--min-tpu-ops is a fraction between 0 and 1, got {self.min_tpu_ops}")


def section(get: Callable[[str], Any]) -> EdgeTpuConfig:
    """The section from the resolved settings (``get(name)``)."""
    tensors = tuple(t.strip() for t in get("intermediate_tensors").split(",") if t.strip())
    return EdgeTpuConfig(
        CompileOptions(min_runtime_version=get("min_runtime_version"),
                       num_segments=get("num_segments"), search_delegate=get("search_delegate"),
                       delegate_search_step=get("delegate_search_step"),
                       timeout_sec=get("compiler_timeout"), intermediate_tensors=tensors),
        min_tpu_ops=get("min_tpu_ops"), split=get("edgetpu_split"))
