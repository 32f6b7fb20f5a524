"""Stage implementations, looked up by kind and imported only when they run.

Each stage module has ``run(context: StageContext) -> None``. Importing this package is cheap:
TensorFlow and LiteRT are imported inside the stage modules' functions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from converters.stages.base import StageContext, StageSpec

STAGE_MODULES = {
    "export": "converters.stages.export",
    "data": "converters.stages.data",
    "reference": "converters.stages.reference",
    "tflite": "converters.stages.tflite",
    "validate": "converters.stages.validate",
    "report": "converters.report",
}


def stage_function(kind: str) -> Callable[[StageContext], None]:
    module = importlib.import_module(STAGE_MODULES[kind])
    function: Callable[[StageContext], None] = module.run
    return function


__all__ = ["STAGE_MODULES", "StageContext", "StageSpec", "stage_function"]
