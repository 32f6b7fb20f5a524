#!/usr/bin/env python3
"""Run this bundle's model: ``python run.py IMAGE|INPUTS.npz|INPUT.npy [--top-k 5] [--device usb]``.

An image goes through the build's own preprocessing (a model with one image input); arrays are
used as given: a ``.npz`` file holds one array per input name (one sample, or samples on the
first axis), a ``.npy`` file the input of a one-input model. Every output is printed: a summary
line (shape, min, mean, max) and, for class scores, the top classes.

Shipped in every deployment bundle as ``run.py`` beside ``imaging.py`` (the build's own image
pipeline), ``array_files.py`` (the build's own bounded array reading) and ``bundle.json``
(inputs, quantization, preprocessing, class names). Needs
only the runtime in ``requirements.txt``: LiteRT (``ai-edge-litert``, with ``libedgetpu`` for
Edge TPU bundles), onnxruntime, or TensorRT with cuda-python (from the device's JetPack).
"""

from __future__ import annotations

import argparse
import json
import stat
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ in the bundle: verify.py finds nothing extra

from array_files import (  # noqa: E402  (ships beside this file)
    DEFAULT_MAX_ARRAY_MB,
    ArrayFileError,
    Budget,
    check_values,
    listed,
    load,
)
from imaging import normalize, read_pixels  # noqa: E402  (ships beside this file)

EDGETPU_LIBRARY = "libedgetpu.so.1"
ARRAY_SUFFIXES = (".npz", ".npy")
DEFAULT_PREPROCESSING = {"mode": "0..1", "mean": None, "std": None}  # as invoke infer
Arrays = dict[str, np.ndarray]
RunOne = Callable[[Arrays], Arrays]


class InputError(Exception):
    """An input file this model cannot take: printed as one line, exit code 2."""


def litert_runner(bundle: dict[str, Any], device: str | None) -> RunOne:
    """One sample in (float32 by input name), every output out by signature name (tensor name
    without a signature), dequantized."""
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    delegates = None
    if bundle["runtime"] == "litert-edgetpu":
        delegates = [load_delegate(EDGETPU_LIBRARY, {"device": device} if device else {})]
    interpreter = Interpreter(model_path=str(HERE / bundle["artifact"]),
                              experimental_delegates=delegates)
    interpreter.allocate_tensors()
    signatures = interpreter.get_signature_list()
    sources = {d["name"]: d for d in interpreter.get_input_details()}
    names = {}
    if signatures:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        by_index = {d["index"]: d for d in interpreter.get_input_details()}
        sources = {name: by_index[d["index"]] for name, d in runner.get_input_details().items()}
        names = {d["index"]: name for name, d in runner.get_output_details().items()}

    def run(sample: Arrays) -> Arrays:
        for name, values in fed_by_name(sample, sources).items():
            source = sources[name]
            interpreter.set_tensor(source["index"], quantized(values, source))
        interpreter.invoke()
        outputs = {}
        for target in interpreter.get_output_details():
            raw = interpreter.get_tensor(target["index"])
            scale, zero_point = target["quantization"]
            if raw.dtype != np.float32 and scale:
                raw = (raw.astype(np.float32) - zero_point) * scale
            outputs[names.get(target["index"], target["name"])] = raw.astype(np.float32)
        return outputs

    return run


def quantized(values: np.ndarray, source: dict[str, Any]) -> np.ndarray:
    """Float inputs as the tensor takes them: through its scale and zero point when quantized
    (integer inputs without a scale, such as ids, as they are)."""
    dtype = np.dtype(source["dtype"])
    scale, zero_point = source["quantization"]
    if dtype.kind == "f" or not scale:
        return values.astype(dtype)
    limits = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), limits.min, limits.max).astype(dtype)


def fed_by_name(sample: Arrays, expected: dict[str, Any]) -> Arrays:
    """``sample`` keyed by the runtime's input names: the same names, or one input each."""
    if set(sample) == set(expected):
        return sample
    if len(sample) == 1 and len(expected) == 1:
        return {next(iter(expected)): next(iter(sample.values()))}
    raise InputError(f"the model's inputs are {listed(expected)}; the bundle lists "
                     f"{listed(sample)}")


def onnxruntime_runner(bundle: dict[str, Any]) -> RunOne:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(HERE / bundle["artifact"]),
                                           providers=["CPUExecutionProvider"])
    sources = {value.name: value for value in session.get_inputs()}
    dtypes = {name: {"tensor(float)": "float32", "tensor(double)": "float64"}.get(
        value.type, value.type.removeprefix("tensor(").removesuffix(")"))
        for name, value in sources.items()}
    names = [value.name for value in session.get_outputs()]

    def run(sample: Arrays) -> Arrays:
        feeds = {name: values.astype(dtypes[name])
                 for name, values in fed_by_name(sample, sources).items()}
        return dict(zip(names, session.run(names, feeds), strict=True))

    return run


def tensorrt_runner(bundle: dict[str, Any]) -> RunOne:
    """The engine, loaded once, run on one sample's inputs by name (TensorRT 10's name-based
    API): every output by name. Not run on the project's machines (no GPU there)."""
    import tensorrt as trt
    from cuda.bindings import runtime as cudart

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
        (HERE / bundle["artifact"]).read_bytes())
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


def whole_number(low: int, high: int, meaning: str) -> Callable[[str], int]:
    """An argparse type: a whole number from ``low`` to ``high`` (``meaning``: what it counts)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more ({meaning}), got {value}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high} ({meaning}), got {value}")
        return value

    return parse


def load_pixels(image: Path, shape: list[int]) -> np.ndarray:
    """The image as the model's input pixels (InputError when it cannot be read)."""
    height, width, channels = shape
    try:
        regular = stat.S_ISREG(image.stat().st_mode)
    except OSError as error:
        raise InputError(f"cannot read image {image}: {error.strerror or error}") from None
    if not regular:
        raise InputError(f"{image} is not a regular file: pass an image file")
    with warnings.catch_warnings():
        # Over Image.MAX_IMAGE_PIXELS Pillow only warns (and errors past twice that): refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return read_pixels(image, height, width, channels)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            raise InputError(f"{image} is too large to read safely: {error}") from None
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read image {image}: {error}") from None


def image_inputs(image: Path, bundle: dict[str, Any]) -> Arrays:
    """The image, preprocessed as the build validated it, for a model with one image input."""
    model = bundle["model"]
    if model["input_shape"] is None:
        inputs = listed(f"'{t['name']}' {shape_text(t['shape'])}" for t in model["inputs"])
        raise InputError(f"this model does not take one image (its inputs: {inputs}): give a "
                         ".npz file with one array per input name (or a .npy file for a "
                         "one-input model)")
    pixels = load_pixels(image, model["input_shape"])
    preprocessing = bundle["preprocessing"] or DEFAULT_PREPROCESSING
    values = normalize(pixels[None], preprocessing["mode"], preprocessing["mean"],
                       preprocessing["std"]).astype(np.float32)
    return {model["inputs"][0]["name"]: values}


def fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """``shape`` is ``expected``, where a None (null) size takes any."""
    return len(shape) == len(expected) and all(
        size is None or size == found for found, size in zip(shape, expected, strict=True))


def array_inputs(path: Path, inputs: list[dict[str, Any]],
                 max_array_mb: int = DEFAULT_MAX_ARRAY_MB) -> Arrays:
    """One array per input (samples on the first axis) from a .npz file (one array per input
    name, each one sample or a first axis of samples) or a .npy file (a one-input model),
    whose arrays may declare at most ``max_array_mb`` (checked on their headers first)."""
    try:
        found = load(path, Budget(max_array_mb, "--max-array-mb N"), skip=("labels",))
    except ArrayFileError as error:
        raise InputError(str(error)) from None
    if set(found) == {""}:  # a .npy: the input of a one-input model
        if len(inputs) != 1:
            raise InputError(f"{path} holds one array; the model has {len(inputs)} inputs "
                             f"({listed(t['name'] for t in inputs)}): give a .npz file with "
                             "one array per input name")
        found = {inputs[0]["name"]: found[""]}
    batch = {}
    for tensor in inputs:
        name, shape = tensor["name"], tuple(tensor["shape"])
        expected = (f"{shape_text(shape)} for one sample or {shape_text(('N', *shape))} for N "
                    "samples")
        key = next(iter(found)) if name not in found and len(inputs) == len(found) == 1 else name
        if key not in found:
            raise InputError(f"{path} has no array '{name}' for the model input '{name}' "
                             f"(expected shape {expected}); arrays found: "
                             f"{listed(sorted(found))}")
        array = found[key]
        if fits(array.shape, shape):
            array = array[None]  # one sample
        if array.ndim == 0 or not fits(array.shape[1:], shape):
            raise InputError(f"array '{key}' in {path} has shape {array.shape}; the model input "
                             f"'{name}' expects {expected}")
        if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
            raise InputError(f"array '{key}' in {path} holds {array.dtype} values; the model "
                             f"input '{name}' takes numbers ({tensor['dtype']})")
        try:
            check_values(array, tensor["dtype"], f"array '{key}' in {path}")
        except ArrayFileError as error:
            raise InputError(str(error)) from None
        batch[name] = array.astype(tensor["dtype"])
    counts = {name: len(array) for name, array in batch.items()}
    if len(set(counts.values())) > 1 or 0 in counts.values():
        raise InputError(f"{path}: every input needs the same number of samples, at least one "
                         f"({listed(f'{n}: {c}' for n, c in counts.items())})")
    return batch


def shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(size) for size in shape) + ("," if len(shape) == 1 else "") + ")"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, metavar="INPUT",
                        help="an image, or a .npz file (one array per input name: one sample or "
                             "samples on the first axis) or a .npy file (a one-input model)")
    parser.add_argument("--top-k", type=whole_number(1, 1 << 20, "how many classes to print"),
                        default=5, help="classes to print (default 5)")
    parser.add_argument("--device", help="Edge TPU: usb, pci, usb:0, ...")
    parser.add_argument("--max-array-mb", type=whole_number(1, 1 << 20, "MiB of arrays"),
                        default=DEFAULT_MAX_ARRAY_MB,
                        help="the most MiB a .npz/.npy file's arrays may declare (default "
                             f"{DEFAULT_MAX_ARRAY_MB}; checked before they are read)")
    args = parser.parse_args(argv)
    bundle = json.loads((HERE / "bundle.json").read_text())
    try:
        if args.input.suffix.lower() in ARRAY_SUFFIXES:
            inputs = array_inputs(args.input, bundle["model"]["inputs"], args.max_array_mb)
        else:
            inputs = image_inputs(args.input, bundle)
        runtime = bundle["runtime"]
        if runtime.startswith("litert"):
            run = litert_runner(bundle, args.device)
        elif runtime == "onnxruntime":
            run = onnxruntime_runner(bundle)
        else:
            run = tensorrt_runner(bundle)
        count = len(next(iter(inputs.values())))
        samples = [run({name: array[i:i + 1] for name, array in inputs.items()})
                   for i in range(count)]
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    classes = min((values.size for values in samples[0].values() if values.ndim == 2),
                  default=args.top_k)
    if args.top_k > classes:
        print(f"note: --top-k {args.top_k} is more than the model's {classes} classes: "
              f"printing all {classes}", file=sys.stderr)
    for index, outputs in enumerate(samples):
        indent = ""
        if count > 1:
            print(f"sample {index}:")
            indent = "  "
        for line in output_lines(outputs, bundle["class_names"], args.top_k):
            print(indent + line)
    return 0


def output_lines(outputs: Arrays, names: list[str], count: int) -> list[str]:
    """One sample's outputs. One vector per sample reads as class scores: its top classes.
    Other outputs (and every output of a model with several) get a one-line summary."""
    several = len(outputs) > 1
    lines = []
    for name, values in outputs.items():
        if several or values.ndim != 2:
            lines.append(f"{name}: shape {list(values.shape[1:])}, min {values.min():.4f}, "
                         f"mean {values.mean():.4f}, max {values.max():.4f}")
        if values.ndim == 2:
            scores = values.reshape(-1)
            lines += [f"{'  ' if several else ''}"
                      f"{names[i] if i < len(names) else str(i)}\t{scores[i]:.4f}"
                      for i in np.argsort(-scores, kind="stable")[:count]]
    return lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
