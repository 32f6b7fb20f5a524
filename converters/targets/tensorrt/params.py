"""What the tensorrt stage is asked to do (its parameters and file names): what planning needs,
without TensorRT, CUDA or numpy."""

from __future__ import annotations

from dataclasses import dataclass

from converters.stages.base import StageParams


@dataclass(frozen=True, kw_only=True)
class EngineParams(StageParams):
    precision: str  # fp32, fp16 or int8
    source: str  # the ONNX model (the Q/DQ one for int8)
    engine: str
    engine_dir: str  # the engine's folder (the declared output)
    record: str  # the engine record: built facts, or why not built
    validation: str  # the validation record of this engine
    batch: dict[str, int]  # io_plan.BatchProfile.as_dict(): the batch axis of every input
    workspace_bytes: int
    latency_runs: int


def engine_artifact(stem: str, precision: str) -> str:
    """The engine and its sidecar JSON live in their own folder (the stage's declared output)."""
    return f"tensorrt/{precision}/{stem}_{precision}.engine"


def engine_record(stem: str, precision: str) -> str:
    return f"tensorrt/{stem}_{precision}.json"
