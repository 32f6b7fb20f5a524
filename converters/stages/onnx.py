"""Stages of the ONNX target: export (``onnx-export``) and explicit int8 quantization
(``onnx-quantize``), both in the tflite image (TensorFlow, tf2onnx, onnx, onnxruntime).

Export: the exported SavedModel's serving signature, wrapped in a tf.function with an explicit
input signature, goes through ``tf2onnx.convert.from_function`` (tf2onnx 1.17's ``from_keras``
fails on Keras 3 models: it expects the Keras 2 model internals). The batch dimension stays
dynamic and is named ``batch``; ``onnx.checker``
checks the result.

INT8 — why onnxruntime's static quantization and not NVIDIA ModelOpt: both calibrate on the CPU
and both emit the explicit Q/DQ form TensorRT 10/11 builds strongly typed (implicit INT8
calibrators are deprecated in 10 and removed in 11). onnxruntime is already needed to validate
every ONNX artifact, so it adds nothing to install, while ModelOpt pulls torch and cupy (about
2.5 min and several GB to install, measured on the development machine) for the same result
on these models. The settings are the ones
TensorRT accepts: QDQ format, int8 activations and weights, symmetric (zero point 0),
per-channel weights, float biases. Calibration uses the project's calibration split; the stage's key includes
the dataset's content hash (through the data stage), so a changed dataset recalibrates, and the
calibration ranges are kept next to the model (``*_calibration.json``).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import numpy as np

from converters import console
from converters.errors import ConversionError, ToolMissingError
from converters.fsutil import write_json_atomic
from converters.stages import data, export
from converters.stages.base import StageContext

BATCH_AXIS = "batch"
INPUT_NAME = "input"
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def onnx_artifact(stem: str, variant: str) -> str:
    return f"onnx/{stem}_{variant}.onnx"


def calibration_record(stem: str) -> str:
    return f"onnx/{stem}_int8_calibration.json"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ToolMissingError(f"the ONNX stages need {module.split('.')[0]}: pip install "
                               "'.[onnx]' (or use the tflite image: invoke images)") from None


def export_onnx(context: StageContext) -> None:
    """Stage ``onnx-export``: SavedModel → ONNX (fp32), dynamic batch axis named ``batch``."""
    import tensorflow as tf

    tf2onnx = _require("tf2onnx")
    onnx = _require("onnx")
    params = context.params
    started = time.perf_counter()
    loaded = tf.saved_model.load(str(context.read(export.SAVED_MODEL)))
    signature = loaded.signatures["serving_default"]
    [(input_key, spec)] = signature.structured_input_signature[1].items()
    input_spec = tf.TensorSpec([None, *spec.shape[1:]], spec.dtype, name=INPUT_NAME)

    @tf.function(input_signature=[input_spec])
    def serve(images: Any) -> Any:
        outputs = signature(**{input_key: images})
        return next(iter(outputs.values())) if isinstance(outputs, dict) else outputs

    console.info(f"exporting ONNX (opset {params['opset']}) with tf2onnx.from_function")
    try:
        model_proto, _ = tf2onnx.convert.from_function(serve, input_signature=[input_spec],
                                                       opset=params["opset"])
    except Exception as error:  # tf2onnx raises many kinds for unsupported ops
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0]
        raise ConversionError(f"ONNX export of {context.model_path} failed: {first_line}") from None
    name_batch_axis(model_proto)
    onnx.checker.check_model(model_proto)
    path = context.write(params["artifact"])
    onnx.save(model_proto, str(path))
    info = model_info(model_proto, time.perf_counter() - started, {"opset": params["opset"]})
    write_json_atomic(context.write(params["info"]), info)
    console.info(f"ONNX fp32: {path.stat().st_size / 1024:.1f} KiB")


def name_batch_axis(model_proto: Any) -> None:
    """tf2onnx names unknown dimensions unk__N; inputs' and outputs' first axis is the batch."""
    for value in [*model_proto.graph.input, *model_proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = BATCH_AXIS


def model_info(model_proto: Any, seconds: float, extra: dict[str, Any]) -> dict[str, Any]:
    """The conversion details the report reads (same keys as a TFLite artifact's)."""
    graph = model_proto.graph
    initializers = {init.name for init in graph.initializer}
    dequantized = {node.output[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    float_ops: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type in QDQ_OPS:
            continue
        activations = [name for name in node.input if name and name not in initializers]
        if not activations or not all(name in dequantized for name in activations):
            float_ops[node.op_type] += 1
    return {
        **extra,
        "conversion_seconds": round(seconds, 3),
        "float_ops": [{"op": op, "count": count} for op, count in float_ops.items()],
        "op_counts": dict(Counter(node.op_type for node in graph.node)),
        "input": _value_info(graph.input[0]),
        "output": _value_info(graph.output[0]),
    }


def _value_info(value: Any) -> dict[str, Any]:
    from onnx import TensorProto

    tensor_type = value.type.tensor_type
    shape = [d.dim_param or d.dim_value for d in tensor_type.shape.dim]
    return {"name": value.name, "type": TensorProto.DataType.Name(tensor_type.elem_type),
            "shape": shape, "scale": [], "zero_point": []}


class _CalibrationReader:
    """Feeds the calibration split to onnxruntime's calibrator, one image at a time."""

    def __init__(self, images: np.ndarray, input_name: str) -> None:
        self._batches = iter([{input_name: image[None].astype(np.float32)} for image in images])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_onnx(context: StageContext) -> None:
    """Stage ``onnx-quantize``: fp32 ONNX → Q/DQ int8 ONNX, calibrated on the calibration split."""
    onnx = _require("onnx")
    quantization = _require("onnxruntime.quantization")
    params = context.params
    started = time.perf_counter()
    source = context.read(params["source"])
    calibration = data.load_split(context.build_dir, data.CALIBRATION)
    input_name = onnx.load(str(source)).graph.input[0].name
    target = context.write(params["artifact"])
    prepared = target.with_name(target.stem + "_prepared.onnx")
    # ONNX shape inference suffices for image models; symbolic inference would need sympy.
    quantization.shape_inference.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    console.info(f"calibrating ONNX int8 on {len(calibration)} images ({params['method']})")
    quantization.quantize_static(
        str(prepared), str(target), _CalibrationReader(calibration, input_name),
        quant_format=quantization.QuantFormat.QDQ,
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
        per_channel=True,
        calibrate_method=getattr(quantization.CalibrationMethod, params["method"]),
        # Biases stay float: TensorRT takes int8 Q/DQ pairs, not int32 bias quantization.
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
    )
    prepared.unlink()
    model_proto = onnx.load(str(target))
    onnx.checker.check_model(model_proto)
    ranges = calibration_ranges(model_proto)
    write_json_atomic(context.write(params["calibration"]), {
        "method": params["method"], "images": int(len(calibration)), "symmetric": True,
        "scales": ranges})
    write_json_atomic(context.write(params["info"]), model_info(
        model_proto, time.perf_counter() - started,
        {"quantization": "QDQ int8, symmetric, per-channel weights", "method": params["method"]}))
    console.info(f"ONNX int8 (Q/DQ): {target.stat().st_size / 1024:.1f} KiB")


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
