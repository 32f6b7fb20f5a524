"""TensorRT engines from ONNX: build (fp32, fp16, int8 from a Q/DQ model), run, describe.

Written for TensorRT 10 and 11 (https://docs.nvidia.com/deeplearning/tensorrt/latest/): the Q/DQ
int8 model is always built as a strongly
typed network; on TensorRT 11, which removed the precision builder flags, every network is
strongly typed and fp16 needs an fp16 ONNX model. Device buffers use cuda-python (NVIDIA's
maintained bindings, used by TensorRT's own samples since 10.14; pycuda compiles against the
CUDA headers at install time and is not NVIDIA's). Nothing here is imported unless a GPU stage
runs; :func:`tensorrt_problem` says why one cannot run before anything is attempted.

NOT run on the project's machines (no GPU, no TensorRT): built from NVIDIA's documentation.
"""

from __future__ import annotations

import ctypes.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converters.errors import ConfigError, ConversionError, ToolMissingError
from converters.targets.tensorrt.io_plan import (
    ProfileShapes,
    Shape,
    TensorSpec,
    buffer_plan,
    chunks,
    feeds,
    float_outputs,
    padded,
)
from converters.validation.latency import Latency, measure_latency

if TYPE_CHECKING:
    from converters.inputs.model import TensorInfo

PRECISIONS = ("fp32", "fp16", "int8")
NOT_RUN_HELP = (
    "build the tensorrt image with `invoke images --target tensorrt` on a host that reaches "
    "NGC (nvcr.io), then run invoke convert --target tensorrt on a machine with an NVIDIA GPU "
    "and the NVIDIA Container Toolkit (docker run --gpus all); the ONNX and Q/DQ artifacts are "
    "built and validated without it"
)


def tensorrt_problem() -> str | None:
    """None when TensorRT and a CUDA GPU are usable here, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed here (PyPI's tensorrt wheels download from NVIDIA's index)"
    if ctypes.util.find_library("cuda") is None and not os.path.exists("/dev/nvidiactl"):
        return "no NVIDIA GPU driver here (libcuda and /dev/nvidiactl are absent)"
    try:
        runtime = _cudart()
        error, count = runtime.cudaGetDeviceCount()
    except ToolMissingError as missing:
        return str(missing)
    if int(error) != 0 or count < 1:
        return f"no CUDA device is usable here (cudaGetDeviceCount: {error})"
    return None


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # cuda-python before 12.6
        except ImportError:
            raise ToolMissingError("cuda-python is not installed: pip install cuda-python") from None
    return runtime


def _check(result: Any) -> Any:
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise ConversionError(f"CUDA call failed: {error}")
    return values[0] if len(values) == 1 else values


def build_engine(onnx_path: Path, precision: str, profile: Mapping[str, ProfileShapes],
                 workspace_bytes: int, timing_cache: Path) -> tuple[bytes, dict[str, Any]]:
    """Serialized engine bytes (nothing prepended: trtexec --loadEngine reads them) and what
    the engine is tied to (TensorRT/CUDA versions, GPU, compute capability, strongly typed) for
    :func:`sidecar`. ``profile`` has min/opt/max shapes for every network input, by name
    (:func:`io_plan.profile_shapes`); the dynamic ones are set in one optimization profile."""
    import tensorrt as trt

    if precision not in PRECISIONS:
        raise ConfigError(f"unknown TensorRT precision '{precision}': expected one of {PRECISIONS}")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    strongly_typed = precision == "int8" or major >= 11
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ConversionError(f"TensorRT's ONNX parser rejected {onnx_path}:\n" +
                              "\n".join(f"  - {e}" for e in errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if precision == "fp16" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(names) != sorted(profile):
        raise ConversionError(f"TensorRT's network from {onnx_path} has the inputs "
                              f"{', '.join(names)}; the profile was made for "
                              f"{', '.join(profile)}")
    optimization = builder.create_optimization_profile()
    for index, name in enumerate(names):  # one profile: min/opt/max of every dynamic input
        if -1 in tuple(network.get_input(index).shape):
            shapes = profile[name]
            optimization.set_shape(name, shapes.min, shapes.opt, shapes.max)
    config.add_optimization_profile(optimization)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConversionError(f"TensorRT could not build a {precision} engine from {onnx_path} "
                              "(see TensorRT's log above)")
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized), {"tensorrt_version": trt.__version__, **device_facts(),
                               "strongly_typed": strongly_typed}


def sidecar(built: dict[str, Any], precision: str, io: tuple[Sequence[TensorSpec],
                                                             Sequence[TensorSpec]],
            profile: Mapping[str, ProfileShapes], workspace_bytes: int,
            described: Mapping[str, Any]) -> dict[str, Any]:
    """What an engine is tied to, kept beside it (never inside it): ``built`` (TensorRT and CUDA
    versions, GPU, strongly typed) and the engine's inputs, outputs and profile by name;
    ``input``/``output`` (the first of each) have the keys of the other artifacts' info files, so
    the report reads every artifact the same way. ``described``: what the source ONNX model's
    metadata says (labels, labelled_outputs, preprocessing), which an engine cannot carry."""
    inputs, outputs = io
    return {
        **built,
        "labels": list(described.get("labels", [])),
        "labelled_outputs": list(described.get("labelled_outputs", [])),
        "preprocessing": described.get("preprocessing"),
        "precision": precision,
        "input": inputs[0].describe(),
        "output": outputs[0].describe(),
        "inputs": [spec.describe() for spec in inputs],
        "outputs": [spec.describe() for spec in outputs],
        "profile": {name: shapes.as_dict() for name, shapes in profile.items()},
        "workspace_bytes": workspace_bytes,
        "float_ops": [],  # TensorRT picks kernels per layer; nothing falls back to a float CPU op
        "note": "an engine runs only with this TensorRT version on this GPU architecture",
    }


def device_facts() -> dict[str, Any]:
    runtime = _cudart()
    properties = _check(runtime.cudaGetDeviceProperties(0))
    name = properties.name
    return {
        "cuda_runtime_version": _check(runtime.cudaRuntimeGetVersion()),
        "cuda_driver_version": _check(runtime.cudaDriverGetVersion()),
        "gpu": name.decode(errors="replace").rstrip("\x00") if isinstance(name, bytes) else str(name),
        "compute_capability": f"{properties.major}.{properties.minor}",
    }


class EngineRuntime:
    """Runs a serialized engine on inputs by name through one device buffer per I/O tensor
    (cuda-python), allocated once at the optimization profile's largest shapes.

    TensorRT 10's name-based API, as NVIDIA's samples/python/common_runtime.py uses it:
    ``num_io_tensors``/``get_tensor_name``/``get_tensor_mode``/``get_tensor_dtype``,
    ``get_tensor_profile_shape(name, 0)`` (min, opt, max), ``set_tensor_address`` and
    ``execute_async_v3``; ``trt.nptype`` maps float32/float16/int8/int32/int64/bool/uint8 and
    raises TypeError for types numpy lacks (bf16, fp8, int4)."""

    def __init__(self, engine_bytes: bytes) -> None:
        import tensorrt as trt

        self._cudart = _cudart()
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ConversionError("TensorRT could not deserialize the engine (built by another "
                                  "TensorRT version or for another GPU?)")
        self.context = self.engine.create_execution_context()
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        dtypes = {name: self._numpy_dtype(trt, name) for name in names}
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        self.profiles = {name: self._profile(name) for name in inputs}
        for name, shapes in self.profiles.items():  # the largest inputs give the largest outputs
            self._set_input_shape(name, shapes.max)
        self.buffers = buffer_plan(
            {name: (dtypes[name], self.profiles[name]) for name in inputs},
            {name: (dtypes[name], tuple(int(s) for s in self.context.get_tensor_shape(name)))
             for name in outputs})
        self.stream = _check(self._cudart.cudaStreamCreate())
        self.device: dict[str, int] = {}
        for buffer in self.buffers:
            self.device[buffer.name] = int(_check(self._cudart.cudaMalloc(buffer.nbytes)))
            self.context.set_tensor_address(buffer.name, self.device[buffer.name])
        self.dtypes = dtypes

    def _numpy_dtype(self, trt: Any, name: str) -> np.dtype[Any]:
        dtype = self.engine.get_tensor_dtype(name)
        try:
            return np.dtype(trt.nptype(dtype))
        except TypeError:
            raise ConversionError(f"the engine's tensor '{name}' is {dtype}, which numpy has no "
                                  "type for: export the model with float32 (or int) inputs and "
                                  "outputs") from None

    def _profile(self, name: str) -> ProfileShapes:
        """An input's min/opt/max shapes: the profile's for a dynamic input, else its shape."""
        fixed = tuple(int(size) for size in self.engine.get_tensor_shape(name))
        if -1 not in fixed:
            return ProfileShapes(fixed, fixed, fixed)
        low, opt, high = (tuple(int(size) for size in shape)
                          for shape in self.engine.get_tensor_profile_shape(name, 0))
        return ProfileShapes(low, opt, high)

    def _set_input_shape(self, name: str, shape: Shape) -> None:
        if self.context.set_input_shape(name, shape) is False:
            raise ConversionError(f"TensorRT refused the shape {list(shape)} for input '{name}'")

    @classmethod
    def from_file(cls, path: Path) -> EngineRuntime:
        """An engine file (its profile shapes and I/O names are read from the engine itself)."""
        return cls(path.read_bytes())

    def close(self) -> None:
        """Free the device buffers and the stream (the object is unusable afterwards)."""
        for pointer in self.device.values():
            self._cudart.cudaFree(pointer)
        self.device = {}
        self._cudart.cudaStreamDestroy(self.stream)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.buffers if b.is_input)

    @property
    def input_tensors(self) -> tuple[TensorInfo, ...]:
        from converters.inputs.model import TensorInfo  # config imports this module: no cycle at load

        return tuple(TensorInfo(b.name, self.profiles[b.name].opt[1:], self.dtypes[b.name].name)
                     for b in self.buffers if b.is_input)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.buffers if not b.is_input)

    def predict_named(self, inputs: dict[str, np.ndarray],
                      description: str = "") -> dict[str, np.ndarray]:
        """Float32 outputs by name for any number of samples, in the batches the profile allows
        (a last batch below the profile's min batch padded, its padding dropped)."""
        count = len(next(iter(inputs.values())))
        results = [float_outputs(self.run(padded(inputs, start, stop, size)), stop - start)
                   for start, stop, size in chunks(count, self.profiles)]
        return {name: np.concatenate([result[name] for result in results])
                for name in self.output_names}

    def latency_named(self, sample: dict[str, np.ndarray], runs: int) -> Latency:
        """Latency of one sample (padded to the profile's min batch), as every other artifact's."""
        [(_, _, size)] = chunks(1, self.profiles)
        one = padded({name: array[np.newaxis] for name, array in sample.items()}, 0, 1, size)
        return measure_latency(lambda: self.run(one), runs)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One execution: every input copied to its buffer by name, every output read back by
        name, in the engine's dtypes."""
        cudart = self._cudart
        host = feeds(inputs, self.buffers, self.profiles)
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, array in host.items():
            self._set_input_shape(name, array.shape)
            _check(cudart.cudaMemcpyAsync(self.device[name], array.ctypes.data, array.nbytes,
                                          to_device, self.stream))
        outputs = {buffer.name: np.empty(tuple(self.context.get_tensor_shape(buffer.name)),
                                         buffer.dtype)
                   for buffer in self.buffers if not buffer.is_input}
        if not self.context.execute_async_v3(self.stream):
            raise ConversionError("TensorRT execution failed")
        for name, array in outputs.items():
            _check(cudart.cudaMemcpyAsync(array.ctypes.data, self.device[name], array.nbytes,
                                          to_host, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return outputs
