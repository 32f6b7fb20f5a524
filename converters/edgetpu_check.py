"""Edge TPU pre-check: predict, without the compiler, which ops of an int8 .tflite map to the TPU.

Reads the flatbuffer with LiteRT's schema module (:mod:`converters.tflite_inspect`) and checks
every operator against Coral's documented requirements (FACTS.md): supported ops, integer data
types, static shapes, batch 1, at most 3 non-unit innermost dimensions, and per-op limits. The
compiler cuts the graph once: from the first op it cannot map, every op runs on the CPU. The
result has the structure of the compiler's own report (:mod:`converters.edgetpu_compiler`), so
the two are compared side by side.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters import tflite_inspect
from converters.errors import ModelError
from converters.tflite_inspect import OperatorInfo

MAPPED = "Mapped to Edge TPU"
# The compiler's statuses (FACTS.md); the pre-check adds a specific reason to each.
NOT_SUPPORTED = "Operation not supported"
AFTER_CUT = "More than one subgraph is not supported"
DATA_TYPE = "Operation is working on an unsupported data type"
RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
LIMITATION = "Operation is otherwise supported, but not mapped due to some unspecified limitation"

SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAX_POOL_2D", "MAXIMUM", "MINIMUM", "MEAN", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE",
    "TRANSPOSE_CONV",
})
INTEGER_TYPES = frozenset({"INT8", "UINT8"})
# Constant inputs that are shapes, axes, sizes or biases, not data the TPU quantizes.
INDEX_TYPES = frozenset({"INT32", "INT64"})
SOFTMAX_MAX_ELEMENTS = 16_000
MEAN_Z_MULTIPLE = 4
REDUCTIONS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"})
NO_FUSED_ACTIVATION = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"})


@dataclass(frozen=True)
class OpVerdict:
    index: int
    operator: str
    status: str  # the compiler's wording
    reason: str  # what exactly breaks the rule ("" when mapped)

    @property
    def on_tpu(self) -> bool:
        return self.status == MAPPED


def check_model(path: Path) -> dict[str, Any]:
    """Pre-check a .tflite file a user names (clear errors for a missing or foreign file)."""
    if not path.is_file():
        raise ModelError(f"{path} does not exist: pass the int8 .tflite file to check (invoke "
                         "convert --target edgetpu writes build/<model>/edgetpu/<model>_int8.tflite)")
    try:
        graph = tflite_inspect.read(path)
    except Exception as error:  # the schema reader raises many kinds on foreign bytes
        raise ModelError(f"{path} is not a TFLite flatbuffer ({type(error).__name__}): pass a "
                         ".tflite file") from None
    return check(graph, str(path))


def check_file(path: Path) -> dict[str, Any]:
    return check(tflite_inspect.read(path), str(path))


def check(graph: tflite_inspect.TFLiteGraph, model: str) -> dict[str, Any]:
    """The predicted op mapping and the model-level problems that stop any compilation."""
    blocking = model_problems(graph)
    verdicts: list[OpVerdict] = []
    cut: OpVerdict | None = None
    for op in graph.operators:
        status, reason = op_problem(op)
        if cut is None and status != MAPPED:
            cut = OpVerdict(op.index, op.name, status, reason)
            verdicts.append(cut)
        elif cut is not None:
            why = f"runs on the CPU after the cut at op {cut.index} ({cut.operator})"
            verdicts.append(OpVerdict(op.index, op.name, AFTER_CUT if status == MAPPED else status,
                                      why if status == MAPPED else f"{reason}; {why}"))
        else:
            verdicts.append(OpVerdict(op.index, op.name, MAPPED, ""))
    return summarise(model, verdicts, blocking, graph.subgraphs)


def summarise(model: str, verdicts: list[OpVerdict], blocking: list[str],
              subgraphs: int) -> dict[str, Any]:
    tpu_ops = sum(v.on_tpu for v in verdicts)
    total = len(verdicts)
    rows = Counter((v.operator, v.status) for v in verdicts)
    return {
        "model": model,
        "compiles": not blocking,
        "blocking": blocking,
        "total_ops": total,
        "tpu_ops": tpu_ops if not blocking else 0,
        "cpu_ops": total - tpu_ops if not blocking else total,
        "tpu_fraction": (tpu_ops / total if total else 0.0) if not blocking else 0.0,
        "edgetpu_subgraphs": int(tpu_ops > 0 and not blocking),
        "model_subgraphs": subgraphs,
        "table": [{"operator": op, "count": count, "status": status}
                  for (op, status), count in rows.items()],
        "cpu_op_reasons": [{"index": v.index, "operator": v.operator, "status": v.status,
                            "reason": v.reason} for v in verdicts if not v.on_tpu],
    }


def model_problems(graph: tflite_inspect.TFLiteGraph) -> list[str]:
    """What makes the compiler refuse the whole model (batch, static shapes, quantization)."""
    problems = []
    for tensor in graph.inputs:
        if -1 in tensor.shape_signature:
            problems.append(f"input '{tensor.name}' has a dynamic shape {list(tensor.shape_signature)}"
                            " (-1): the Edge TPU needs static shapes; convert with batch size 1")
        elif tensor.shape and tensor.shape[0] != 1:
            problems.append(f"input '{tensor.name}' has batch size {tensor.shape[0]}: the Edge TPU "
                            "needs batch size 1")
    if graph.operators and not any(t.type in INTEGER_TYPES for op in graph.operators
                                   for t in op.outputs):
        problems.append("Model not quantized: no op produces an int8/uint8 tensor; convert "
                        "with full integer int8 (--quant int8 or --target edgetpu)")
    return problems


def op_problem(op: OperatorInfo) -> tuple[str, str]:
    """(compiler status, specific reason) of one operator, ignoring its position."""
    if op.custom or op.name not in SUPPORTED_OPS:
        return NOT_SUPPORTED, f"{op.name} is not in the Edge TPU's supported operations"
    for tensor in (*op.inputs, *op.outputs):
        if tensor.type not in INTEGER_TYPES and not (tensor.constant and tensor.type in INDEX_TYPES):
            return DATA_TYPE, f"tensor '{tensor.name}' is {tensor.type}, not int8/uint8"
    for tensor in (*[t for t in op.inputs if not t.constant], *op.outputs):
        if len(tensor.shape) > 3 and any(size > 1 for size in tensor.shape[:-3]):
            return RANK, (f"tensor '{tensor.name}' has shape {list(tensor.shape)}: only the 3 "
                          "innermost dimensions may be larger than 1")
    reason = limit_problem(op)
    return (LIMITATION, reason) if reason else (MAPPED, "")


def limit_problem(op: OperatorInfo) -> str:
    """The documented per-op limits; "" when none is broken."""
    options = op.options
    name = op.name
    if name in {"CONV_2D", "DEPTHWISE_CONV_2D"} and options is not None \
            and options.dilationWFactor != options.dilationHFactor:
        return (f"dilation {options.dilationHFactor}x{options.dilationWFactor} differs "
                    "between height and width")
    if name in NO_FUSED_ACTIVATION and options is not None and options.fusedActivationFunction:
        return f"{name} has a fused activation; the Edge TPU maps it only without one"
    if name == "SOFTMAX":
        shape = op.inputs[0].shape
        elements = math.prod(shape)
        if any(size > 1 for size in shape[:-1]):
            return f"Softmax input {list(shape)} is not 1-D"
        if elements > SOFTMAX_MAX_ELEMENTS:
            return f"Softmax over {elements} elements (limit {SOFTMAX_MAX_ELEMENTS:,})"
    if name == "STRIDED_SLICE":
        strides = op.inputs[3].int_values if len(op.inputs) > 3 else ()
        if any(stride != 1 for stride in strides):
            return f"StridedSlice strides {list(strides)} (only 1 is supported)"
        if options is not None and (options.ellipsisMask or options.newAxisMask):
            return "StridedSlice with an ellipsis or new-axis mask"
    if name in REDUCTIONS and len(op.inputs) > 1:
        shape = op.inputs[0].shape
        axes = {axis % len(shape) for axis in op.inputs[1].int_values} if shape else set()
        if 0 in axes:
            return f"{name} reduces over the batch dimension"
        if name == "MEAN" and len(shape) - 1 in axes and shape[-1] % MEAN_Z_MULTIPLE:
            return (f"Mean over the innermost (z) dimension of size {shape[-1]}, not a multiple "
                    f"of {MEAN_Z_MULTIPLE}")
    if name == "PACK" and options is not None and options.axis == 0:
        return "Pack along the batch dimension"
    if name == "PAD" and len(op.inputs) > 1 and any(op.inputs[1].int_values[:2]):
        return "Pad on the batch dimension"
    if name == "SQUEEZE" and options is not None:
        shape = op.inputs[0].shape
        for dim in options.squeezeDims or ():
            if any(size != 1 for size in shape[:dim % len(shape)]):
                return f"Squeeze of dimension {dim} that is not a leading 1"
    if name == "FULLY_CONNECTED" and options is not None and options.weightsFormat:
        return "FullyConnected with a non-default weights format"
    if name == "PRELU" and len(op.inputs) > 1:
        alpha = op.inputs[1].shape
        if sum(size > 1 for size in alpha) > 1:
            return f"PReLU alpha of shape {list(alpha)} is not 1-D"
    return ""
