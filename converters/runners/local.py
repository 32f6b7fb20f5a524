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
        return [sys.executable, "-m", "converters", "run-job", str(job_path)]

    def finish(self, job_path: Path, job: dict[str, Any]) -> None:
        """Nothing outlives the child process (run_streaming stops its process group)."""
