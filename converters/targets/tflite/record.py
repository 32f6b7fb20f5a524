"""What a TFLite stage records beside its artifact (the info JSON the report reads), and the
checks both engines' artifacts pass."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from converters import console
from converters.errors import ConversionError
from converters.stages import data
from converters.stages.base import StageContext
from converters.targets.tflite import engine_choice, quantizer_engine
from converters.targets.tflite import flatbuffer as tflite_inspect
from converters.targets.tflite.params import ModeParams

# report.json's per-artifact op_errors: the ops adding the most error, measured on this many
# calibration images (few: every tensor of both models is kept in memory per batch).
TOP_OP_ERRORS = 10
OP_ERROR_SAMPLES = 8
# One image per run: both models keep every tensor, which for MobileNetV2 224x224 at a batch of
# 8 held +1.2 GiB in the stage process (benchmarks/default_vs_seed.out.md's memory goal).
OP_ERROR_BATCH = 1
OP_ERROR_METRIC = "added_nmse"  # quantizer_engine.OpError: the per-channel NMSE this op adds


def tf_converter_label() -> str:
    """``"tf.lite.TFLiteConverter 2.21.0"`` (TensorFlow's version: tensorflow or tensorflow-cpu)."""
    import tensorflow as tf

    return f"{engine_choice.TF_CONVERTER} {tf.__version__}"


def quantizer_label() -> str:
    """``"ai-edge-quantizer 0.10.0"``."""
    return f"{engine_choice.QUANTIZER} {metadata.version('ai-edge-quantizer')}"


def artifact_info(context: StageContext, graph: tflite_inspect.TFLiteGraph, seconds: float,
                  engine: str) -> dict[str, Any]:
    """The info JSON fields every TFLite artifact has, whichever engine made it."""
    params = ModeParams.of(context)
    return {
        "mode": params.mode,
        "engine": engine,
        "batch_size": params.batch_size,
        "io_dtype": params.io_dtype,
        "allow_flex": params.allow_flex,
        "allow_float_fallback": params.allow_float_fallback,
        "conversion_seconds": round(seconds, 3),
        "float_ops": graph.float_ops(),
        "op_counts": graph.op_counts(),
        "input": _io(graph.inputs[0]),
        "output": _io(graph.outputs[0]),
    }


def _io(tensor: tflite_inspect.TensorInfo) -> dict[str, Any]:
    return {"type": tensor.type, "shape": list(tensor.shape), "scale": list(tensor.scale),
            "zero_point": list(tensor.zero_point)}


# Ops that only move values: quantized, their output keeps their input's scale and zero point, so
# they add no error. The per-channel metric would still "measure" some when a flatten or a
# transpose changes which axis holds the channels: ranking them would point at the wrong op.
LAYOUT_OPS = frozenset({"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE"})


def op_errors(context: StageContext, flatbuffer: bytes) -> list[dict[str, Any]] | None:
    """The (at most 10) ops whose quantization adds the most error against the fp32 artifact
    (``params.op_errors_against``), on the first calibration images, largest first; ops
    adding none, and ops that only move values (:data:`LAYOUT_OPS`), are left out. None when
    not asked."""
    against = ModeParams.of(context).op_errors_against
    if not against:
        return None
    fp32 = context.read(against).read_bytes()
    samples = {name: array[:OP_ERROR_SAMPLES] for name, array in
               data.load_inputs(context.build_dir, data.CALIBRATION).items()}
    with console.native_noise_filtered():  # LiteRT announces its XNNPACK delegate
        errors = quantizer_engine.op_sensitivity(fp32, flatbuffer, samples, top=None,
                                                 batch=OP_ERROR_BATCH)
    return [op_error_row(error) for error in errors
            if error.added_nmse > 0 and error.op not in LAYOUT_OPS][:TOP_OP_ERRORS]


def op_error_row(error: quantizer_engine.OpError) -> dict[str, Any]:
    """One row of report.json's ``op_errors``."""
    return {"op": error.op, "index": error.index, "tensor": error.scope.rstrip(";"),
            "metric": OP_ERROR_METRIC, "value": _rounded(error.added_nmse),
            "output_nmse": _rounded(error.output_nmse)}


def _rounded(value: float) -> float:
    return float(f"{value:.4g}")


def require_full_integer(context: StageContext, graph: tflite_inspect.TFLiteGraph) -> None:
    """Strict int8: fail naming every op that still computes in float.

    TF 2.21 does not refuse unquantizable ops under TFLITE_BUILTINS_INT8: it wraps them in
    DEQUANTIZE/QUANTIZE and keeps them float; ai-edge-quantizer keeps ops it has no int8 rule
    for in float. So the converted graph itself is checked.
    """
    float_ops = graph.float_ops()
    if float_ops:
        listed = ", ".join(f"{item['op']} ({item['count']})" for item in float_ops)
        raise ConversionError(
            f"full-integer int8 conversion of {context.model_path} failed: these ops cannot be "
            f"quantized to int8: {listed}. Re-run with --allow-float-fallback to keep them in "
            "float (mixed int8/float; an Edge TPU runs them on the CPU), or replace them in "
            "the model"
        )
