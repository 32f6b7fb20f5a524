"""Stage implementations, looked up by kind and imported only when they run.

A kind names ``module`` (whose ``run`` it calls) or ``module:function``; each takes a
:class:`StageContext`. Importing this package is cheap: TensorFlow and LiteRT are imported
inside the stage modules' functions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from converters.stages.base import StageContext, StageSpec

STAGE_MODULES = {
    "export": "converters.stages.export",
    "data": "converters.stages.data",
    "reference": "converters.stages.reference",
    "tflite": "converters.targets.tflite.convert",
    "validate": "converters.stages.validate",
    "edgetpu-check": "converters.targets.edgetpu.stages:precheck",
    "edgetpu-compile": "converters.targets.edgetpu.stages:compile_model",
    "edgetpu-split": "converters.targets.edgetpu.stages:split",
    "onnx-export": "converters.targets.onnx.export:export_onnx",
    "onnx-quantize": "converters.targets.onnx.export:quantize_onnx",
    "tensorrt-engine": "converters.targets.tensorrt.stages",
    "report": "converters.report",
}


def stage_function(kind: str) -> Callable[[StageContext], None]:
    module_name, _, function_name = STAGE_MODULES[kind].partition(":")
    module = importlib.import_module(module_name)
    function: Callable[[StageContext], None] = getattr(module, function_name or "run")
    return function


__all__ = ["STAGE_MODULES", "StageContext", "StageSpec", "stage_function"]
