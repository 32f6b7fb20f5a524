"""Read a .tflite flatbuffer with LiteRT's maintained schema module (no hand-rolled parsing).

Gives the operator list with tensor types and shapes, which the report uses to list the ops
that still compute in float and which later checks (Edge TPU) build on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"})
# Type conversions at the edges of a quantized graph, or dequantizing fp16 weights: they do not
# compute in float themselves, so they are not "ops that stayed float".
CONVERSION_OPS = frozenset({"QUANTIZE", "DEQUANTIZE"})
SMALL_INT_TYPES = {"INT32": "<i4", "INT64": "<i8"}
SMALL_CONSTANT_BYTES = 256


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    type: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    constant: bool
    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    # Values of small constant integer tensors (axes, strides, paddings, shapes); () otherwise.
    int_values: tuple[int, ...] = ()


@dataclass(frozen=True)
class OperatorInfo:
    index: int
    name: str  # builtin name (CONV_2D) or the custom code (FlexErf)
    custom: bool
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    options: Any  # the schema's *OptionsT object, or None

    @property
    def computes_in_float(self) -> bool:
        if self.name in CONVERSION_OPS:
            return False
        tensors = [t for t in self.inputs if not t.constant] + list(self.outputs)
        return any(t.type in FLOAT_TYPES for t in tensors)


@dataclass(frozen=True)
class TFLiteGraph:
    operators: tuple[OperatorInfo, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    subgraphs: int

    def float_ops(self) -> list[dict[str, Any]]:
        """Operators that compute in float, counted by name, in graph order of first use."""
        counts = Counter(op.name for op in self.operators if op.computes_in_float)
        return [{"op": name, "count": count} for name, count in counts.items()]

    def op_counts(self) -> dict[str, int]:
        return dict(Counter(op.name for op in self.operators))


def schema_module() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # TensorFlow ships the same generated module
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _enum_names(enum_class: Any) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_")}


def _values(holder: Any, field: str) -> Any:
    value = getattr(holder, field, None) if holder is not None else None
    return () if value is None else value


def read(path: Path) -> TFLiteGraph:
    """Parse the main subgraph of a .tflite file."""
    return parse(path.read_bytes())


def parse(data: bytes) -> TFLiteGraph:
    schema = schema_module()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    graph = model.subgraphs[0]

    def tensor(index: int) -> TensorInfo:
        raw = graph.tensors[index]
        buffer = model.buffers[raw.buffer] if raw.buffer < len(model.buffers) else None
        has_data = buffer is not None and (
            (buffer.data is not None and len(buffer.data) > 0) or getattr(buffer, "size", 0) > 0
        )
        quantization = raw.quantization
        scale = tuple(float(s) for s in _values(quantization, "scale"))
        zero = tuple(int(z) for z in _values(quantization, "zeroPoint"))
        name = raw.name.decode() if isinstance(raw.name, bytes) else str(raw.name)
        shape = tuple(int(s) for s in raw.shape) if raw.shape is not None else ()
        signature = tuple(int(s) for s in raw.shapeSignature) if raw.shapeSignature is not None else shape
        type_name = type_names.get(raw.type, str(raw.type))
        values: tuple[int, ...] = ()
        if has_data and buffer is not None and type_name in SMALL_INT_TYPES and \
                buffer.data is not None and len(buffer.data) <= SMALL_CONSTANT_BYTES:
            values = tuple(int(v) for v in np.frombuffer(bytes(buffer.data),
                                                           SMALL_INT_TYPES[type_name]))
        return TensorInfo(index, name, type_name, shape, signature, has_data, scale, zero, values)

    operators = []
    for position, op in enumerate(graph.operators or []):
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        custom = op_names.get(builtin) == "CUSTOM"
        if custom:
            raw_name = code.customCode
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        else:
            name = op_names.get(builtin, f"BUILTIN_{builtin}")
        operators.append(OperatorInfo(
            index=position,
            name=name,
            custom=custom,
            inputs=tuple(tensor(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0),
            outputs=tuple(tensor(i) for i in (op.outputs if op.outputs is not None else []) if i >= 0),
            options=op.builtinOptions,
        ))
    return TFLiteGraph(
        operators=tuple(operators),
        inputs=tuple(tensor(i) for i in graph.inputs),
        outputs=tuple(tensor(i) for i in graph.outputs),
        subgraphs=len(model.subgraphs),
    )
