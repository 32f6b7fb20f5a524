"""What each named input and output of a TensorRT engine gets, decided without TensorRT: the
optimization profile's min/opt/max shape of every input, one device buffer per I/O tensor, the
host arrays fed by name in the engine's dtypes, and the batches a split runs in.

Needs numpy (and onnx to read a model's inputs and outputs), never tensorrt: everything here is
tested on the CPU with real ONNX models the project exported (tests/test_tensorrt.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ConversionError, ModelError, ValidationError
from converters.targets.tensorrt.settings import BatchProfile

Arrays = dict[str, np.ndarray]
Shape = tuple[int, ...]
BATCH_AXIS = 0


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as the ONNX model declares it: a dimension is its size, or the
    name of a dynamic dimension (``batch``; ``?`` when the model leaves it unnamed)."""

    name: str
    dims: tuple[int | str, ...]
    dtype: str  # numpy dtype name

    def describe(self) -> dict[str, Any]:
        """The keys every artifact's info file has for its input and output (the report's io)."""
        from onnx import TensorProto, helper

        onnx_type = helper.np_dtype_to_tensor_dtype(np.dtype(self.dtype))
        return {"name": self.name, "type": TensorProto.DataType.Name(onnx_type),
                "shape": list(self.dims), "scale": [], "zero_point": []}


def onnx_io(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph inputs and outputs of an ONNX model, in graph order (the names TensorRT's ONNX
    parser gives the network's inputs and outputs)."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    graph = onnx.load(str(path), load_external_data=False).graph

    def spec(value: Any) -> TensorSpec:
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in tensor_type.shape.dim)
        return TensorSpec(value.name, dims, tensor_dtype_to_np_dtype(tensor_type.elem_type).name)

    return tuple(spec(v) for v in graph.input), tuple(spec(v) for v in graph.output)


def onnx_metadata(path: Path) -> dict[str, Any]:
    """What the ONNX model at ``path`` says of itself (labels, labelled outputs, preprocessing:
    :mod:`converters.targets.onnx.metadata`), for the engine's sidecar."""
    import onnx

    from converters.targets.onnx import metadata

    return metadata.read(onnx.load(str(path), load_external_data=False))


@dataclass(frozen=True)
class ProfileShapes:
    """An input's shapes in the optimization profile (batch axis included)."""

    min: Shape
    opt: Shape
    max: Shape

    def as_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def allows(self, shape: Shape) -> bool:
        return len(shape) == len(self.min) and all(
            low <= size <= high for low, size, high in zip(self.min, shape, self.max, strict=True))


def seen_shapes(*splits: Arrays) -> dict[str, list[Shape]]:
    """Per input name, the per-sample shape (batch axis excluded) of each split that has it."""
    seen: dict[str, list[Shape]] = {}
    for split in splits:
        for name, array in split.items():
            seen.setdefault(name, []).append(tuple(int(size) for size in array.shape[1:]))
    return seen


def profile_shapes(inputs: Sequence[TensorSpec], batch: BatchProfile,
                   seen: Mapping[str, Sequence[Shape]]) -> dict[str, ProfileShapes]:
    """min/opt/max shapes of every input, by name: a dynamic batch axis (the first) takes the
    build's ``--batch``; another dynamic axis spans the sizes the calibration and validation data
    have there (opt: the size seen most often, the larger on a tie); a fixed axis keeps its size,
    and data of another size is refused, naming the input."""
    shapes = {}
    for spec in inputs:
        low: list[int] = []
        opt: list[int] = []
        high: list[int] = []
        for axis, dim in enumerate(spec.dims):
            if isinstance(dim, int):
                sizes = _data_sizes(spec, axis, seen)
                if axis != BATCH_AXIS and any(size != dim for size in sizes):
                    raise ModelError(f"input '{spec.name}' has {dim} on axis {axis} in the ONNX "
                                     f"model but the data has {sorted(set(sizes))}: give data of "
                                     f"shape {_per_sample(spec)}")
                low.append(dim)
                opt.append(dim)
                high.append(dim)
            elif axis == BATCH_AXIS:
                low.append(batch.min)
                opt.append(batch.opt)
                high.append(batch.max)
            else:
                sizes = _data_sizes(spec, axis, seen)
                if not sizes:
                    raise ModelError(
                        f"input '{spec.name}' axis {axis} ('{dim}') is dynamic and no calibration "
                        "or validation data shows its size: the optimization profile needs one; "
                        f"give --dataset arrays for '{spec.name}'")
                counts = Counter(sizes)
                low.append(min(sizes))
                opt.append(max(counts, key=lambda size: (counts[size], size)))
                high.append(max(sizes))
        shapes[spec.name] = ProfileShapes(tuple(low), tuple(opt), tuple(high))
    return shapes


def _data_sizes(spec: TensorSpec, axis: int, seen: Mapping[str, Sequence[Shape]]) -> list[int]:
    """The sizes the data has on ``axis`` (batch axis counted) of input ``spec``."""
    if axis == BATCH_AXIS:
        return []
    sizes = []
    for shape in seen.get(spec.name, ()):
        if len(shape) != len(spec.dims) - 1:
            raise ModelError(f"input '{spec.name}' has {len(spec.dims) - 1} dimensions per sample "
                             f"in the ONNX model, {_per_sample(spec)}, but the data has "
                             f"{len(shape)}: {shape}")
        sizes.append(shape[axis - 1])
    return sizes


def _per_sample(spec: TensorSpec) -> str:
    return "(N, " + ", ".join(str(d) for d in spec.dims[1:]) + ")"


@dataclass(frozen=True)
class Buffer:
    """One device buffer: an engine input or output, big enough for the profile's largest shape."""

    name: str
    is_input: bool
    dtype: np.dtype[Any]
    shape: Shape  # the largest shape the profile allows

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def buffer_plan(inputs: Mapping[str, tuple[np.dtype[Any], ProfileShapes]],
                outputs: Mapping[str, tuple[np.dtype[Any], Shape]]) -> tuple[Buffer, ...]:
    """One buffer per I/O tensor name: inputs at their profile's max shape, outputs at the shape
    the engine gives them for those max inputs."""
    plan = [Buffer(name, True, np.dtype(dtype), shapes.max)
            for name, (dtype, shapes) in inputs.items()]
    for name, (dtype, shape) in outputs.items():
        if any(size < 0 for size in shape):
            raise ConversionError(
                f"the engine's output '{name}' has a data-dependent shape {list(shape)} even at "
                "the profile's largest inputs; outputs whose size depends on values (NonZero, "
                "NMS) are not supported by this runtime")
        plan.append(Buffer(name, False, np.dtype(dtype), shape))
    return tuple(plan)


def feeds(arrays: Mapping[str, np.ndarray], buffers: Sequence[Buffer],
          profiles: Mapping[str, ProfileShapes]) -> Arrays:
    """The host arrays of one run, by the engine's input names, in the engine's dtypes: a batch
    outside the profile, a missing input or values an integer or boolean input cannot hold
    exactly are refused, naming the input."""
    wanted = [buffer for buffer in buffers if buffer.is_input]
    if set(arrays) != {buffer.name for buffer in wanted}:
        if len(arrays) == 1 and len(wanted) == 1:
            arrays = {wanted[0].name: next(iter(arrays.values()))}
        else:
            raise ValidationError(f"the engine's inputs are {', '.join(b.name for b in wanted)}; "
                                  f"the data has {', '.join(arrays)}: inputs are matched by name")
    host = {}
    for buffer in wanted:
        array = np.asarray(arrays[buffer.name])
        profile = profiles[buffer.name]
        if not profile.allows(array.shape):
            raise ValidationError(
                f"input '{buffer.name}' of shape {list(array.shape)} is outside the engine's "
                f"optimization profile (min {list(profile.min)}, max {list(profile.max)}): "
                "rebuild with a --batch or data that covers it")
        host[buffer.name] = np.ascontiguousarray(_cast(buffer.name, array, buffer.dtype))
    return host


def _cast(name: str, array: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    if dtype.kind in "biu" and array.dtype.kind == "f" and not np.array_equal(array,
                                                                              np.round(array)):
        raise ValidationError(f"input '{name}' is {dtype.name} in the engine but the data has "
                              "fractional values: give integer data for it")
    if dtype.kind == "b":
        return array != 0
    return array.astype(dtype, copy=False)


def chunks(count: int, profiles: Mapping[str, ProfileShapes]) -> list[tuple[int, int, int]]:
    """(start, stop, run size) of the runs ``count`` samples take: at most the profile's max
    batch each; a last run below its min batch is padded to it (``run size`` > stop - start)."""
    lowest = max(shapes.min[BATCH_AXIS] for shapes in profiles.values())
    highest = min(shapes.max[BATCH_AXIS] for shapes in profiles.values())
    if lowest > highest:
        raise ConversionError(f"the engine's inputs have no batch size in common (min batch "
                              f"{lowest} > max batch {highest})")
    return [(start, min(start + highest, count), max(min(highest, count - start), lowest))
            for start in range(0, count, highest)]


def padded(arrays: Mapping[str, np.ndarray], start: int, stop: int, size: int) -> Arrays:
    """Samples ``start:stop`` of every input, the last one repeated up to ``size`` samples."""
    return {name: np.concatenate([array[start:stop]] + [array[stop - 1:stop]] *
                                 (size - (stop - start)))
            for name, array in arrays.items()}


def float_outputs(outputs: Mapping[str, np.ndarray], samples: int) -> Arrays:
    """Outputs as the Runtime interface gives them: float32 (int, bool and half converted), the
    padding samples of a run dropped."""
    return {name: np.asarray(values[:samples], dtype=np.float32) for name, values in outputs.items()}
