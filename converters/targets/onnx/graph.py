"""Graph surgery around tf2onnx: what the ONNX export does before and after the conversion.

Before (TensorFlow GraphDef):

- **Freeze with calls inlined.** The serving function is frozen with TensorFlow's
  ``convert_variables_to_constants_v2(..., aggressive_inlining=True)``, as tf2onnx's own
  ``from_function`` does, but here the frozen GraphDef is kept so it can be edited.
- **Let every call be inlined.** Keras 3's TensorFlow backend runs grouped convolutions (ConvNeXt's
  depthwise 7x7 convolutions) in a ``jit_compile=True`` function marked ``_noinline`` and
  ``_XlaMustCompile``; freezing leaves those as ``StatefulPartitionedCall`` nodes, which tf2onnx
  copies through unconverted ("No Op registered for StatefulPartitionedCall"). Dropping the two
  attributes lets TensorFlow's function optimizer (which tf2onnx runs) inline them. XLA is only a
  compilation hint: the function's body is the same ops.
- **Erfc as 1 - Erf.** Keras' exact GELU computes ``0.5 * x * erfc(-x / sqrt(2))``; tf2onnx 1.17
  has no conversion for ``Erfc`` but has one for ``Erf`` (ONNX ``Erf``, opset 9).

After (ONNX ModelProto):

- **Drop unused graph inputs.** Captured non-variable tensors (EfficientNet's Normalization
  mean and variance) can surface as extra graph inputs nothing reads; onnxruntime then refuses to
  run without them ("Required inputs ... are missing").
- **Name the ops tf2onnx could not convert.** tf2onnx copies unknown ops through and lets the
  checker fail on the first one; :func:`unconverted_ops` lists them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

# Attributes that keep TensorFlow from inlining a function call (see the module docstring).
NO_INLINE_ATTRS = ("_noinline", "_XlaMustCompile")
CALL_OPS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})


def freeze(concrete_function: Any) -> tuple[Any, list[str], list[str]]:
    """The concrete function's GraphDef with variables as constants, and its tensor names
    (inputs without resource handles, outputs)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(concrete_function, lower_control_flow=False,
                                               aggressive_inlining=True)
    inputs = [t.name for t in frozen.inputs if t.dtype != tf.dtypes.resource]
    outputs = [t.name for t in frozen.outputs if t.dtype != tf.dtypes.resource]
    return frozen.graph.as_graph_def(add_shapes=True), inputs, outputs


def allow_inlining(graph_def: Any) -> list[str]:
    """Remove the attributes that forbid inlining from every library function and call node;
    return the names of the functions that had them."""
    released = []
    for function in graph_def.library.function:
        found = [name for name in NO_INLINE_ATTRS if name in function.attr]
        for name in found:
            del function.attr[name]
        if found:
            released.append(function.signature.name)
    for node in _all_nodes(graph_def):
        for name in NO_INLINE_ATTRS:
            if name in node.attr:
                del node.attr[name]
    return released


def remaining_calls(graph_def: Any) -> list[str]:
    """Function-call nodes left in the top-level graph (tf2onnx cannot convert them)."""
    return [node.name for node in graph_def.node if node.op in CALL_OPS]


def _all_nodes(graph_def: Any) -> Iterator[Any]:
    yield from graph_def.node
    for function in graph_def.library.function:
        yield from function.node_def


def replace_erfc(graph_def: Any) -> int:
    """Rewrite each top-level ``Erfc(x)`` node as ``Sub(1, Erf(x))`` under the same name, so its
    consumers are unchanged; return how many were rewritten."""
    import tensorflow as tf

    rewritten = 0
    for node in [n for n in graph_def.node if n.op == "Erfc"]:
        dtype = tf.dtypes.as_dtype(node.attr["T"].type)
        erf = graph_def.node.add(name=f"{node.name}/erf", op="Erf", input=[node.input[0]])
        erf.attr["T"].type = node.attr["T"].type
        one = graph_def.node.add(name=f"{node.name}/one", op="Const")
        one.attr["dtype"].type = node.attr["T"].type
        one.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(1.0, dtype=dtype))
        node.op = "Sub"
        node.input[:] = [one.name, erf.name]
        rewritten += 1
    return rewritten


def drop_unused_inputs(model_proto: Any) -> list[str]:
    """Remove the graph inputs no node (in any subgraph) reads and no output returns; return
    their names."""
    graph = model_proto.graph
    used = _consumed_names(graph) | {output.name for output in graph.output}
    unused = [value.name for value in graph.input if value.name not in used]
    kept = [value for value in graph.input if value.name in used]
    del graph.input[:]
    graph.input.extend(kept)
    return unused


def _consumed_names(graph: Any) -> set[str]:
    """Every value name a node of ``graph`` or of its subgraphs (If/Loop/Scan bodies) reads."""
    from onnx import AttributeProto

    names: set[str] = set()
    for node in graph.node:
        names.update(name for name in node.input if name)
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                names |= _consumed_names(attribute.g)
            elif attribute.type == AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    names |= _consumed_names(subgraph)
    return names


GENERATED_COUNTER = re.compile(r"__(\d+)(?=$|:|/|_)")


def renumber_generated_names(model_proto: Any) -> int:
    """Renumber the ``__N`` counters tf2onnx appends to the names it makes up, in order of first
    appearance: tf2onnx's counters depend on its optimizer's run order, which differs between
    runs, so without this the same model exports to different bytes. Returns how many counters
    were renumbered. The names' TensorFlow part (layer paths) is kept."""
    counters: dict[str, str] = {}

    def renamed(name: str) -> str:
        return GENERATED_COUNTER.sub(
            lambda m: "__" + counters.setdefault(m.group(1), str(len(counters) + 1)), name)

    for graph in _graphs(model_proto.graph):
        for node in graph.node:
            node.name = renamed(node.name)
            node.input[:] = [renamed(name) for name in node.input]
            node.output[:] = [renamed(name) for name in node.output]
        for values in (graph.input, graph.output, graph.value_info):
            for value in values:
                value.name = renamed(value.name)
        for initializer in graph.initializer:
            initializer.name = renamed(initializer.name)
    return len(counters)


MADE_UP_CONSTANT = re.compile(r"^const_[a-z_]+__\d+$")  # tf2onnx's names: const_axes__7


def name_constants_by_content(model_proto: Any) -> int:
    """Name each constant tf2onnx made up after its content.

    tf2onnx merges identical constants (a Slice's ``starts`` and ``axes``, both ``[0]``) and
    keeps either name; without this the same model exported to one of two byte strings.
    Returns how many were renamed."""
    graph = model_proto.graph
    renamed: dict[str, str] = {}
    for initializer in graph.initializer:
        if MADE_UP_CONSTANT.match(initializer.name):
            content = type(initializer)()
            content.CopyFrom(initializer)
            content.name = ""
            digest = hashlib.sha256(content.SerializeToString(deterministic=True)).hexdigest()
            renamed[initializer.name] = initializer.name = f"const_{digest[:16]}"
    for each in _graphs(graph):
        for node in each.node:
            node.input[:] = [renamed.get(name, name) for name in node.input]
    return len(renamed)


def sort_initializers(model_proto: Any) -> None:
    """List the initializers by name: tf2onnx lists them in an order that differs between runs.
    After the last renaming (sorted before it, the order followed the names' run-dependent
    counters: EfficientNetB0 exported to a different byte string in each process)."""
    graph = model_proto.graph
    ordered = sorted(graph.initializer, key=lambda tensor: tensor.name)
    graph.ClearField("initializer")
    graph.initializer.extend(ordered)


@contextlib.contextmanager
def duplicates_merged_by_name() -> Iterator[None]:
    """While tf2onnx runs, of nodes it merges as duplicates (equal constants: a ReLU6's 0 and 6,
    batch-norm factors of untrained layers) keep the one with the smallest name, not the first
    in its node list, whose order differs between processes: without this MobileNetV2 exported
    to a different byte string in each process (the same operators and values, other names)."""
    from tf2onnx.optimizer.merge_duplicated_nodes_optimizer import (
        MergeDuplicatedNodesOptimizer as Merge,
    )

    merge = Merge._merge_nodes_that_are_duplicated

    def by_name(self: Any, nodes: list[Any], graph: Any) -> None:
        merge(self, sorted(nodes, key=lambda node: node.name), graph)  # its sort is stable

    Merge._merge_nodes_that_are_duplicated = by_name
    try:
        yield
    finally:
        Merge._merge_nodes_that_are_duplicated = merge


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph of its nodes (If/Loop/Scan bodies), depth first."""
    from onnx import AttributeProto

    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            elif attribute.type == AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _graphs(subgraph)


def unconverted_ops(model_proto: Any) -> Counter[str]:
    """Op types in the standard ONNX domain that have no schema at the model's opset: the
    TensorFlow ops tf2onnx copied through (e.g. ``StatefulPartitionedCall``), with counts."""
    from onnx import defs

    opsets = {entry.domain: entry.version for entry in model_proto.opset_import}
    version = opsets.get("", opsets.get("ai.onnx", 0))
    missing: Counter[str] = Counter()
    for node in model_proto.graph.node:
        if node.domain in ("", "ai.onnx") and not defs.has(node.op_type, version, ""):
            missing[node.op_type] += 1
    return missing
