"""Edge TPU pre-check: predict, without the compiler, which ops of an int8 .tflite map to the TPU.

Reads the flatbuffer with LiteRT's schema module (:mod:`converters.tflite_inspect`) and checks
every operator against Coral's documented requirements (https://coral.ai/docs/edgetpu/models-intro/):
supported ops, integer data
types, static shapes, batch 1, at most 3 non-unit innermost dimensions, and per-op limits.

Placement follows the data flow, as the real compiler does (measured on the compiled pairs in
``shared/edgetpu-truth``): an op runs on the CPU when it cannot be mapped, or when it consumes,
directly or through other ops, the output of a CPU op that itself comes after the Edge TPU
segment started (has a mapped op upstream). So an unmappable op at the very start (a QUANTIZE of
a float input, a CAST) runs on the CPU and the rest still maps, and ops that do not depend on a
late CPU op keep their mapping whatever their position in the file. The result has the structure
of the compiler's own report (:mod:`converters.edgetpu_compiler`), so the two compare side by side.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converters.errors import ModelError
from converters.targets.tflite import flatbuffer as tflite_inspect
from converters.targets.tflite.flatbuffer import OperatorInfo

MAPPED = "Mapped to Edge TPU"
# The compiler's statuses (https://coral.ai/docs/edgetpu/compiler/, and the real outputs in
# tests/data/edgetpu and shared/edgetpu-truth); the pre-check
# adds a specific reason to each.
NOT_SUPPORTED = "Operation not supported"
AFTER_CUT = "More than one subgraph is not supported"
DATA_TYPE = "Operation is working on an unsupported data type"
RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
LIMITATION = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
STRIDES = "Only Strided-Slice with unitary strides supported"
NOT_CONSTANT = "Filter, bias, or other param is not constant at compile-time"
# Not a compiler status: the compiler refuses such a model as a whole and prints no table.
NOT_COMPILED = "Not compiled: the compiler refuses the whole model"

# DEQUANTIZE is listed so that the data-type check words it as the compiler does (it always
# outputs float: "Operation is working on an unsupported data type" in a real EfficientDet log).
SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE",
    "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAX_POOL_2D", "MAXIMUM", "MINIMUM", "MEAN", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT",
    "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TILE", "TRANSPOSE",
    "TRANSPOSE_CONV",
})
INTEGER_TYPES = frozenset({"INT8", "UINT8"})
# Constant inputs that are shapes, axes, sizes or biases, not data the TPU quantizes.
INDEX_TYPES = frozenset({"INT32", "INT64"})
# An int8 LSTM keeps its cell state in INT16 and its gate biases in INT32; it maps entirely.
LSTM_OPS = frozenset({"LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM"})
LSTM_STATE_TYPES = frozenset({"INT16", "INT32"})
SOFTMAX_MAX_ELEMENTS = 16_000
MEAN_Z_MULTIPLE = 4
REDUCTIONS = frozenset({"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN"})
NO_FUSED_ACTIVATION = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION"})
RESIZES = frozenset({"RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"})
WEIGHTED_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})


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
    verdicts = place(graph.operators)
    if blocking:
        verdicts = [refused(verdict, blocking[0]) for verdict in verdicts]
    return summarise(model, verdicts, blocking, shape_notes(graph), graph)


def place(operators: tuple[OperatorInfo, ...]) -> list[OpVerdict]:
    """Each op's verdict following the data flow (ops are in execution order in a .tflite).

    ``late_cpu`` holds, per tensor, the first CPU op that comes after the Edge TPU segment
    started and that the tensor depends on; ``after_tpu`` the tensors with a mapped op upstream.
    """
    producer_is_late_cpu: dict[int, OpVerdict] = {}
    after_tpu: set[int] = set()
    verdicts = []
    for op in operators:
        cut = next((producer_is_late_cpu[t.index] for t in op.inputs
                    if t.index in producer_is_late_cpu), None)
        status, reason = op_problem(op)
        if cut is not None:
            why = f"runs on the CPU after the cut at op {cut.index} ({cut.operator})"
            verdict = OpVerdict(op.index, op.name, AFTER_CUT if status == MAPPED else status,
                                why if status == MAPPED else f"{reason}; {why}")
        else:
            verdict = OpVerdict(op.index, op.name, status, reason)
        verdicts.append(verdict)
        upstream_tpu = verdict.on_tpu or any(t.index in after_tpu for t in op.inputs)
        for tensor in op.outputs:
            if upstream_tpu:
                after_tpu.add(tensor.index)
            if not verdict.on_tpu and (cut is not None or upstream_tpu):
                producer_is_late_cpu[tensor.index] = cut or verdict
    return verdicts


def refused(verdict: OpVerdict, problem: str) -> OpVerdict:
    """An op of a model the compiler refuses as a whole: nothing maps."""
    why = f"the model is refused: {problem}"
    return OpVerdict(verdict.index, verdict.operator, NOT_COMPILED,
                     f"{verdict.reason}; {why}" if verdict.reason else why)


def edgetpu_subgraphs(operators: tuple[OperatorInfo, ...], verdicts: list[OpVerdict]) -> int:
    """Connected groups of mapped ops (each becomes one ``edgetpu-custom-op``)."""
    on_tpu = {v.index for v in verdicts if v.on_tpu}
    group = {index: index for index in on_tpu}

    def root(index: int) -> int:
        while group[index] != index:
            index = group[index]
        return index

    producers = {t.index: op.index for op in operators if op.index in on_tpu for t in op.outputs}
    for op in operators:
        if op.index in on_tpu:
            for tensor in op.inputs:
                if tensor.index in producers:
                    group[root(producers[tensor.index])] = root(op.index)
    return len({root(index) for index in on_tpu})


def summarise(model: str, verdicts: list[OpVerdict], blocking: list[str], notes: list[str],
              graph: tflite_inspect.TFLiteGraph) -> dict[str, Any]:
    tpu_ops = sum(v.on_tpu for v in verdicts)
    total = len(verdicts)
    rows = Counter((v.operator, v.status) for v in verdicts)
    return {
        "model": model,
        "compiles": not blocking,
        "blocking": blocking,
        "notes": notes,
        "total_ops": total,
        "tpu_ops": tpu_ops,
        "cpu_ops": total - tpu_ops,
        "tpu_fraction": tpu_ops / total if total else 0.0,
        "edgetpu_subgraphs": edgetpu_subgraphs(graph.operators, verdicts),
        "model_subgraphs": graph.subgraphs,
        "table": [{"operator": op, "count": count, "status": status}
                  for (op, status), count in rows.items()],
        "cpu_op_reasons": [{"index": v.index, "operator": v.operator, "status": v.status,
                            "reason": v.reason} for v in verdicts if not v.on_tpu],
    }


def model_problems(graph: tflite_inspect.TFLiteGraph) -> list[str]:
    """What makes the compiler refuse the whole model (batch, unknown shapes, quantization)."""
    problems = []
    for tensor in graph.inputs:
        if any(size < 1 for size in tensor.shape):
            problems.append(f"input '{tensor.name}' has no static shape {list(tensor.shape)}: the "
                            "Edge TPU needs static shapes; convert with batch size 1")
        elif tensor.shape and tensor.shape[0] != 1:
            problems.append(f"input '{tensor.name}' has batch size {tensor.shape[0]}: the Edge TPU "
                            "needs batch size 1")
    if graph.operators and not any(t.type in INTEGER_TYPES for op in graph.operators
                                   for t in op.outputs):
        problems.append("Model not quantized: no op produces an int8/uint8 tensor; convert "
                        "with full integer int8 (--quant int8 or --target edgetpu)")
    return problems


def shape_notes(graph: tflite_inspect.TFLiteGraph) -> list[str]:
    """A -1 in a shape signature with a concrete shape is compiled at that shape: say so."""
    return [f"input '{t.name}' has shape signature {list(t.shape_signature)}: predicted at its "
            f"concrete shape {list(t.shape)} (compiler 15 compiled such models; compiler 16 "
            "refuses a graph whose tensors are dynamic at run time: \"Attempting to use a "
            "delegate that only supports static-sized tensors\")"
            for t in graph.inputs if -1 in t.shape_signature and all(s > 0 for s in t.shape)]


def op_problem(op: OperatorInfo) -> tuple[str, str]:
    """(compiler status, specific reason) of one operator, ignoring its position."""
    if op.custom or op.name not in SUPPORTED_OPS:
        return NOT_SUPPORTED, f"{op.name} is not in the Edge TPU's supported operations"
    allowed = INTEGER_TYPES | LSTM_STATE_TYPES if op.name in LSTM_OPS else INTEGER_TYPES
    for tensor in (*op.inputs, *op.outputs):
        if tensor.type not in allowed and not (tensor.constant and tensor.type in INDEX_TYPES):
            return DATA_TYPE, f"tensor '{tensor.name}' is {tensor.type}, not int8/uint8"
    for tensor in (*[t for t in op.inputs if not t.constant], *op.outputs):
        if len(tensor.shape) > 3 and any(size > 1 for size in tensor.shape[:-3]):
            return RANK, (f"tensor '{tensor.name}' has shape {list(tensor.shape)}: only the 3 "
                          "innermost dimensions may be larger than 1")
    if op.name in WEIGHTED_OPS and len(op.inputs) > 1 and not op.inputs[1].constant:
        return NOT_CONSTANT, f"{op.name} weights '{op.inputs[1].name}' are computed, not constant"
    if op.name == "STRIDED_SLICE":
        strides = op.inputs[3].int_values if len(op.inputs) > 3 else ()
        if any(stride != 1 for stride in strides):
            return STRIDES, f"StridedSlice strides {list(strides)} (only 1 is supported)"
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
    if name == "STRIDED_SLICE" and options is not None and (options.ellipsisMask
                                                           or options.newAxisMask):
        return "StridedSlice with an ellipsis or new-axis mask"
    if name in RESIZES:
        return resize_problem(op)
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


def resize_problem(op: OperatorInfo) -> str:
    """Coral's op table: a resize "may not be mapped ... to avoid loss in precision", depending
    on input/output size. Rule used (it explains every real compile in shared/edgetpu-truth and
    the 2x upsamplings that map in the real YOLO/EfficientDet logs): each spatial dimension must
    scale by a whole factor, counted as TFLite counts it ((out - 1) / (in - 1) with
    align_corners), and a single-pixel input is not spread over a larger output (DeepLab's
    1x1 -> 33x33 stays on the CPU in every real compile)."""
    source, target = op.inputs[0].shape, op.outputs[0].shape
    if len(source) != 4 or len(target) != 4:
        return ""
    align = bool(getattr(op.options, "alignCorners", False))
    for size_in, size_out in zip(source[1:3], target[1:3], strict=True):
        if size_in == 1 and size_out > 1:
            return (f"{op.name} spreads a 1-pixel input over {size_out} pixels "
                    f"({_hw(source)} -> {_hw(target)})")
        small, large = sorted((size_in - align, size_out - align))
        if small > 0 and large % small:
            return (f"{op.name} {_hw(source)} -> {_hw(target)} does not scale by a whole factor"
                    + (" (align_corners: (out - 1) / (in - 1))" if align else ""))
    return ""


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[2]}"
