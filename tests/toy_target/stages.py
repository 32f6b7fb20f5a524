"""The toy target's one stage: copy the fp32 .tflite (and its conversion record)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from converters.fsutil import read_json, write_json_atomic
from converters.stages.base import StageContext, StageParams


@dataclass(frozen=True, kw_only=True)
class CopyParams(StageParams):
    source: str
    source_info: str
    artifact: str
    info: str
    note: str  # the toy's own setting (copy_note), written into the copy's record


def copy(context: StageContext) -> None:
    params = CopyParams.of(context)
    shutil.copyfile(context.read(params.source), context.write(params.artifact))
    record = read_json(context.read(params.source_info))
    write_json_atomic(context.write(params.info), {**record, "note": params.note})
