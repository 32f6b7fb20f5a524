"""Run an artifact on the held-out split and compare it with the Keras model's outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters import console
from converters.errors import ToolMissingError, ValidationError, xnnpack_refusal
from converters.inputs.array_files import listed
from converters.inputs.host_memory import available_memory
from converters.inputs.model import Arrays, TensorInfo
from converters.validation import metrics
from converters.validation.latency import Latency, measure_latency
from converters.validation.runtime import Runtime
from converters.validation.side_by_side import run_side_by_side


def compare(reference: np.ndarray, outputs: np.ndarray,
            labels: np.ndarray | None) -> dict[str, float | None]:
    """Agreement metrics (the record's ``metrics`` keys) of one output read as class scores:
    max/mean abs error, cosine similarity, top-1 agreement and, with labels, accuracy."""
    kind = metrics.OutputTask("classification")
    flat_reference = reference.reshape(len(reference), -1)
    return metrics.summary({"output": metrics.compare_output(
        flat_reference, outputs.reshape(flat_reference.shape), kind, labels)})


def non_finite_problem(outputs: np.ndarray, what: str) -> str | None:
    """Why ``outputs`` cannot be compared (NaN or Inf in them), or None when all are finite."""
    per_sample = ~np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)
    if not per_sample.any():
        return None
    return (f"{what} gives non-finite outputs (NaN or Inf) on {int(per_sample.sum())} of "
            f"{len(outputs)} validation samples, where the Keras model's are finite: the "
            "conversion overflowed or lost the model's range; this artifact is not usable")


def run_named(runtime: Runtime, inputs: Arrays, output_names: tuple[str, ...],
              description: str) -> Arrays:
    """Outputs of ``runtime`` by the model's output names: a runtime that names its single
    output otherwise (a TensorRT engine's tensor, an unsigned split pair) gets the model's name."""
    named = runtime.predict_named(inputs, description)
    if len(named) == 1 and len(output_names) == 1:
        return {output_names[0]: next(iter(named.values()))}
    return named


def latency_named(runtime: Runtime, inputs: Arrays, runs: int) -> Latency:
    """Single-sample latency of a runtime, on the first sample of ``inputs``."""
    return runtime.latency_named({n: a[0] for n, a in inputs.items()}, runs)


# Interpreters a split is shared out between, at most: each holds its own copy of the weights
# (XNNPACK packs them; fp16 ones unpacked to float32) and activations, and past a few, a sample
# per core gains little over a sample's own threads.
MOST_SIDE_BY_SIDE = 4


class TFLiteRuntime:
    """One LiteRT interpreter, fed and read by signature name (the Keras input layers' and output
    layers' names); quantized inputs and outputs go through their scale/zero point.

    Latency is the interpreter's with ``threads`` threads, as an app that asks for them runs it.
    A split is run by interpreters side by side that share the threads out, one each (without
    delegates; :meth:`side_by_side`), each taking the next sample: 0.46-0.97x the time of the
    one interpreter on 200 images of MobileNetV2 (``benchmarks/side_by_side.out.md``), with the
    very same outputs (a sample's outputs depend neither on which interpreter ran it nor on its
    thread count: tested)."""

    def __init__(self, path: Path, threads: int, delegates: list[Any] | None = None) -> None:
        self.path, self.threads, self.delegates = path, threads, delegates
        self.interpreter = self._load(threads)
        self.inputs = _by_name(self.interpreter.get_input_details(),
                               self._signature("inputs"))
        self.outputs = _by_name(self.interpreter.get_output_details(),
                                self._signature("outputs"))
        self.input_tensors = tuple(caller_tensor(name, detail)
                                   for name, detail in self.inputs.items())
        self._side_by_side: list[Any] = []  # made by the first split that uses them

    def _load(self, threads: int) -> Any:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ToolMissingError(
                "the LiteRT interpreter is not installed: pip install ai-edge-litert "
                "(or pip install '.[tflite]')"
            ) from None
        try:
            with console.native_noise_filtered():  # LiteRT announces its XNNPACK delegate
                interpreter = Interpreter(model_path=str(self.path), num_threads=threads,
                                          experimental_delegates=self.delegates)
                interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as error:
            hint = ""
            if "Flex" in str(error) or "Select TensorFlow op" in str(error):
                hint = (" The model uses TensorFlow (Flex) ops, which need the Flex delegate; "
                        "LiteRT's pip package does not include it.")
            raise ValidationError(f"LiteRT cannot load {self.path}: {str(error).strip()}{hint}") from None
        return interpreter

    def side_by_side(self, samples: int) -> list[Any]:
        """The interpreters that run ``samples`` samples side by side, sharing the ``threads``
        out (one thread each, or more when fewer interpreters than threads fit: at most
        MOST_SIDE_BY_SIDE, as many as fit in half the available memory), when there are
        threads to share, more than one sample and no delegate (a delegate's device serves one
        interpreter); else the one interpreter."""
        if self.threads < 2 or samples < 2 or self.delegates:
            return [self.interpreter]
        count = min(self.threads, samples, MOST_SIDE_BY_SIDE, self._fitting())
        if count < 2:
            return [self.interpreter]
        if len(self._side_by_side) != count:
            self._side_by_side = [self._load(self.threads // count) for _ in range(count)]
        return self._side_by_side

    def _fitting(self) -> int:
        """How many interpreters fit in half the available memory (unknown memory: no limit),
        each counted as the artifact twice (its weights, packed again by XNNPACK) and every
        tensor the loaded interpreter has (weights again, and activations as if none shared
        memory: an upper bound)."""
        available = available_memory()
        if available is None:
            return MOST_SIDE_BY_SIDE
        tensors = sum(int(np.prod(detail["shape"])) * np.dtype(detail["dtype"]).itemsize
                      for detail in self.interpreter.get_tensor_details())
        return available // 2 // max(1, 2 * self.path.stat().st_size + tensors)

    def _signature(self, kind: str) -> dict[str, int]:
        """Signature name → tensor index of the serving signature (empty without one)."""
        signatures = self.interpreter.get_signature_list()
        if not signatures:
            return {}
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        runner = self.interpreter.get_signature_runner(key)
        details = runner.get_input_details() if kind == "inputs" else runner.get_output_details()
        return {name: int(detail["index"]) for name, detail in details.items()}

    def quantize_inputs(self, inputs: Arrays) -> Arrays:
        return {name: quantize(inputs[name], detail) for name, detail in self.inputs.items()}

    def invoke_raw(self, quantized_one: Arrays, interpreter: Any = None) -> Arrays:
        """One sample through ``interpreter`` (default: the ``threads``-thread one)."""
        interpreter = self.interpreter if interpreter is None else interpreter
        for name, detail in self.inputs.items():
            interpreter.set_tensor(detail["index"], quantized_one[name])
        try:
            interpreter.invoke()
        except RuntimeError as error:  # XNNPACK may refuse the model when it first runs
            if (refusal := xnnpack_refusal(error)) is None:
                raise
            raise ValidationError(f"LiteRT cannot run {self.path}: {refusal}") from None
        return {name: interpreter.get_tensor(detail["index"])
                for name, detail in self.outputs.items()}

    def predict_named(self, inputs: Arrays, description: str = "") -> Arrays:
        """Run float32 inputs one sample at a time (:meth:`side_by_side`); dequantized float32
        outputs by name."""
        quantized = self.quantize_inputs(match_inputs(inputs, self.inputs))
        count = len(next(iter(quantized.values())))
        samples = ({name: array[i:i + 1] for name, array in quantized.items()}
                   for i in range(count))
        results = run_side_by_side(self.side_by_side(count), samples,
                                   lambda interpreter, one: self.invoke_raw(one, interpreter),
                                   description, count)
        return {name: np.concatenate([dequantize(result[name], detail) for result in results])
                for name, detail in self.outputs.items()}

    def latency_named(self, sample: Arrays, runs: int) -> Latency:
        """Single-sample latency of the interpreter (input already quantized)."""
        one = self.quantize_inputs({name: array[None] for name, array in
                                    match_inputs(sample, self.inputs).items()})
        return measure_latency(lambda: self.invoke_raw(one), runs)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.outputs)


def _by_name(details: list[dict[str, Any]], signature: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Tensor details keyed by signature name; without a signature, by tensor name (graph order)."""
    if not signature:
        return {str(detail["name"]): detail for detail in details}
    by_index = {int(detail["index"]): detail for detail in details}
    return {name: by_index[index] for name, index in signature.items()}


def caller_tensor(name: str, detail: dict[str, Any]) -> TensorInfo:
    """A LiteRT input as callers feed it (see :func:`quantize`): float32 unless it is an integer
    input without a scale (ids), per-sample shape from its signature (None: any size)."""
    dtype = np.dtype(detail["dtype"])
    scale, _ = detail["quantization"]
    fed = dtype.name if dtype.kind != "f" and scale == 0 and dtype.itemsize >= 4 else "float32"
    signature = detail.get("shape_signature")
    shape = signature if signature is not None and len(signature) else detail["shape"]
    return TensorInfo(name, tuple(int(v) if v >= 0 else None for v in shape[1:]), fed)


def match_inputs(inputs: Arrays, expected: dict[str, Any]) -> Arrays:
    """``inputs`` keyed by the runtime's input names: the same names, or one input each."""
    if set(inputs) == set(expected):
        return inputs
    if len(inputs) == 1 and len(expected) == 1:
        return {next(iter(expected)): next(iter(inputs.values()))}
    raise ValidationError(f"the artifact's inputs are {listed(expected)}; the data has "
                          f"{listed(inputs)}: inputs are matched by name")


def quantize(values: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.kind == "f" or (scale == 0 and dtype.itemsize >= 4):  # float, or int32/64 ids
        return values.astype(dtype, copy=False)
    if scale == 0:
        raise ValidationError(f"input tensor {detail['name']} is {dtype} without a scale")
    info = np.iinfo(dtype)
    # One float temporary, rounded and clipped in place (a 224x224 split is 120 MB of floats)
    quantized = np.divide(values, np.float32(scale), dtype=np.float32)
    quantized += np.float32(zero_point)
    np.round(quantized, out=quantized)
    np.clip(quantized, info.min, info.max, out=quantized)
    return quantized.astype(dtype)


def dequantize(raw: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if raw.dtype.kind == "f":
        return raw.astype(np.float32)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        return raw.astype(np.float32)
    return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)
