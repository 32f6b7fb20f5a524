#!/usr/bin/env python3
"""Classify one image with this bundle's model: ``python run.py IMAGE [--top-k 5] [--device usb]``.

Shipped in every deployment bundle as ``run.py`` beside ``imaging.py`` (the build's own image
pipeline) and ``bundle.json`` (input shape, quantization, preprocessing, class names). Needs
only the runtime in ``requirements.txt``: LiteRT (``ai-edge-litert``, with ``libedgetpu`` for
Edge TPU bundles), onnxruntime, or TensorRT with cuda-python (from the device's JetPack).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ in the bundle: verify.py finds nothing extra

from imaging import normalize, read_pixels  # noqa: E402  (ships beside this file)

EDGETPU_LIBRARY = "libedgetpu.so.1"


def litert_scores(bundle: dict[str, Any], inputs: np.ndarray,
                  device: str | None) -> dict[str, np.ndarray]:
    """Every output, by signature name (tensor name without a signature), dequantized."""
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    delegates = None
    if bundle["runtime"] == "litert-edgetpu":
        delegates = [load_delegate(EDGETPU_LIBRARY, {"device": device} if device else {})]
    interpreter = Interpreter(model_path=str(HERE / bundle["artifact"]),
                              experimental_delegates=delegates)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]
    values = inputs
    if source["dtype"] != np.float32:
        scale, zero_point = source["quantization"]
        limits = np.iinfo(source["dtype"])
        values = np.clip(np.round(inputs / scale + zero_point), limits.min, limits.max)
    interpreter.set_tensor(source["index"], values.astype(source["dtype"]))
    interpreter.invoke()
    signatures = interpreter.get_signature_list()
    names = {}
    if signatures:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        names = {d["index"]: name for name, d in runner.get_output_details().items()}
    outputs = {}
    for target in interpreter.get_output_details():
        raw = interpreter.get_tensor(target["index"])
        scale, zero_point = target["quantization"]
        if raw.dtype != np.float32 and scale:
            raw = (raw.astype(np.float32) - zero_point) * scale
        outputs[names.get(target["index"], target["name"])] = raw.astype(np.float32)
    return outputs


def onnxruntime_scores(bundle: dict[str, Any], inputs: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(HERE / bundle["artifact"]),
                                           providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_outputs()]
    results = session.run(names, {session.get_inputs()[0].name: inputs})
    return dict(zip(names, results, strict=True))


def tensorrt_scores(bundle: dict[str, Any], inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the engine, by name, for its one input (TensorRT 10's name-based API)."""
    import tensorrt as trt
    from cuda.bindings import runtime as cudart

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(
        (HERE / bundle["artifact"]).read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    [source] = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    context.set_input_shape(source, inputs.shape)
    arrays = {source: inputs.astype(trt.nptype(engine.get_tensor_dtype(source)))}
    arrays |= {name: np.empty(tuple(context.get_tensor_shape(name)),
                              trt.nptype(engine.get_tensor_dtype(name)))
               for name in names if name != source}
    pointers = {name: cudart.cudaMalloc(array.nbytes)[1] for name, array in arrays.items()}
    cudart.cudaMemcpy(pointers[source], arrays[source].ctypes.data, arrays[source].nbytes,
                      cudart.cudaMemcpyKind.cudaMemcpyHostToDevice)
    for name, pointer in pointers.items():
        context.set_tensor_address(name, int(pointer))
    context.execute_async_v3(0)
    for name, array in arrays.items():
        if name != source:
            cudart.cudaMemcpy(array.ctypes.data, pointers[name], array.nbytes,
                              cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost)
    cudart.cudaDeviceSynchronize()
    for pointer in pointers.values():
        cudart.cudaFree(pointer)
    return {name: array.astype(np.float32) for name, array in arrays.items() if name != source}


def top_k(text: str) -> int:
    """--top-k: how many classes to print, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more (how many classes to print), got "
                                         f"{value}")
    return value


def load_pixels(image: Path, shape: list[int]) -> np.ndarray | None:
    """The image as the model's input pixels, or None after saying why it cannot be read."""
    height, width, channels = shape
    with warnings.catch_warnings():
        # Over Image.MAX_IMAGE_PIXELS Pillow only warns (and errors past twice that): refuse both.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return read_pixels(image, height, width, channels)
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
            print(f"error: {image} is too large to read safely: {error}", file=sys.stderr)
        except (OSError, ValueError) as error:
            print(f"error: cannot read image {image}: {error}", file=sys.stderr)
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--top-k", type=top_k, default=5, help="classes to print (default 5)")
    parser.add_argument("--device", help="Edge TPU: usb, pci, usb:0, ...")
    args = parser.parse_args(argv)
    bundle = json.loads((HERE / "bundle.json").read_text())
    preprocessing = bundle["preprocessing"]
    pixels = load_pixels(args.image, bundle["model"]["input_shape"])
    if pixels is None:
        return 2
    inputs = normalize(pixels[None], preprocessing["mode"], preprocessing["mean"],
                       preprocessing["std"]).astype(np.float32)
    runtime = bundle["runtime"]
    if runtime.startswith("litert"):
        outputs = litert_scores(bundle, inputs, args.device)
    elif runtime == "onnxruntime":
        outputs = onnxruntime_scores(bundle, inputs)
    else:
        outputs = tensorrt_scores(bundle, inputs)
    several = len(outputs) > 1
    for name, values in outputs.items():
        # One vector per sample reads as class scores: its top classes. Other outputs (and
        # every output of a model with several) get a one-line summary.
        if several or values.ndim != 2:
            print(f"{name}: shape {list(values.shape[1:])}, min {values.min():.4f}, "
                  f"mean {values.mean():.4f}, max {values.max():.4f}")
        if values.ndim == 2:
            print_top_classes(values.reshape(-1), bundle["class_names"], args.top_k,
                              indent="  " if several else "")
    return 0


def print_top_classes(scores: np.ndarray, names: list[str], count: int, indent: str) -> None:
    if count > scores.size:
        print(f"note: --top-k {count} is more than the model's {scores.size} classes: "
              f"printing all {scores.size}", file=sys.stderr)
    for index in np.argsort(-scores, kind="stable")[:count]:
        label = names[index] if index < len(names) else str(index)
        print(f"{indent}{label}\t{scores[index]:.4f}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
