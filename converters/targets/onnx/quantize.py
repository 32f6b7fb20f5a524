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
from typing import Any

import numpy as np

from converters import console
from converters.fsutil import write_json_atomic
from converters.inputs.tensor_info import IMAGE_CHANNELS
from converters.stages import data
from converters.stages.base import StageContext
from converters.targets.onnx import metadata
from converters.targets.onnx.export import model_info, onnx_step, require
from converters.targets.onnx.params import Int8Scheme, QuantizeParams

INT8 = "int8 quantization"
QUANTIZE_HINT = ("The fp32 ONNX model is built: ask for --quant fp32 to keep it without the int8 "
                 "model, or try another --opset")
# ONNX metadata_props keys a quantized model carries (read by converters.targets.onnx.runtime).
RUNTIME_KEY = "intended_runtime"
QUANTIZATION_KEY = "quantization"
ONNXRUNTIME_SESSION_KEY = "onnxruntime_session"
REFERENCE_SESSION = "graph_optimization_level=ORT_DISABLE_ALL"
# An input is quantized with one scale for all its features; a feature whose calibrated range is
# under this share of the widest feature's gets at most 255 / 64 ≈ 4 steps of that scale (a
# 0..1 feature beside a 0..70000 one rounds to a single value): such an input stays float.
FEATURE_RANGE_RATIO = 64.0
AFFINE_OPS = frozenset({"Sub", "Add", "Mul", "Div"})  # with one constant operand: per feature
RESCALING_OPS = frozenset({"Mul", "Div"})


DESCRIPTIONS = {
    Int8Scheme.ONNXRUNTIME: ("QDQ int8 for onnxruntime on any CPU: uint8 activations, int8 "
                             "per-channel weights in 7 bits (no int16 saturation without VNNI)"),
    Int8Scheme.TENSORRT: ("QDQ int8 for TensorRT explicit quantization: int8 symmetric "
                          "activations, 8-bit symmetric per-channel weights, float biases"),
}


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
    kept_float = inputs_kept_float(calibration)
    for kept in kept_float:
        console.info(f"ONNX int8: input '{kept['input']}' stays float: {kept['reason']}")
    with onnx_step(model, "calibrating and quantizing (onnxruntime quantize_static)",
                   QUANTIZE_HINT, INT8):
        quantize_static(quantization, str(prepared), str(target),
                        _CalibrationReader(calibration), params.method, scheme,
                        float_nodes(onnx.load(str(prepared)), [k["input"] for k in kept_float])
                        if kept_float else [])
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
        {"quantization": DESCRIPTIONS[scheme], "scheme": scheme.value, "method": params.method,
         "inputs_kept_float": kept_float}))
    console.info(f"ONNX int8 (Q/DQ, {scheme.value}): {target.stat().st_size / 1024:.1f} KiB")


def inputs_kept_float(calibration: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The float inputs whose features (last axis) span ranges too different for one int8
    scale (:data:`FEATURE_RANGE_RATIO`), with the numbers; images (batch × height × width ×
    1, 3 or 4 channels of one pixel range) never are."""
    kept = []
    for name, values in calibration.items():
        if not np.issubdtype(values.dtype, np.floating) or values.ndim < 2 or values.shape[-1] < 2:
            continue
        if values.ndim == 4 and values.shape[-1] in IMAGE_CHANNELS:
            continue  # pixels: every channel has the range of the preprocessing
        spans = np.abs(values.reshape(-1, values.shape[-1])).max(axis=0)
        used = spans[spans > 0]
        if used.size < 2 or used.max() / used.min() <= FEATURE_RANGE_RATIO:
            continue
        widest, narrowest = int(spans.argmax()), int(np.flatnonzero(spans == used.min())[0])
        kept.append({"input": name, "feature_range_ratio": float(used.max() / used.min()),
                     "reason": (f"its features' calibrated ranges differ {used.max() / used.min():.3g}-fold "
                                f"(feature {widest} up to {spans[widest]:.4g}, feature {narrowest} "
                                f"up to {spans[narrowest]:.4g}): one int8 scale for all would "
                                "round the narrow ones away, so the ops reading it compute in float")})
    return kept


def float_nodes(model_proto: Any, inputs: list[str]) -> list[str]:
    """The nodes to keep float so that ``inputs`` reach int8 only once their features share a
    range: the per-feature affine ops that follow each input (Sub, Add, Mul, Div by a constant:
    a Normalization layer), and the first other op unless such an op rescaled every feature."""
    initializers = {init.name: init for init in model_proto.graph.initializer}
    readers: dict[str, list[Any]] = {}
    for node in model_proto.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    kept: list[str] = []
    pending = [(name, False) for name in inputs]  # (tensor, rescaled per feature on the way)
    while pending:
        tensor, rescaled = pending.pop()
        for node in readers.get(tensor, []):
            constants = [initializers[name] for name in node.input if name in initializers]
            affine = node.op_type in AFFINE_OPS and len(constants) == 1
            if node.name in kept or (not affine and rescaled):
                continue
            kept.append(node.name)
            if affine:
                per_feature = node.op_type in RESCALING_OPS and np.prod(constants[0].dims) > 1
                pending.extend((output, rescaled or per_feature) for output in node.output)
    return kept


def quantize_static(quantization: Any, source: str, target: str, reader: Any, method: str,
                    scheme: Int8Scheme, float_nodes: list[str]) -> None:
    """onnxruntime's static quantization (QDQ format, per-channel weights, float biases) with
    the scheme's activation type, symmetry and weight width; ``float_nodes`` stay float."""
    for_tensorrt = scheme is Int8Scheme.TENSORRT
    quantization.quantize_static(
        source, target, reader,
        nodes_to_exclude=float_nodes,
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
