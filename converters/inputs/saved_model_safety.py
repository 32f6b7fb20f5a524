"""A SavedModel's graphs checked before TensorFlow loads or runs any of them.

Loading a SavedModel runs some of its functions (resource initializers) and converting it runs
its serving function: a SavedModel is code. An op like WriteFile, ReadFile, PyFunc or a dataset
reading files would run on the build host. So every function of the function library, and the
top-level graph, is read from ``saved_model.pb`` (a protobuf, parsed without loading anything)
and each op type must be on an allowlist: the ops of TensorFlow's compute modules (math, nn,
array, control flow, variables, random, strings, images, lookups...), less the few of those that
reach files or other machines. The checkpoint ops (SaveV2, RestoreV2...) are allowed only in
the saver's own functions (reached from the SavedModel's saver_def and nowhere else): TF's
loader never runs those, it restores the variables itself. ``--unsafe`` skips the check for a
SavedModel the user trusts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from converters.errors import ModelError

# TensorFlow's generated op modules whose ops compute on tensors in memory.
COMPUTE_MODULES = frozenset({
    "gen_array_ops", "gen_audio_ops", "gen_batch_ops", "gen_bitwise_ops",
    "gen_boosted_trees_ops", "gen_candidate_sampling_ops", "gen_clustering_ops",
    "gen_composite_tensor_ops", "gen_control_flow_ops", "gen_count_ops", "gen_ctc_ops",
    "gen_cudnn_rnn_ops", "gen_data_flow_ops", "gen_functional_ops", "gen_image_ops",
    "gen_linalg_ops", "gen_list_ops", "gen_lookup_ops", "gen_manip_ops", "gen_map_ops",
    "gen_math_ops", "gen_nn_ops", "gen_optional_ops", "gen_parsing_ops", "gen_ragged_array_ops",
    "gen_ragged_conversion_ops", "gen_ragged_math_ops", "gen_random_index_shuffle_ops",
    "gen_random_ops", "gen_resource_variable_ops", "gen_rnn_ops", "gen_sdca_ops", "gen_set_ops",
    "gen_sparse_csr_matrix_ops", "gen_sparse_ops", "gen_special_math_ops", "gen_spectral_ops",
    "gen_state_ops", "gen_stateful_random_ops", "gen_stateless_random_ops",
    "gen_stateless_random_ops_v2", "gen_string_ops", "gen_training_ops", "gen_uniform_quant_ops",
    "gen_xla_ops",
})
# Ops of those modules that read files or reach another machine.
DENIED = frozenset({
    "ImmutableConst",  # memory-maps a file
    "RecordInput",  # reads files matching a pattern
    "InitializeTableFromTextFile", "InitializeTableFromTextFileV2",  # read a file
    "RemoteCall",  # runs a function on another task
})
# Logging ops that only check or pass values through (PrintV2 can write to a file).
ALSO_ALLOWED = frozenset({"Assert"})
# The checkpoint ops of the saver's functions (allowed there only).
SAVER_OPS = frozenset({"SaveV2", "RestoreV2", "MergeV2Checkpoints", "ShardedFilename",
                       "ShardedFilespec", "SaveSlices", "RestoreSlice", "Save", "Restore"})
LISTED = 8  # problems a message lists


def check_saved_model(path: Path) -> None:
    """Refuse (ModelError) a SavedModel any of whose graphs uses an op outside the allowlist,
    naming the ops and the functions that use them."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    saved_model = saved_model_pb2.SavedModel()
    try:
        saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    except Exception as error:  # protobuf's DecodeError, or OSError
        raise ModelError(f"SavedModel {path} cannot be read ({type(error).__name__}: "
                         f"{str(error)[:200]}): re-export it with model.export(dir)") from None
    problems = []
    for meta_graph in saved_model.meta_graphs:
        for where, op in disallowed_ops(meta_graph, op_module):
            known = op_def_registry.get(op) is not None
            problems.append(f"{op} in {where}" if known else f"{op} (not a TensorFlow op) in {where}")
    if problems:
        listed = "; ".join(problems[:LISTED])
        more = f" and {len(problems) - LISTED} more" if len(problems) > LISTED else ""
        raise ModelError(
            f"SavedModel {path} uses TensorFlow ops that can read or write files, reach the "
            f"network or run Python on this machine: {listed}{more}. Loading or converting it "
            "would run them here, so it is refused. If you trust this model, pass --unsafe")


def op_module(op: str) -> str | None:
    """The generated TensorFlow module that defines ``op`` (None: not a registered op)."""
    import tensorflow as tf

    wrapper = getattr(tf.raw_ops, op, None)
    return None if wrapper is None else str(wrapper.__module__).rsplit(".", 1)[-1]


def allowed(op: str, module: str | None, in_saver: bool) -> bool:
    if op in SAVER_OPS:
        return in_saver
    if op in ALSO_ALLOWED:
        return True
    return module in COMPUTE_MODULES and op not in DENIED


def disallowed_ops(meta_graph: Any, module_of: Any) -> Iterator[tuple[str, str]]:
    """(where, op) for every node of the top-level graph and of every library function whose
    op is not allowed; ``module_of`` maps an op type to its module."""
    graph = meta_graph.graph_def
    functions = {f.signature.name: f for f in graph.library.function}
    saver_only = saver_functions(meta_graph, functions)
    cache: dict[str, str | None] = {}

    def check(nodes: Iterable[Any], where: str, in_saver: bool) -> Iterator[tuple[str, str]]:
        for op in sorted({node.op for node in nodes}):
            if op in functions:  # a call of a library function by name: checked itself
                continue
            if op not in cache:
                cache[op] = module_of(op)
            if not allowed(op, cache[op], in_saver):
                yield where, op

    yield from check(graph.node, "the top-level graph", in_saver=False)
    for name, function in functions.items():
        yield from check(function.node_def, f"function {name}", in_saver=name in saver_only)


def called(nodes: Iterable[Any], functions: dict[str, Any]) -> set[str]:
    """The library functions ``nodes`` call (function attributes, lists of them, or the op
    type itself naming a function)."""
    found = set()
    for node in nodes:
        if node.op in functions:
            found.add(node.op)
        for value in node.attr.values():
            if value.HasField("func"):
                found.add(value.func.name)
            found.update(f.name for f in value.list.func)
    return found & set(functions)


def reach(roots: set[str], functions: dict[str, Any]) -> set[str]:
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending += called(functions[name].node_def, functions)
    return seen


def saver_functions(meta_graph: Any, functions: dict[str, Any]) -> set[str]:
    """The functions only the saver (saver_def's save and restore nodes) reaches."""
    saver = meta_graph.saver_def
    saver_nodes = {saver.save_tensor_name.split(":")[0], saver.restore_op_name.split(":")[0]}
    saver_nodes.discard("")
    graph_nodes = meta_graph.graph_def.node
    by_saver = reach(called([n for n in graph_nodes if n.name in saver_nodes], functions),
                     functions)
    others = called([n for n in graph_nodes if n.name not in saver_nodes], functions)
    return by_saver - reach(others | (set(functions) - by_saver), functions)
