"""The embedded default: run the stage process with this interpreter, on this machine."""

from __future__ import annotations

import sys
from pathlib import Path

from converters import cache
from converters.stages.base import StageSpec


class LocalRunner:
    name = "local"

    def environment(self, spec: StageSpec) -> dict[str, str]:
        return {tool: cache.tool_version(tool) for tool in spec.tools}

    def command(self, job_path: Path) -> list[str]:
        return [sys.executable, "-m", "converters", "run-job", str(job_path)]
