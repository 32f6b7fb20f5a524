"""The toy target's one stage: copy the fp32 .tflite (and its conversion record)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from converters.stages.base import StageContext, StageParams


@dataclass(frozen=True, kw_only=True)
class CopyParams(StageParams):
    source: str
    source_info: str
    artifact: str
    info: str


def copy(context: StageContext) -> None:
    params = CopyParams.of(context)
    shutil.copyfile(context.read(params.source), context.write(params.artifact))
    shutil.copyfile(context.read(params.source_info), context.write(params.info))
