"""Stage implementations, looked up by kind and imported only when they run.

A kind names ``module`` (whose ``run`` it calls) or ``module:function``; each takes a
:class:`StageContext`. Importing this package is cheap: TensorFlow and LiteRT are imported
inside the stage modules' functions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from converters.stages.base import StageContext, StageSpec

# The shared stages; each target's own stage kinds come from the target registry.
STAGE_MODULES = {
    "export": "converters.stages.export",
    "saved-model": "converters.stages.export:write_saved_model",
    "data": "converters.stages.data",
    "reference": "converters.stages.reference",
    "validate": "converters.stages.validate",
    "report": "converters.reporting.report",
    "device-run": "converters.stages.device_run",
}


def stage_function(kind: str, function: str = "") -> Callable[[StageContext], None]:
    """The function that runs a stage of ``kind``: ``function`` when the plan named it (a
    target's stage), else a shared stage, else a registered target's kind."""
    from converters.targets import stage_function_path

    path = function or STAGE_MODULES.get(kind) or stage_function_path(kind)
    if path is None:
        raise KeyError(f"no stage kind '{kind}' in the shared stages or any registered target")
    module_name, _, function_name = path.partition(":")
    module = importlib.import_module(module_name)
    runs: Callable[[StageContext], None] = getattr(module, function_name or "run")
    return runs


__all__ = ["STAGE_MODULES", "StageContext", "StageSpec", "stage_function"]
