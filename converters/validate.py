"""Run an artifact on the held-out split and compare it with the Keras model's outputs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters import console
from converters.errors import ToolMissingError, ValidationError

WARMUP_RUNS = 3


def compare(reference: np.ndarray, outputs: np.ndarray,
            labels: np.ndarray | None) -> dict[str, float | None]:
    """Agreement metrics between reference and artifact outputs (both float, same shape).

    cosine_similarity is the mean over samples of the cosine between the flattened output
    vectors; top1_agreement compares arg-max classes; accuracy needs labels.
    """
    if reference.shape != outputs.shape:
        raise ValidationError(
            f"artifact output shape {outputs.shape} differs from the Keras output shape "
            f"{reference.shape}"
        )
    ref = reference.reshape(len(reference), -1).astype(np.float64)
    out = outputs.reshape(len(outputs), -1).astype(np.float64)
    difference = np.abs(ref - out)
    ref_norms = np.linalg.norm(ref, axis=1)
    out_norms = np.linalg.norm(out, axis=1)
    denominators = ref_norms * out_norms
    # Two zero vectors agree perfectly; one zero vector against a non-zero one does not.
    both_zero = ((ref_norms == 0) & (out_norms == 0)).astype(np.float64)
    cosine = np.divide(np.sum(ref * out, axis=1), denominators, out=both_zero,
                       where=denominators > 0)
    predicted = out.argmax(axis=1)
    return {
        "max_abs_error": float(difference.max()),
        "mean_abs_error": float(difference.mean()),
        "cosine_similarity": float(cosine.mean()),
        "top1_agreement": float(np.mean(predicted == ref.argmax(axis=1))),
        "accuracy": accuracy(outputs, labels),
    }


def non_finite_problem(outputs: np.ndarray, what: str) -> str | None:
    """Why ``outputs`` cannot be compared (NaN or Inf in them), or None when all are finite."""
    per_sample = ~np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)
    if not per_sample.any():
        return None
    return (f"{what} gives non-finite outputs (NaN or Inf) on {int(per_sample.sum())} of "
            f"{len(outputs)} validation samples, where the Keras model's are finite: the "
            "conversion overflowed or lost the model's range; this artifact is not usable")


def accuracy(outputs: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None:
        return None
    predicted = outputs.reshape(len(outputs), -1).argmax(axis=1)
    return float(np.mean(predicted == labels))


@dataclass(frozen=True)
class Latency:
    """Wall times of repeated single calls: the median and the 10th-90th percentile spread."""

    median_ms: float
    p10_ms: float
    p90_ms: float

    def as_record(self) -> dict[str, Any]:
        """The fields a validation or reference record stores (``latency_ms`` is the median)."""
        return {"latency_ms": self.median_ms, "latency_spread_ms": [self.p10_ms, self.p90_ms]}


def measure_latency(call: Callable[[], object], runs: int) -> Latency:
    """Time ``call`` ``runs`` times after a short warm-up; the median and p10-p90 of the runs."""
    for _ in range(WARMUP_RUNS):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    p10, p90 = np.percentile(times, [10, 90])
    return Latency(float(statistics.median(times)), float(p10), float(p90))


def median_latency_ms(call: Callable[[], object], runs: int) -> float:
    """Median wall time of ``call`` over ``runs`` calls, after a short warm-up."""
    return measure_latency(call, runs).median_ms


def predict_one_by_one(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                       description: str) -> np.ndarray:
    """Outputs of ``run`` on each image as a batch of one, stacked (with progress)."""
    results = [run(images[i:i + 1])[0]
               for i in console.progress(range(len(images)), description, total=len(images))]
    return np.stack(results)


class TFLiteRunner:
    """One LiteRT interpreter; quantized inputs and outputs go through their scale/zero point."""

    def __init__(self, path: Path, threads: int, delegates: list[Any] | None = None) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ToolMissingError(
                "the LiteRT interpreter is not installed: pip install ai-edge-litert "
                "(or pip install '.[tflite]')"
            ) from None
        try:
            with console.native_noise_filtered():  # LiteRT announces its XNNPACK delegate
                self.interpreter = Interpreter(model_path=str(path), num_threads=threads,
                                               experimental_delegates=delegates)
                self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as error:
            hint = ""
            if "Flex" in str(error) or "Select TensorFlow op" in str(error):
                hint = (" The model uses TensorFlow (Flex) ops, which need the Flex delegate; "
                        "LiteRT's pip package does not include it.")
            raise ValidationError(f"LiteRT cannot load {path}: {str(error).strip()}{hint}") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        height, width, channels = (int(v) for v in self.input["shape"][1:])
        self.image_size = (height, width, channels)

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.input["dtype"])

    def quantize_input(self, images: np.ndarray) -> np.ndarray:
        dtype = self.input_dtype
        if dtype == np.float32:
            return images.astype(np.float32)
        scale, zero_point = self.input["quantization"]
        if scale == 0:
            raise ValidationError(f"input tensor {self.input['name']} is {dtype} without a scale")
        info = np.iinfo(dtype)
        quantized = np.round(images / scale + zero_point)
        return np.clip(quantized, info.min, info.max).astype(dtype)

    def dequantize_output(self, raw: np.ndarray) -> np.ndarray:
        if raw.dtype == np.float32:
            return raw
        scale, zero_point = self.output["quantization"]
        if scale == 0:
            return raw.astype(np.float32)
        return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def invoke_raw(self, quantized_one: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.input["index"], quantized_one)
        self.interpreter.invoke()
        output: np.ndarray = self.interpreter.get_tensor(self.output["index"])
        return output

    def predict(self, images: np.ndarray, description: str = "") -> np.ndarray:
        """Run float32 images (N×H×W×C) one at a time; return dequantized float32 outputs."""
        quantized = self.quantize_input(images)
        return predict_one_by_one(lambda one: self.dequantize_output(self.invoke_raw(one)),
                                  quantized, description)

    def latency(self, image: np.ndarray, runs: int) -> Latency:
        """Single-image latency of the interpreter (input already quantized)."""
        one = self.quantize_input(image[None])
        return measure_latency(lambda: self.invoke_raw(one), runs)


class OnnxRunner:
    """One onnxruntime CPU session; the same interface as :class:`TFLiteRunner`."""

    def __init__(self, path: Path, threads: int) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ToolMissingError("onnxruntime is not installed: pip install '.[onnx]'") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(str(path), options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise ValidationError(f"onnxruntime cannot load {path}: {str(error).strip()}") from None
        self.input_name = self.session.get_inputs()[0].name
        height, width, channels = self.session.get_inputs()[0].shape[1:]
        self.image_size = (int(height), int(width), int(channels))

    def run(self, images: np.ndarray) -> np.ndarray:
        output: np.ndarray = self.session.run(None, {self.input_name: images.astype(np.float32)})[0]
        return output

    def predict(self, images: np.ndarray, description: str = "") -> np.ndarray:
        """Run float32 images (N×H×W×C) one at a time, as the TFLite runner does."""
        return predict_one_by_one(self.run, images, description)

    def latency(self, image: np.ndarray, runs: int) -> Latency:
        """Single-image latency of the session."""
        one = image[None].astype(np.float32)
        return measure_latency(lambda: self.run(one), runs)
