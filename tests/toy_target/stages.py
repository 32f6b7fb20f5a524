"""The toy target's one stage: copy the fp32 .tflite (and its conversion record)."""

from __future__ import annotations

import shutil

from converters.stages.base import StageContext


def copy(context: StageContext) -> None:
    params = context.params
    shutil.copyfile(context.read(params["source"]), context.write(params["artifact"]))
    shutil.copyfile(context.read(params["source_info"]), context.write(params["info"]))
