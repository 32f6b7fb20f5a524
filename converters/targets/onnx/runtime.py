"""The ONNX target's runtime: one onnxruntime CPU session behind the Runtime interface.

Sessions use onnxruntime's default options (all graph optimizations: what users run), unless
the model's own metadata asks for the reference arithmetic: the Q/DQ model made for TensorRT
(converters/targets/onnx/quantize.py), which onnxruntime's fused CPU int8 kernels would compute
differently from TensorRT on CPUs without VNNI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters import console
from converters.errors import ToolMissingError, ValidationError
from converters.inputs.model import Arrays, TensorInfo
from converters.targets.onnx.quantize import ONNXRUNTIME_SESSION_KEY, REFERENCE_SESSION
from converters.validation.compare import match_inputs
from converters.validation.latency import Latency, measure_latency


def onnx_dtype(type_name: str) -> str:
    """numpy's name of an onnxruntime value type: ``tensor(float)`` is float32, ``tensor(int64)``
    int64."""
    element = type_name.removeprefix("tensor(").removesuffix(")")
    return {"float": "float32", "double": "float64"}.get(element, element)


def open_session(onnxruntime: Any, path: Path, threads: int, reference: bool) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if reference:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise ValidationError(f"onnxruntime cannot load {path}: {str(error).strip()}") from None


class OnnxRuntime:
    """One onnxruntime CPU session, fed and read by graph input/output names."""

    def __init__(self, path: Path, threads: int) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ToolMissingError("onnxruntime is not installed: pip install '.[onnx]'") from None
        self.session = open_session(onnxruntime, path, threads, reference=False)
        metadata = self.session.get_modelmeta().custom_metadata_map
        # The model asks for each Q/DQ pair computed as written (TensorRT's arithmetic).
        self.reference_arithmetic = metadata.get(ONNXRUNTIME_SESSION_KEY) == REFERENCE_SESSION
        if self.reference_arithmetic:
            self.session = open_session(onnxruntime, path, threads, reference=True)
        self.inputs = {value.name: value for value in self.session.get_inputs()}
        self.output_names = tuple(value.name for value in self.session.get_outputs())
        self.input_tensors = tuple(
            TensorInfo(value.name, tuple(v if isinstance(v, int) and v > 0 else None
                                         for v in value.shape[1:]), onnx_dtype(value.type))
            for value in self.inputs.values())
        self.dtypes = {tensor.name: tensor.dtype for tensor in self.input_tensors}

    def run_named(self, inputs: Arrays) -> Arrays:
        feeds = {name: array.astype(self.dtypes[name]) for name, array in
                 match_inputs(inputs, self.inputs).items()}
        results = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, results, strict=True))

    def predict_named(self, inputs: Arrays, description: str = "") -> Arrays:
        """Run float32 inputs one sample at a time, as the TFLite runner does."""
        count = len(next(iter(inputs.values())))
        results = [self.run_named({name: array[i:i + 1] for name, array in inputs.items()})
                   for i in console.progress(range(count), description, total=count)]
        return {name: np.concatenate([result[name] for result in results])
                for name in self.output_names}

    def latency_named(self, sample: Arrays, runs: int) -> Latency:
        one = {name: array[None] for name, array in sample.items()}
        return measure_latency(lambda: self.run_named(one), runs)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.inputs)
