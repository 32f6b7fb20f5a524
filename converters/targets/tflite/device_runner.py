"""A .tflite model in LiteRT on the device (with the Edge TPU delegate for a compiled Edge TPU
model): one sample in, every output out by name, dequantized.

Ships in a bundle as ``device_runner.py`` beside ``run.py``: standard library, numpy and the
runtime in the bundle's ``requirements.txt`` only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from native_output import XNNPACK_NOTICE, lines_dropped  # ships beside this file
from runner_support import Arrays, RunOne, fed_by_name  # ships beside this file

EDGETPU_LIBRARY = "libedgetpu.so.1"


def make_runner(bundle: dict[str, Any], artifact: Path, device: str | None,
                threads: int | None = None) -> RunOne:
    """One sample in (float32 by input name), every output out by signature name (tensor name
    without a signature), dequantized; ``threads``: the interpreter's (None: its default)."""
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    delegates = None
    if bundle["runtime"] == "litert-edgetpu":
        delegates = [load_delegate(EDGETPU_LIBRARY, {"device": device} if device else {})]
    with lines_dropped(re.compile(XNNPACK_NOTICE)):  # the output is the model's, not LiteRT's
        interpreter = Interpreter(model_path=str(artifact), experimental_delegates=delegates,
                                  num_threads=threads)
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
