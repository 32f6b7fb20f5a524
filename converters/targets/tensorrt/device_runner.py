"""A TensorRT engine on the device's GPU (TensorRT and cuda-python from its JetPack): one sample
in, every output out by name.

Ships in a bundle as ``device_runner.py`` beside ``run.py``: standard library, numpy and the
runtime in the bundle's ``requirements.txt`` only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from array_files import listed  # ships beside this file
from runner_support import Arrays, InputError, RunOne  # ships beside this file


def make_runner(bundle: dict[str, Any], artifact: Path, device: str | None,
                threads: int | None = None) -> RunOne:
    """The engine, loaded once, run on one sample's inputs by name (TensorRT 10's name-based
    API): every output by name (``threads`` does not apply to a GPU). Not run on the project's
    machines (no GPU there)."""
    import tensorrt as trt
    from cuda.bindings import runtime as cudart

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
        artifact.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    sources = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]

    def run(inputs: Arrays) -> Arrays:
        if len(sources) == len(inputs) == 1:  # one input: whatever the engine calls it
            inputs = {sources[0]: next(iter(inputs.values()))}
        missing = [name for name in sources if name not in inputs]
        if missing:
            raise InputError(f"the engine's input(s) {listed(missing)} have no array")
        arrays = {}
        for source in sources:
            context.set_input_shape(source, inputs[source].shape)
            arrays[source] = np.ascontiguousarray(
                inputs[source].astype(trt.nptype(engine.get_tensor_dtype(source))))
        arrays |= {name: np.empty(tuple(context.get_tensor_shape(name)),
                                  trt.nptype(engine.get_tensor_dtype(name)))
                   for name in names if name not in sources}
        pointers = {name: cudart.cudaMalloc(array.nbytes)[1] for name, array in arrays.items()}
        for source in sources:
            cudart.cudaMemcpy(pointers[source], arrays[source].ctypes.data,
                              arrays[source].nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
        for name, pointer in pointers.items():
            context.set_tensor_address(name, int(pointer))
        context.execute_async_v3(0)
        for name, array in arrays.items():
            if name not in sources:
                cudart.cudaMemcpy(array.ctypes.data, pointers[name], array.nbytes,
                                  cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
        cudart.cudaDeviceSynchronize()
        for pointer in pointers.values():
            cudart.cudaFree(pointer)
        return {name: array.astype(np.float32) for name, array in arrays.items()
                if name not in sources}

    return run
