"""Stage ``onnx-export`` of the ONNX target (in the tflite image: TensorFlow, tf2onnx, onnx,
onnxruntime); its int8 quantization is converters/targets/onnx/quantize.py.

The exported SavedModel's serving signature, wrapped in a tf.function with an explicit
input signature (tf2onnx 1.17's ``from_keras`` fails on Keras 3 models: it expects the Keras 2
model internals), is frozen with its function calls inlined, edited where tf2onnx would fail
(no-inline XLA calls, Erfc: see ``onnx_graph``) and converted with
``tf2onnx.convert.from_graph_def``. Graph inputs nothing reads are dropped, the batch dimension
stays dynamic and is named ``batch``, ``onnx.checker`` checks the result and onnxruntime runs it
once. Every library failure becomes a ConversionError naming the model, the step and what to try
(:func:`onnx_step`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from converters import console
from converters.errors import ConversionError, ConverterError, ToolMissingError
from converters.fsutil import write_json_atomic
from converters.stages import export
from converters.stages.base import StageContext
from converters.targets.onnx import graph as onnx_graph
from converters.targets.onnx.params import ExportParams

BATCH_AXIS = "batch"
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


REBUILD_HINT = ("rebuild the SavedModel: delete the model's export/ folder in the build folder "
                "(or run invoke clean) and convert again")
OPSET_HINT = ("Try another --opset (13-18), or leave onnx out of --target; the TFLite targets do "
              "not go through tf2onnx")
UNCONVERTED_HINT = ("Replace the layer that uses it, try another --opset (13-18), or leave onnx "
                    "out of --target; the TFLite targets do not go through tf2onnx")
REPORT_HINT = "This is a tf2onnx/TensorFlow limitation or a bug: leave onnx out of --target"


@contextmanager
def onnx_step(model: str, step: str, hint: str, action: str = "export") -> Iterator[None]:
    """Turn any library exception (tf2onnx, onnx, onnxruntime, TensorFlow) raised by ``step``
    into a ConversionError naming the model, the step, the library's first line and ``hint``.
    ConverterErrors and OSErrors (disk full: the executor explains those) pass through."""
    try:
        yield
    except (ConverterError, OSError):
        raise
    except Exception as error:  # tf2onnx, onnx and onnxruntime raise many kinds
        first_line = (str(error).strip() or type(error).__name__).splitlines()[0][:400]
        raise ConversionError(f"ONNX {action} of {model} failed while {step}: "
                              f"{type(error).__name__}: {first_line}. {hint}") from None


def require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ToolMissingError(f"the ONNX stages need {module.split('.')[0]}: pip install "
                               "'.[onnx]' (or use the tflite image: invoke images)") from None


def export_onnx(context: StageContext) -> None:
    """Stage ``onnx-export``: SavedModel → ONNX (fp32), dynamic batch axis named ``batch``."""
    tf2onnx = require("tf2onnx")
    onnx = require("onnx")
    from tensorflow.python.util import deprecation

    params = ExportParams.of(context)
    model = context.model_path.name
    opset = params.opset
    started = time.perf_counter()
    with onnx_step(model, "loading the exported SavedModel", REBUILD_HINT):
        serve, _loaded = serving_function(context)  # _loaded keeps the variables alive
    # tf2onnx's freezing calls TF functions TF marks deprecated: their notice says nothing to a
    # user of this tool (and TF's logging printed it twice).
    with onnx_step(model, "freezing the TensorFlow graph", REPORT_HINT), deprecation.silence():
        graph_def, inputs, outputs = onnx_graph.freeze(serve.get_concrete_function())
    prepare_graph(graph_def)
    # Graph inputs and outputs take the model's signature names (Keras input and output layers).
    input_names = tuple(tensor.name for tensor in export.model_inputs(context.build_dir))
    names = signature_names(context, inputs, outputs)
    console.info(f"exporting ONNX (opset {opset}) with tf2onnx from the frozen graph")
    with onnx_step(model, f"converting with tf2onnx (opset {opset})", OPSET_HINT), \
            deprecation.silence(), onnx_graph.duplicates_merged_by_name():
        model_proto, _ = tf2onnx.convert.from_graph_def(
            graph_def, name=model, input_names=inputs, output_names=outputs, opset=opset,
            tensors_to_rename=names)
    finish_model(model_proto, model, opset, input_names)
    from converters.targets.onnx import metadata

    metadata.write(model_proto, metadata.entries(context))
    path = context.write(params.artifact)
    with onnx_step(model, f"saving {path.name}", REPORT_HINT):
        onnx.save(model_proto, str(path))
    with onnx_step(model, "a trial run of the exported model in onnxruntime", OPSET_HINT):
        trial_run(path, model_proto)
    info = model_info(model_proto, time.perf_counter() - started, {"opset": opset})
    write_json_atomic(context.write(params.info), info)
    console.info(f"ONNX fp32: {path.stat().st_size / 1024:.1f} KiB "
                 f"({time.perf_counter() - started:.1f} s)")


def serving_function(context: StageContext) -> tuple[Any, Any]:
    """The SavedModel's serving signature as a tf.function of one tensor per input (the model's
    input order, dynamic batch axis) returning the outputs in the model's output order; and the
    loaded SavedModel, which owns the variables the function reads."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(context.read(export.SAVED_MODEL)))
    signature = loaded.signatures["serving_default"]
    declared = signature.structured_input_signature[1]
    input_names = [tensor.name for tensor in export.model_inputs(context.build_dir)]
    output_names = [tensor.name for tensor in export.model_outputs(context.build_dir)]
    specs = [tf.TensorSpec([None, *declared[name].shape[1:]], declared[name].dtype, name=name)
             for name in input_names]

    @tf.function(input_signature=specs)
    def serve(*tensors: Any) -> Any:
        results = signature(**dict(zip(input_names, tensors, strict=True)))
        return [results[name] for name in output_names]

    return serve, loaded


def signature_names(context: StageContext, inputs: list[str], outputs: list[str]
                    ) -> dict[str, str]:
    """Frozen graph tensor name → signature name: the input placeholders are named after the
    inputs (``name:0``); the outputs come in the model's output order."""
    input_names = [tensor.name for tensor in export.model_inputs(context.build_dir)]
    output_names = [tensor.name for tensor in export.model_outputs(context.build_dir)]
    renamed = {f"{name}:0": name for name in input_names if f"{name}:0" in inputs}
    return renamed | dict(zip(outputs, output_names, strict=True))


def prepare_graph(graph_def: Any) -> None:
    """Edit the frozen GraphDef so tf2onnx can convert all of it (see onnx_graph)."""
    released = onnx_graph.allow_inlining(graph_def)
    if released:
        console.info(f"inlining {len(released)} function(s) marked no-inline (Keras' XLA "
                     "grouped convolutions)")
    if rewritten := onnx_graph.replace_erfc(graph_def):
        console.info(f"rewriting {rewritten} Erfc op(s) as 1 - Erf (tf2onnx has no Erfc)")


def finish_model(model_proto: Any, model: str, opset: int,
                 expected_inputs: tuple[str, ...]) -> None:
    """Refuse unconverted ops by name, drop unused inputs, name the batch axis, check."""
    import onnx

    if missing := onnx_graph.unconverted_ops(model_proto):
        listed = ", ".join(f"{op} ({count})" for op, count in sorted(missing.items()))
        raise ConversionError(
            f"ONNX export of {model} failed: tf2onnx left TensorFlow op(s) without an ONNX "
            f"equivalent at opset {opset}: {listed}. {UNCONVERTED_HINT}")
    if dropped := onnx_graph.drop_unused_inputs(model_proto):
        console.info(f"dropped {len(dropped)} graph input(s) nothing reads: {', '.join(dropped)}")
    if unnamed := [v.name for v in model_proto.graph.input if v.name not in expected_inputs]:
        raise ConversionError(f"ONNX export of {model} failed: the exported graph has inputs "
                              f"that are not the model's ({', '.join(unnamed)}; expected "
                              f"{', '.join(expected_inputs)}). {REPORT_HINT}")
    name_batch_axis(model_proto)
    onnx_graph.name_constants_by_content(model_proto)  # the same model, the same bytes
    onnx_graph.renumber_generated_names(model_proto)
    onnx_graph.sort_initializers(model_proto)
    with onnx_step(model, "onnx.checker", OPSET_HINT):
        onnx.checker.check_model(model_proto)


def trial_run(path: Path, model_proto: Any) -> None:
    """Load the saved model in onnxruntime and run one zero image, so a model that cannot run
    fails here, in the export stage, with a message rather than in validation."""
    import numpy as np
    import onnxruntime
    from onnx.helper import tensor_dtype_to_np_dtype

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {}
    for value in model_proto.graph.input:
        tensor_type = value.type.tensor_type
        shape = [1, *(d.dim_value or 1 for d in tensor_type.shape.dim[1:])]
        feeds[value.name] = np.zeros(shape, tensor_dtype_to_np_dtype(tensor_type.elem_type))
    session.run(None, feeds)


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
