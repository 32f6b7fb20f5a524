"""Runners start a job's stage process: locally (a child Python) or in a toolchain image.

Both run ``python -m converters run-job JOB`` (started and streamed by
:mod:`converters.processes`); they differ only in the command line and in what stands for the
toolchain in stage keys (tool versions or image ID).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from converters.stages.base import StageSpec


class StageRunner(Protocol):
    name: str

    def environment(self, spec: StageSpec) -> dict[str, str]:
        """What identifies the toolchain for ``spec`` (enters the stage key)."""

    def prepare(self) -> None:
        """Called once per build, before any job runs."""

    def command(self, job_path: Path, job: dict[str, Any]) -> list[str]:
        """The argv that runs the job file ``job_path`` (whose content is ``job``)."""

    def finish(self, job_path: Path, job: dict[str, Any]) -> None:
        """Called after the job's process ended, however it ended."""
