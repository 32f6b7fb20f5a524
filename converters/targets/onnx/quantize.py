"""Stage ``onnx-quantize``: the fp32 ONNX model → an explicit Q/DQ int8 ONNX model, calibrated on
the calibration split with onnxruntime's static quantization, in one of two schemes, because the
two runtimes that run Q/DQ models need different ones:

* ``onnxruntime`` (the onnx target's ``*_int8.onnx``, for onnxruntime on any CPU): uint8
  activations with a zero point, int8 symmetric per-channel weights in 7 bits (``reduce_range``).
  On x86-64 CPUs without VNNI (AVX2, and AVX-512 without VNNI) onnxruntime's fused int8 kernels
  add each pair of uint8 × int8 products into an int16 (VPMADDUBSW), which saturates above
  32767: with 8-bit weights a pair reaches 2·255·127 = 64770 and the outputs are silently
  wrong (the bundled sample: 62 % instead of 99 %, with onnxruntime's default session options;
  int8 symmetric activations are shifted to uint8 first, so they saturate the same way). With
  7-bit weights a pair is at most 2·255·64 = 32640: exact on those CPUs, and on CPUs with VNNI
  (int32 dot products) and on Arm (widening multiplies), where nothing saturates anyway.
* ``tensorrt`` (``*_int8-tensorrt.onnx``, what the TensorRT int8 engine is built from): int8
  symmetric activations and weights (zero point 0), 8-bit per-channel weights, float biases:
  the explicit quantization TensorRT 10/11 builds strongly typed (implicit INT8 calibrators are
  deprecated in 10 and removed in 11). TensorRT accumulates in int32, so 8-bit weights are
  safe there; onnxruntime's fused CPU kernels are not (above). The model says so in its ONNX
  metadata, and onnxruntime validates it with graph optimizations off: each Q/DQ pair computed
  as written, in float, the arithmetic TensorRT's int8 kernels compute.

Why onnxruntime's quantizer and not NVIDIA ModelOpt: both calibrate on the CPU and emit the
same Q/DQ form; onnxruntime is already needed to validate every ONNX artifact, while ModelOpt
pulls torch and cupy (about 2.5 min and several GB to install). The stage's key includes the
dataset's content hash (through the data stage), so a changed dataset recalibrates; the
calibration ranges are kept next to the model (``*_calibration.json``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from converters import console
from converters.fsutil import write_json_atomic
from converters.stages import data
from converters.stages.base import StageContext, StageParams
from converters.targets.onnx import metadata
from converters.targets.onnx.export import model_info, onnx_step, require

INT8 = "int8 quantization"
QUANTIZE_HINT = ("The fp32 ONNX model is built: ask for --quant fp32 to keep it without the int8 "
                 "model, or try another --opset")
# ONNX metadata_props keys a quantized model carries (read by converters.targets.onnx.runtime).
RUNTIME_KEY = "intended_runtime"
QUANTIZATION_KEY = "quantization"
ONNXRUNTIME_SESSION_KEY = "onnxruntime_session"
REFERENCE_SESSION = "graph_optimization_level=ORT_DISABLE_ALL"


class Int8Scheme(str, Enum):
    """Which runtime a Q/DQ int8 model is made for (see the module docstring)."""

    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


DESCRIPTIONS = {
    Int8Scheme.ONNXRUNTIME: ("QDQ int8 for onnxruntime on any CPU: uint8 activations, int8 "
                             "per-channel weights in 7 bits (no int16 saturation without VNNI)"),
    Int8Scheme.TENSORRT: ("QDQ int8 for TensorRT explicit quantization: int8 symmetric "
                          "activations, 8-bit symmetric per-channel weights, float biases"),
}


def calibration_record(artifact: str) -> str:
    """The calibration ranges' file beside an int8 model (``x_int8.onnx`` →
    ``x_int8_calibration.json``)."""
    return artifact.removesuffix(".onnx") + "_calibration.json"


@dataclass(frozen=True, kw_only=True)
class QuantizeParams(StageParams):
    source: str  # the fp32 ONNX model
    artifact: str
    info: str
    calibration: str  # the calibration record (ranges)
    method: str  # onnxruntime's calibration method
    scheme: str  # an Int8Scheme value (a job file carries it as text)


class _CalibrationReader:
    """Feeds the calibration split to onnxruntime's calibrator, one sample at a time, every input
    by name in its own dtype (data.load_inputs casts each to the model input's: an int32 or
    int64 input stays integer)."""

    def __init__(self, inputs: dict[str, np.ndarray]) -> None:
        count = data.sample_count(inputs)
        self._batches = iter([{name: array[i:i + 1] for name, array in inputs.items()}
                              for i in range(count)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_onnx(context: StageContext) -> None:
    """Stage ``onnx-quantize``: fp32 ONNX → Q/DQ int8 ONNX, calibrated on the calibration split."""
    onnx = require("onnx")
    quantization = require("onnxruntime.quantization")
    params = QuantizeParams.of(context)
    scheme = Int8Scheme(params.scheme)
    started = time.perf_counter()
    source = context.read(params.source)
    calibration = data.load_inputs(context.build_dir, data.CALIBRATION)
    model = context.model_path.name
    target = context.write(params.artifact)
    prepared = target.with_name(target.stem + "_prepared.onnx")
    with onnx_step(model, "preparing the fp32 model (shape inference)", QUANTIZE_HINT, INT8):
        # ONNX shape inference suffices for image models; symbolic inference would need sympy.
        quantization.shape_inference.quant_pre_process(str(source), str(prepared),
                                                       skip_symbolic_shape=True)
    console.info(f"calibrating ONNX int8 for {scheme.value} on "
                 f"{data.sample_count(calibration)} samples ({params.method})")
    with onnx_step(model, "calibrating and quantizing (onnxruntime quantize_static)",
                   QUANTIZE_HINT, INT8):
        quantize_static(quantization, str(prepared), str(target),
                        _CalibrationReader(calibration), params.method, scheme)
    prepared.unlink()
    with onnx_step(model, "checking the int8 model (onnx.checker)", QUANTIZE_HINT, INT8):
        model_proto = onnx.load(str(target))
        describe(model_proto, scheme)
        onnx.checker.check_model(model_proto)
        onnx.save(model_proto, str(target))
    ranges = calibration_ranges(model_proto)
    write_json_atomic(context.write(params.calibration), {
        "method": params.method, "images": data.sample_count(calibration),
        "scheme": scheme.value, "symmetric": scheme is Int8Scheme.TENSORRT, "scales": ranges})
    write_json_atomic(context.write(params.info), model_info(
        model_proto, time.perf_counter() - started,
        {"quantization": DESCRIPTIONS[scheme], "scheme": scheme.value, "method": params.method}))
    console.info(f"ONNX int8 (Q/DQ, {scheme.value}): {target.stat().st_size / 1024:.1f} KiB")


def quantize_static(quantization: Any, source: str, target: str, reader: Any, method: str,
                    scheme: Int8Scheme) -> None:
    """onnxruntime's static quantization (QDQ format, per-channel weights, float biases) with
    the scheme's activation type, symmetry and weight width."""
    for_tensorrt = scheme is Int8Scheme.TENSORRT
    quantization.quantize_static(
        source, target, reader,
        quant_format=quantization.QuantFormat.QDQ,
        activation_type=(quantization.QuantType.QInt8 if for_tensorrt
                         else quantization.QuantType.QUInt8),
        weight_type=quantization.QuantType.QInt8,
        per_channel=True,
        reduce_range=not for_tensorrt,
        calibrate_method=getattr(quantization.CalibrationMethod, method),
        # Biases stay float: TensorRT takes int8 Q/DQ pairs, not int32 bias quantization.
        extra_options={"ActivationSymmetric": for_tensorrt, "WeightSymmetric": True,
                       "QuantizeBias": False},
    )


def describe(model_proto: Any, scheme: Int8Scheme) -> None:
    """Say in the model's metadata_props what it is quantized for and, for TensorRT, how
    onnxruntime reproduces TensorRT's arithmetic."""
    entries = {QUANTIZATION_KEY: DESCRIPTIONS[scheme], RUNTIME_KEY: scheme.value}
    if scheme is Int8Scheme.TENSORRT:
        entries[ONNXRUNTIME_SESSION_KEY] = REFERENCE_SESSION
    metadata.write(model_proto, entries)


def calibration_ranges(model_proto: Any) -> dict[str, float]:
    """Activation scales the calibration chose: QuantizeLinear input → scale."""
    from onnx import numpy_helper

    initializers = {init.name: numpy_helper.to_array(init) for init in model_proto.graph.initializer}
    ranges = {}
    for node in model_proto.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in initializers:
            scale = initializers.get(node.input[1])
            if scale is not None and scale.size == 1:
                ranges[node.input[0]] = float(scale)
    return ranges
