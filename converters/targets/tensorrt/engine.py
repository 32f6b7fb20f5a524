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
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from converters.errors import ConfigError, ConversionError, ToolMissingError
from converters.latency import Latency, measure_latency

if TYPE_CHECKING:
    from converters.model import TensorInfo

PRECISIONS = ("fp32", "fp16", "int8")
NOT_RUN_HELP = (
    "build the tensorrt image with `invoke images --target tensorrt` on a host that reaches "
    "NGC (nvcr.io), then run invoke convert --target tensorrt on a machine with an NVIDIA GPU "
    "and the NVIDIA Container Toolkit (docker run --gpus all); the ONNX and Q/DQ artifacts are "
    "built and validated without it"
)


@dataclass(frozen=True)
class BatchProfile:
    """The optimization profile of the dynamic batch dimension: ``--batch min,opt,max``."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(f"--batch must be min,opt,max with 1 <= min <= opt <= max, got "
                              f"{self.min},{self.opt},{self.max}")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        try:
            low, opt, high = (int(part) for part in text.split(","))
        except ValueError:
            raise ConfigError(f"--batch must be three integers min,opt,max (e.g. 1,8,32), "
                              f"got '{text}'") from None
        return cls(low, opt, high)

    def shapes(self, input_shape: tuple[int, int, int]) -> dict[str, list[int]]:
        """min/opt/max shapes of an NHWC input of height, width, channels ``input_shape``."""
        return {name: [batch, *input_shape] for name, batch in
                (("min", self.min), ("opt", self.opt), ("max", self.max))}

    def as_dict(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


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


def build_engine(onnx_path: Path, precision: str, profile: BatchProfile,
                 input_shape: tuple[int, int, int], workspace_bytes: int,
                 timing_cache: Path) -> tuple[bytes, dict[str, Any]]:
    """Serialized engine bytes (nothing prepended: trtexec --loadEngine reads them) and the
    sidecar facts: TensorRT/CUDA versions, GPU, compute capability, profile shapes."""
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
    input_name = network.get_input(0).name
    shapes = profile.shapes(input_shape)
    optimization = builder.create_optimization_profile()
    optimization.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(optimization)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConversionError(f"TensorRT could not build a {precision} engine from {onnx_path} "
                              "(see TensorRT's log above)")
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return bytes(serialized), sidecar(trt.__version__, device_facts(), precision, strongly_typed,
                                      input_name, shapes, workspace_bytes)


def sidecar(tensorrt_version: str, device: dict[str, Any], precision: str, strongly_typed: bool,
            input_name: str, shapes: dict[str, list[int]], workspace_bytes: int) -> dict[str, Any]:
    """What an engine is tied to, kept beside it (never inside it); ``input`` has the keys of
    the other artifacts' info files, so the report reads every artifact the same way."""
    return {
        "tensorrt_version": tensorrt_version,
        **device,
        "precision": precision,
        "strongly_typed": strongly_typed,
        "input": {"name": input_name, "type": "FLOAT", "shape": ["batch", *shapes["opt"][1:]]},
        "profile": shapes,
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
    """Runs a serialized engine on float32 NHWC batches through device buffers (cuda-python)."""

    def __init__(self, engine_bytes: bytes) -> None:
        import tensorrt as trt

        self._trt = trt
        self._cudart = _cudart()
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ConversionError("TensorRT could not deserialize the engine (built by another "
                                  "TensorRT version or for another GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) != mode)
        self.stream = _check(self._cudart.cudaStreamCreate())
        self.input_shape: tuple[int, ...] = ()
        self.max_batch = 1

    @classmethod
    def from_file(cls, path: Path) -> EngineRuntime:
        """An engine and its sidecar (``.json`` beside it), which names the input size."""
        runner = cls(path.read_bytes())
        sidecar_path = path.with_suffix(".json")
        if not sidecar_path.exists():
            raise ConfigError(f"{sidecar_path} is missing: the engine's sidecar names its input "
                              "shape; keep it beside the engine")
        profile = json.loads(sidecar_path.read_text())["profile"]
        runner.input_shape = tuple(int(size) for size in profile["opt"][1:])
        runner.max_batch = profile["max"][0]
        return runner

    @property
    def input_names(self) -> tuple[str, ...]:
        return (self.input_name,)

    @property
    def input_tensors(self) -> tuple[TensorInfo, ...]:
        from converters.model import TensorInfo  # config imports this module: no cycle at load

        return (TensorInfo(self.input_name, self.input_shape),)

    @property
    def output_names(self) -> tuple[str, ...]:
        return (self.output_name,)

    def predict_named(self, inputs: dict[str, np.ndarray],
                      description: str = "") -> dict[str, np.ndarray]:
        """The output for any number of samples, in batches the engine's profile allows."""
        [images] = inputs.values()
        return {self.output_name: np.concatenate([
            self.run(images[i:i + self.max_batch])
            for i in range(0, len(images), self.max_batch)])}

    def latency_named(self, sample: dict[str, np.ndarray], runs: int) -> Latency:
        """Batch-1 latency of the engine, as every other artifact's."""
        [image] = sample.values()
        one = image[np.newaxis]
        return measure_latency(lambda: self.run(one), runs)

    def run(self, images: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        host_in = np.ascontiguousarray(images, dtype=np.float32)
        self.context.set_input_shape(self.input_name, host_in.shape)
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        out_dtype = self._trt.nptype(self.engine.get_tensor_dtype(self.output_name))
        host_out = np.empty(out_shape, dtype=out_dtype)
        device_in = _check(cudart.cudaMalloc(host_in.nbytes))
        device_out = _check(cudart.cudaMalloc(host_out.nbytes))
        try:
            to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            _check(cudart.cudaMemcpyAsync(device_in, host_in.ctypes.data, host_in.nbytes,
                                          to_device, self.stream))
            self.context.set_tensor_address(self.input_name, int(device_in))
            self.context.set_tensor_address(self.output_name, int(device_out))
            if not self.context.execute_async_v3(self.stream):
                raise ConversionError("TensorRT execution failed")
            _check(cudart.cudaMemcpyAsync(host_out.ctypes.data, device_out, host_out.nbytes,
                                          to_host, self.stream))
            _check(cudart.cudaStreamSynchronize(self.stream))
        finally:
            cudart.cudaFree(device_in)
            cudart.cudaFree(device_out)
        return host_out.astype(np.float32)
