"""The embedded default: run the stage process with this interpreter, on this machine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from converters.cache import stage_cache
from converters.stages.base import StageSpec


class LocalRunner:
    name = "local"

    def environment(self, spec: StageSpec) -> dict[str, str]:
        return {tool: stage_cache.tool_version(tool) for tool in spec.tools}

    def prepare(self) -> None:
        """Nothing to prepare: the stage process is a child of this one."""

    def command(self, job_path: Path, job: dict[str, Any]) -> list[str]:
        return self.command_for_jobs([job_path])

    def command_for_jobs(self, job_paths: list[Path]) -> list[str]:
        """One stage process that runs the job files in order (one TensorFlow import)."""
        return [sys.executable, "-m", "converters", "run-job", *(str(path) for path in job_paths)]

    def finish(self, job_path: Path, job: dict[str, Any]) -> None:
        """Nothing outlives the child process (run_streaming stops its process group)."""
