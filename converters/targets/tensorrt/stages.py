"""Stage ``tensorrt-engine`` (in the tensorrt image, needs an NVIDIA GPU): build an engine from
the ONNX (fp32, fp16) or Q/DQ ONNX (int8) model and time it at the profile's opt batch. The
core ``validate`` stage, run in the same image, then compares it with Keras like any artifact.

Without TensorRT or a GPU the stage records that it did not run and why (detected before
anything is tried) and ends as skipped; its validation is skipped with it, and the build exits
non-zero after the report, the ONNX artifacts being built and validated all the same.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from converters.fsutil import write_bytes_atomic, write_json_atomic
from converters.stages import data
from converters.stages.base import StageContext, StageSkipped
from converters.targets.tensorrt import io_plan
from converters.targets.tensorrt.engine import NOT_RUN_HELP, tensorrt_problem
from converters.targets.tensorrt.params import EngineParams
from converters.validation.latency import median_latency_ms

TIMING_CACHE = "tensorrt/timing.cache"


def run(context: StageContext) -> None:
    """Build the engine (an optimization profile for every input, by name) and measure it at the
    profile's opt batch; the validation stage that follows runs it on the validation split like
    every other artifact."""
    params = EngineParams.of(context)
    record_path = context.write(params.record)
    engine_dir = context.write(params.engine_dir)
    engine_dir.mkdir(parents=True, exist_ok=True)
    problem = tensorrt_problem()
    if problem is not None:  # said once for all engines, after the report
        write_json_atomic(record_path, {"ran": False, "precision": params.precision,
                                        "reason": f"{problem}: {NOT_RUN_HELP}"})
        raise StageSkipped(f"TensorRT engines are not built here: {problem}: {NOT_RUN_HELP}")
    from converters.targets.tensorrt.engine import EngineRuntime, build_engine, sidecar

    source = context.read(params.source)
    io = io_plan.onnx_io(source)
    validation = data.load_inputs(context.build_dir, data.VALIDATION)
    seen = io_plan.seen_shapes(data.load_inputs(context.build_dir, data.CALIBRATION), validation)
    profile = io_plan.profile_shapes(io[0], io_plan.BatchProfile(**params.batch), seen)
    started = time.perf_counter()
    engine_bytes, built = build_engine(source, params.precision, profile, params.workspace_bytes,
                                       context.build_dir / TIMING_CACHE)
    facts = sidecar(built, params.precision, io, profile, params.workspace_bytes,
                    io_plan.onnx_metadata(source))
    facts["conversion_seconds"] = round(time.perf_counter() - started, 2)
    engine_path = engine_dir / Path(params.engine).name
    write_bytes_atomic(engine_path, engine_bytes)
    write_json_atomic(engine_path.with_suffix(".json"), facts)  # the sidecar, beside the engine
    runner = EngineRuntime(engine_bytes)
    opt_batch = {name: np.repeat(array[:1], profile[name].opt[0], axis=0)
                 for name, array in validation.items()}
    try:
        latency = median_latency_ms(lambda: runner.run(opt_batch), params.latency_runs)
    finally:
        runner.close()
    write_json_atomic(record_path, {
        "ran": True, "precision": params.precision, "engine": params.engine,
        "sidecar": facts, "validation": params.validation, "latency_ms_opt_batch": latency,
        # the batch that ran: the profile's opt (a fixed batch axis keeps its own size)
        "opt_batch": len(next(iter(opt_batch.values()))), "size_bytes": len(engine_bytes),
    })
