"""The TF converter of the loaded model's serving function, frozen in the stage's process.

The SavedModel route (``model.export`` then ``from_saved_model``) traces the model and TF's
saver functions to write the SavedModel, and the converter then loads it back: MobileNetV2
224x224 4.6 s + 3.0 s. Freezing the serving function's variables into constants and converting
the graph takes 1.4 s and gives the same operators. That route makes no SignatureDef, so
:func:`signed` adds the ``serving_default`` signature the SavedModel route writes (the inputs and
outputs by their names), which every runner here and users' code looks tensors up by.

Two kinds of function go through TF's own SavedModel lowering instead (which writes the
signature itself): one that captures resources other than its variables (a lookup table's)
cannot be frozen, and one that calls a SavedModel's restored functions (a SavedModel given as
the model) freezes to a graph whose operator order changes from process to process (measured:
two PYTHONHASHSEED values, two different fp32 files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from converters.inputs.model import LoadedModel

SIGNATURE = "serving_default"
# The metadata entry with which TF's converter marks a model over 2 GB (its buffers follow the
# flatbuffer)
BUFFER_LOCATION = b"buffer_location"


@dataclass(frozen=True)
class ServingFunction:
    """A converter of the model and the signature names of its converted inputs and outputs,
    in the converted subgraph's order."""

    converter: Any
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    # How a recurrent layer's loop was converted (None: the model has no loop)
    recurrence: str | None = None

    @property
    def lowered(self) -> bool:
        """Whether TF converts through its own SavedModel lowering (which names the inputs in a
        signature, in an order of its own) rather than the frozen function."""
        return bool(self.converter.experimental_lower_to_saved_model)

    def signed(self, flatbuffer: bytes) -> bytes:
        """``flatbuffer`` with the ``serving_default`` signature (unchanged if it has one)."""
        return with_signature(flatbuffer, self.inputs, self.outputs)


def serving_function(model: LoadedModel, batch_size: int | None,
                     calibrated: bool = False) -> ServingFunction:
    """The TF converter of ``model``'s serving function; ``batch_size`` fixes the batch dimension
    (the Edge TPU needs static shapes), None keeps it dynamic. ``calibrated``: the conversion
    runs TF's calibrator, which cannot run a loop, so recurrent layers are unrolled."""
    import tensorflow as tf
    from tensorflow.lite.python import lite

    function = model.graph_function
    recurrence = None
    if model.static_function is not None and model.loops():
        # A recurrent layer's loop keeps its steps in tensor lists whose element shape includes
        # the batch: with a dynamic batch the converter cannot lower them to builtins. Traced at
        # a fixed batch (and the static sequence length every input has here), the loop becomes
        # a TFLite WHILE of builtin ops that computes what Keras computes.
        # TF's calibrator crashes on a WHILE: a calibrated conversion unrolls the loop instead.
        batch_size = batch_size or 1
        function = model.static_function(batch_size, calibrated)
        loop = "unrolled (one set of ops per step)" if calibrated else "as a WHILE loop"
        recurrence = (f"recurrent layers {loop} of TFLite builtin ops, traced at batch "
                      f"{batch_size} with the input's static sequence length")
    elif batch_size is not None:
        specs = [tf.TensorSpec([batch_size, *tensor.shape], tf.as_dtype(tensor.dtype),
                               name=tensor.name) for tensor in model.inputs]
        function = tf.function(model.graph_function, input_signature=specs)
    concrete = function.get_concrete_function()
    converter = lite.TFLiteConverterV2.from_concrete_functions([concrete], model.trackable)
    converter.experimental_lower_to_saved_model = (model.format == "saved_model"
                                                   or not _only_variables(concrete))
    by_tensor = {tensor.name: name for name, tensor in concrete.structured_outputs.items()}
    return ServingFunction(converter, tuple(tensor.name for tensor in model.inputs),
                           tuple(by_tensor[tensor.name] for tensor in concrete.outputs),
                           recurrence)


def _only_variables(concrete: Any) -> bool:
    """Whether every resource the function captures is a variable (what freezing handles)."""
    import tensorflow as tf

    resources = sum(1 for tensor in concrete.captured_inputs if tensor.dtype == tf.resource)
    return resources <= len(concrete.variables)


def with_signature(flatbuffer: bytes, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> bytes:
    """Add a ``serving_default`` SignatureDef naming the main subgraph's inputs and outputs, in
    their order, unless the model has a signature."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    if model.signatureDefs or any(entry.name == BUFFER_LOCATION for entry in model.metadata or ()):
        return flatbuffer  # over 2 GB the weights follow the flatbuffer: re-serialising drops them
    graph = model.subgraphs[0]
    if len(graph.inputs) != len(inputs) or len(graph.outputs) != len(outputs):
        raise ValueError(f"the converted model has {len(graph.inputs)} inputs and "
                         f"{len(graph.outputs)} outputs, the serving function {len(inputs)} and "
                         f"{len(outputs)}")

    def tensor_maps(names: tuple[str, ...], indices: Any) -> list[Any]:
        maps = []
        for name, index in zip(names, indices, strict=True):
            entry = schema.TensorMapT()
            entry.name, entry.tensorIndex = name, int(index)
            maps.append(entry)
        return maps

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE, 0
    signature.inputs = tensor_maps(inputs, graph.inputs)
    signature.outputs = tensor_maps(outputs, graph.outputs)
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
