"""What stage ``report`` is asked to do and the files it writes: what planning and the summary
need, without the report's libraries (matplotlib, numpy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from converters.defaults import MAX_RELATIVE_ERROR
from converters.stages.base import StageParams

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
OUTPUTS = (REPORT_JSON, REPORT_MD, REPORT_HTML)


@dataclass(frozen=True, kw_only=True)
class ReportParams(StageParams):
    records: list[str]  # the validation records to report, relative to the build folder
    max_accuracy_drop: float
    max_relative_error: float = MAX_RELATIVE_ERROR  # regression outputs' own bound
    targets: dict[str, Any]  # target name → what its report section reads (ReportHooks.params)
    # Records of earlier builds of this folder for other targets, still valid: record → key.
    earlier_records: dict[str, str] = field(default_factory=dict)
    earlier_stages: list[str] = field(default_factory=list)  # the stages that made them
    device_records: list[str] = field(default_factory=list)  # each artifact's run on a device
    devices: list[str] = field(default_factory=list)  # the --device names, in order
    recommend_on: str | None = None  # the device whose latency picks the fastest artifact
