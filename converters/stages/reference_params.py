"""What stage ``reference`` (the Keras model's own outputs and latency) is asked to do and the
files it writes: what planning and the report need, without TensorFlow or numpy."""

from __future__ import annotations

from dataclasses import dataclass

from converters.stages.export import ExportParams

OUTPUTS = "reference/outputs.npz"  # one array per output name
SUMMARY = "reference/reference.json"


@dataclass(frozen=True, kw_only=True)
class ReferenceParams(ExportParams):
    threads: int  # applied through TF_NUM_INTRAOP_THREADS by the executor
    latency_runs: int
    task: str  # --task: auto, what every output is, and/or NAME=TASK per output
