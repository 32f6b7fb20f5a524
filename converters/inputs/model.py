"""Load a Keras model (.h5, .keras, SavedModel dir), describe its signature, export it once.

Imports TensorFlow inside functions: only the stages that need it pay for it.
"""

from __future__ import annotations

import functools
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import ModelError
from converters.fsutil import file_identity
from converters.inputs.array_files import listed
from converters.inputs.custom_objects import FLAG as CUSTOM_OBJECTS_FLAG
from converters.inputs.custom_objects import CustomObjectsFile, imported
from converters.inputs.model_files import check_model_path
from converters.inputs.saved_model_safety import check_saved_model
from converters.inputs.tensor_info import TensorInfo
from converters.inputs.time_distributed import merge_time_steps
from converters.validation.metrics import OutputHint

Arrays = dict[str, np.ndarray]  # one array per input or output name, first axis = samples
Predict = Callable[[Arrays], Arrays]
# Keras' words for a class or function the model file names and this process does not define
UNKNOWN_CLASS = re.compile(r"Could not locate (?:class|function) '[^']+'"
                           r"|Unknown (?:layer|object|loss|metric|activation)[^:]*: '[^']+'")
WRAPPED_REASON = "Exception encountered:"
LOOP_OPS = ("While", "StatelessWhile")  # tf.while_loop's graph ops
CONFIG_DUMPS = ("Full object config:", "config={")


@dataclass(frozen=True)
class InputShapes:
    """Where an input without a static size takes one: ``given`` (--input-shape, a one-input
    model), else the array dataset's per-sample shape of the array named as the input (or its
    only array, for a one-input model)."""

    given: tuple[int, ...] | None = None
    from_data: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (array name, per-sample shape)

    def data_shape(self, name: str, one_input: bool) -> tuple[int, ...] | None:
        found = dict(self.from_data)
        if name not in found and one_input and len(found) == 1:
            return next(iter(found.values()))
        return found.get(name)

    def taken_from_data(self, declared: list[TensorInfo]) -> tuple[str, ...]:
        """The inputs of ``declared`` whose size the dataset gave (after a successful resolve)."""
        if self.given is not None:
            return ()
        return tuple(tensor.name for tensor in declared if None in tensor.shape)


@dataclass(frozen=True)
class LoadedModel:
    """A model with named inputs and outputs (signature names, in a stable order), whatever
    file it came from."""

    path: Path
    format: str  # "h5" | "keras" | "saved_model"
    inputs: tuple[TensorInfo, ...]  # static per-sample shapes
    outputs: tuple[TensorInfo, ...]
    parameters: int | None
    # The model's own leading Rescaling/Normalization layer: what it expects its input to be.
    input_preprocessing: dict[str, Any] | None
    predict: Predict  # {input name: batch} → {output name: float32 batch}
    graph_function: Any  # a tf.function taking one tensor per input, by name
    trackable: Any  # what owns the variables (and lookup tables) graph_function captures
    export: Callable[[Path], None]  # a SavedModel whose serving signature has these names
    # The model's own call traced at a fixed batch size, so that every shape inside it is
    # static (what a recurrent layer's loop needs to convert to TFLite builtins), with the loops
    # of recurrent layers unrolled when asked; None for a SavedModel, whose functions were
    # traced when it was saved.
    static_function: Callable[[int, bool], Any] | None = None
    # What the file says of each output beyond its shape (activation, saved loss), by name
    output_hints: dict[str, OutputHint] = field(default_factory=dict)
    # Inputs without a static size in the file that took the array dataset's shape
    shapes_from_data: tuple[str, ...] = ()
    # TimeDistributed layers that call their inner layer once over all time steps
    # (converters.inputs.time_distributed), by name
    time_steps_merged: tuple[str, ...] = ()

    def trace(self) -> None:
        """Trace the serving function (once per process; conversions and predictions reuse it)."""
        try:
            self.graph_function.get_concrete_function()
        except Exception as error:  # whatever the model's own code raises while tracing
            # TF's message is "in user code: <traceback> ... <the error>": its last line says it
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            raise ModelError(
                f"model {self.path} cannot run as a TensorFlow graph: "
                f"{lines[-1][:300] if lines else type(error).__name__}. Check that it runs with "
                "model(inputs, training=False) inside a tf.function") from None

    def loops(self) -> bool:
        """Whether the serving function runs a loop (recurrent layers: LSTM, GRU, SimpleRNN,
        Bidirectional run one over the sequence), in its graph or the functions it calls."""
        graph = self.graph_function.get_concrete_function().graph.as_graph_def()
        nodes = [*graph.node, *(node for function in graph.library.function
                                for node in function.node_def)]
        return any(node.op in LOOP_OPS for node in nodes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The first input's per-sample shape."""
        return tuple(int(size) for size in self.inputs[0].shape if size is not None)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.path.name if self.format == "saved_model" else self.path.stem,
            "path": str(self.path),
            "format": self.format,
            "input_name": self.inputs[0].name,
            "input_shape": list(self.inputs[0].shape),
            "output_shape": [None, *self.outputs[0].shape],
            "inputs": [tensor.as_dict() for tensor in self.inputs],
            "outputs": [tensor.as_dict() for tensor in self.outputs],
            "parameters": self.parameters,
            "input_preprocessing": self.input_preprocessing,
            "input_shapes_from_dataset": list(self.shapes_from_data),
            "time_distributed_merged": list(self.time_steps_merged),
            "sample_bytes": sum(tensor_bytes(t.shape, t.dtype) for t in self.inputs),
            "largest_activation_bytes": self.largest_activation_bytes(),
            # Keras layers by name (nested models' included), for per-op error by layer;
            # a plain SavedModel has none.
            "keras_name": getattr(self.trackable, "name", None) if self.format != "saved_model" else None,
            "layers": keras_layer_names(self.trackable) if self.format != "saved_model" else [],
        }

    def largest_activation_bytes(self) -> int:
        """The largest tensor one sample makes in the traced graph, inputs aside (unknown sizes
        count as 1; a shape the graph does not declare at all counts as nothing)."""
        graph = self.graph_function.get_concrete_function().graph
        outputs = [output for operation in graph.get_operations()
                   if operation.type != "Placeholder" for output in operation.outputs]
        sizes = [tensor_bytes(tuple(output.shape)[1:], output.dtype.name) for output in outputs
                 if output.shape.rank is not None and output.dtype.is_numpy_compatible]
        return max(sizes, default=0)


def keras_layer_names(model: Any) -> list[str]:
    """Every layer's name, depth first: a nested model and its own layers."""
    names: list[str] = []
    for layer in getattr(model, "layers", []):
        names.append(layer.name)
        names += keras_layer_names(layer)
    return names


def tensor_bytes(shape: tuple[int | None, ...], dtype: str) -> int:
    """Bytes of one sample of a tensor (a dimension of unknown size counts as 1)."""
    return int(np.prod([size or 1 for size in shape], dtype=object)) * np.dtype(dtype).itemsize


def load(path: Path, unsafe: bool = False, input_shape: tuple[int, ...] | None = None,
         custom_objects: tuple[CustomObjectsFile, ...] = (),
         data_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()) -> LoadedModel:
    """Load and check a model: any number of named inputs with static per-sample shapes (after
    ``input_shape`` for a single input, else the array dataset's ``data_shapes`` by array name),
    any number of named outputs. The ``custom_objects`` files (the user's layer classes) are
    imported first.

    The last model loaded is kept for the next stage in this process (export, data and
    reference run one after the other in one stage process and each needs it: 1-2 s a load
    for MobileNetV2 224x224, and the reference reuses the function export traced). The file's
    identity (inode, size, mtime; a SavedModel's saved_model.pb and variables index) is part of
    the key, so a model written again is loaded again."""
    check_model_path(path)
    return _load_once(path, unsafe, InputShapes(input_shape, data_shapes), custom_objects,
                      _identity(path))


def forget_loaded() -> None:
    """Drop the model kept for the next stage (a stage process moving on to another job)."""
    _load_once.cache_clear()


def _identity(path: Path) -> tuple[tuple[int, int, int], ...]:
    files = [path] if path.is_file() else [path / "saved_model.pb",
                                            path / "variables" / "variables.index"]
    return tuple(file_identity(file) for file in files if file.exists())


@functools.lru_cache(maxsize=1)
def _load_once(path: Path, unsafe: bool, shapes: InputShapes,
               custom_objects: tuple[CustomObjectsFile, ...],
               identity: tuple[Any, ...]) -> LoadedModel:
    del identity  # part of the cache key only
    model_format = check_model_path(path)
    objects = imported(custom_objects)  # before TensorFlow reads the file
    if model_format == "saved_model":
        if not unsafe:  # before TensorFlow runs any of its functions
            check_saved_model(path)
        return _load_saved_model(path, shapes)
    return _load_keras(path, model_format, unsafe, shapes, objects)


def _load_keras(path: Path, model_format: str, unsafe: bool,
                shapes: InputShapes, custom_objects: dict[str, Any]) -> LoadedModel:
    import keras
    import tensorflow as tf

    try:
        model = keras.models.load_model(path, custom_objects=custom_objects or None,
                                        compile=False, safe_mode=not unsafe)
    except Exception as error:  # Keras raises many types for bad files; all mean "cannot load"
        raise _load_error(path, error) from None
    merged_time_steps = merge_time_steps(model)
    # Keras tensors are called keras_tensor_N; their input layers and output layers have the
    # names users gave (or Keras chose) and that the exported signature uses (a Functional
    # model's output_names; a Sequential model has none, its last layer names its output). A
    # model that returns a dict is named by its keys.
    input_names = [tensor._keras_history[0].name for tensor in model.inputs]
    output_names = (_output_keys(model)
                    or [tensor._keras_history[0].name for tensor in model.outputs])
    if repeated := sorted({name for name in output_names if output_names.count(name) > 1}):
        raise ModelError(
            f"model {path} has several outputs from one layer ({listed(repeated)}), so they "
            "cannot be told apart by name: give each output its own layer, e.g. "
            "keras.layers.Identity(name='scores')(x), save the model and try again")
    declared = [TensorInfo(name, tuple(tensor.shape)[1:], _dtype_name(tensor.dtype))
                for name, tensor in zip(input_names, model.inputs, strict=True)]
    inputs = _resolve_inputs(path, declared, shapes)
    outputs = tuple(TensorInfo(name, tuple(tensor.shape)[1:])
                    for name, tensor in zip(output_names, model.outputs, strict=True))
    specs = input_specs(inputs)

    # Its name names the traced function in the graph (and in the converted files): kept.
    def graph_function(*tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        results = model(list(tensors) if len(tensors) > 1 else tensors[0], training=False)
        if isinstance(results, dict):
            return {name: results[name] for name in output_names}
        results = results if isinstance(results, list | tuple) else [results]
        return dict(zip(output_names, results, strict=True))

    serving = tf.function(graph_function, input_signature=specs)

    def export(directory: Path) -> None:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name="serve", fn=serving, input_signature=specs)
        archive.write_out(str(directory), verbose=False)

    return LoadedModel(
        path=path,
        format=model_format,
        inputs=inputs,
        outputs=outputs,
        parameters=int(model.count_params()),
        input_preprocessing=leading_preprocessing(model) if len(inputs) == 1 else None,
        # Through the tf.function, not an eager call: eager Keras on a batch of 32 224x224
        # images held 2.5 GB more (benchmarks/memory_notes.md), which the process never returns.
        predict=predictor(serving, inputs),
        graph_function=serving,
        trackable=model,
        export=export,
        static_function=functools.partial(_static_function, model, graph_function, output_names,
                                          inputs),
        output_hints=_output_hints(path, model_format, model, output_names),
        shapes_from_data=shapes.taken_from_data(declared),
        time_steps_merged=merged_time_steps,
    )


def _output_hints(path: Path, model_format: str, model: Any,
                  output_names: list[str]) -> dict[str, OutputHint]:
    """Each output's layer activation and the loss the file was compiled with (if saved)."""
    losses = _saved_losses(path, model_format, output_names)
    return {name: OutputHint(_activation(tensor._keras_history[0]), losses.get(name))
            for name, tensor in zip(output_names, model.outputs, strict=True)}


def _activation(layer: Any) -> str | None:
    """``softmax``, ``sigmoid``, ``linear``, ...: of a layer with an ``activation`` (Dense,
    Conv, Activation) or an activation layer (Softmax); None for any other layer."""
    activation = getattr(layer, "activation", None)
    if activation is not None:
        return str(getattr(activation, "__name__", activation))
    kind = type(layer).__name__.lower()
    return kind if kind in ("softmax", "sigmoid") else None


def _saved_losses(path: Path, model_format: str, output_names: list[str]) -> dict[str, str]:
    """The loss of each output, by name, from the compile settings a .keras or .h5 file keeps
    (loading with ``compile=False`` does not read them); empty when none are saved."""
    try:
        if model_format == "keras":
            with zipfile.ZipFile(path) as archive:
                loss = (json.loads(archive.read("config.json")).get("compile_config")
                        or {}).get("loss")
        else:
            import h5py

            with h5py.File(path, "r") as file:
                training = file.attrs.get("training_config")
            loss = json.loads(training).get("loss") if training else None
    except (OSError, KeyError, ValueError, AttributeError, zipfile.BadZipFile):
        return {}  # compile settings are optional: the tasks then come from elsewhere
    if isinstance(loss, list) and len(loss) == len(output_names):
        named = dict(zip(output_names, loss, strict=True))
    elif isinstance(loss, dict) and "class_name" not in loss:
        named = {str(key): value for key, value in loss.items()}
    else:
        named = dict.fromkeys(output_names, loss)
    return {name: text for name, value in named.items()
            if (text := _loss_name(value)) is not None}


def _loss_name(loss: Any) -> str | None:
    """``"mse"`` or a serialized loss's class name (``MeanSquaredError``)."""
    if isinstance(loss, str):
        return loss
    if isinstance(loss, dict) and isinstance(loss.get("class_name"), str):
        return str(loss["class_name"])
    return None


def _static_function(model: Any, graph_function: Callable[..., Any], output_names: list[str],
                     inputs: tuple[TensorInfo, ...], batch_size: int, unrolled: bool) -> Any:
    """``graph_function`` traced at ``batch_size``; ``unrolled``: of a copy of ``model`` whose
    recurrent layers unroll their loop (one set of ops per step, the same weights)."""
    import tensorflow as tf

    if not unrolled:
        return tf.function(graph_function, input_signature=input_specs(inputs, batch_size))
    copy = unrolled_copy(model)

    def unrolled_function(*tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        results = copy(list(tensors) if len(tensors) > 1 else tensors[0], training=False)
        results = ([results[name] for name in output_names] if isinstance(results, dict)
                   else results if isinstance(results, list | tuple) else [results])
        return dict(zip(output_names, results, strict=True))

    return tf.function(unrolled_function, input_signature=input_specs(inputs, batch_size))


def unrolled_copy(model: Any) -> Any:
    """A copy of ``model`` (nested models included) whose recurrent layers (LSTM, GRU,
    SimpleRNN, ``keras.layers.RNN`` and those a Bidirectional wraps) have ``unroll=True``,
    with the model's weights."""
    import keras

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if isinstance(layer, keras.layers.RNN | keras.layers.Bidirectional):
            _unroll(config)
        return type(layer).from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def _unroll(config: dict[str, Any]) -> None:
    if "unroll" in config:
        config["unroll"] = True
    for wrapped in ("layer", "backward_layer"):  # a Bidirectional's two directions
        if isinstance(config.get(wrapped), dict):
            _unroll(config[wrapped]["config"])


def _output_keys(model: Any) -> list[str] | None:
    """The keys of a model that returns a dict (``keras.Model(x, {"scores": ...})``), in
    ``model.outputs`` order; None for any other output structure."""
    try:
        structure = model.output
    except AttributeError:  # a Sequential model has no output structure of its own
        return None
    if not isinstance(structure, dict):
        return None
    key_of = {id(tensor): str(key) for key, tensor in structure.items()}
    keys = [key_of.get(id(tensor)) for tensor in model.outputs]
    return keys if all(key is not None for key in keys) else None  # type: ignore[return-value]


def input_specs(inputs: tuple[TensorInfo, ...], batch_size: int | None = None) -> list[Any]:
    import tensorflow as tf

    return [tf.TensorSpec((batch_size, *tensor.shape), tf.as_dtype(tensor.dtype),
                          name=tensor.name) for tensor in inputs]


def _dtype_name(dtype: Any) -> str:
    import tensorflow as tf

    return str(tf.as_dtype(dtype).name)


def predictor(graph_function: Any, inputs: tuple[TensorInfo, ...]) -> Predict:
    import tensorflow as tf

    def predict(arrays: Arrays) -> Arrays:
        results = graph_function(*(tf.constant(arrays[tensor.name], tf.as_dtype(tensor.dtype))
                                   for tensor in inputs))
        return {name: np.asarray(value, dtype=np.float32) for name, value in results.items()}

    return predict


def leading_preprocessing(model: Any) -> dict[str, Any] | None:
    """The affine map ``x * scale + offset`` of the model's leading Rescaling or Normalization
    layer (looking one level into a nested model such as a keras.applications base), or None.

    Layers that only reshape or pass through (InputLayer) are skipped; any other first layer
    means the model has no built-in preprocessing.
    """
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    if not layers:
        return None
    first = layers[0]
    kind = type(first).__name__
    if kind == "Rescaling":
        scale = float(np.mean(np.asarray(first.scale, dtype=np.float64)))
        offset = float(np.mean(np.asarray(first.offset, dtype=np.float64)))
        return {"layer": first.name, "kind": kind, "scale": scale, "offset": offset}
    if kind == "Normalization" and getattr(first, "mean", None) is not None:
        mean = float(np.mean(np.asarray(first.mean, dtype=np.float64)))
        std = float(np.sqrt(np.mean(np.asarray(first.variance, dtype=np.float64)))) or 1.0
        return {"layer": first.name, "kind": kind, "scale": 1.0 / std, "offset": -mean / std}
    if hasattr(first, "layers"):  # a nested model: its own first layer decides
        return leading_preprocessing(first)
    return None


def _load_error(path: Path, error: Exception) -> ModelError:
    text = str(error)
    if "safe_mode" in text:
        return ModelError(
            f"model {path} needs unsafe deserialisation (it contains a Lambda layer or other "
            "arbitrary code), which Keras' safe mode refuses. If you trust this file, re-run "
            "with --unsafe"
        )
    if missing := UNKNOWN_CLASS.search(text):
        return ModelError(
            f"cannot load model {path}: {missing.group(0)}. The model uses a class of its own: "
            f"pass {CUSTOM_OBJECTS_FLAG} FILE.py with the Python file that defines it (registered "
            "with @keras.saving.register_keras_serializable, or listed in a custom_objects dict "
            "in that file)")
    if "File not found" in text and path.is_file():
        text = "not a valid .keras archive (a zip file); it may be truncated or corrupt"
    return ModelError(
        f"cannot load model {path}: {_keras_reason(text) or type(error).__name__}. Is it a "
        "complete Keras model file? Re-save it with model.save('name.keras') and try again"
    )


def _keras_reason(text: str) -> str:
    """What went wrong, from a Keras message that wraps it in messages about the objects
    around it ("<class Functional> could not be deserialized properly ... Exception
    encountered: <the reason> Full object config: {...}"): the innermost reason, without the
    configuration dumps."""
    reason = text.rsplit(WRAPPED_REASON, 1)[-1]
    for dump in CONFIG_DUMPS:
        reason = reason.split(dump, 1)[0]
    return " ".join(line.strip() for line in reason.splitlines() if line.strip())[:500]


def _load_saved_model(path: Path, shapes: InputShapes) -> LoadedModel:
    """A SavedModel through its serving signature (Keras metadata or not): the TFLite converter
    takes the signature directly, so a plain TF SavedModel converts as well as a Keras export."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:  # TF raises several types for unreadable SavedModels
        raise _load_error(path, error) from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ModelError(
            f"SavedModel {path} has no 'serving_default' signature: export it with "
            "model.export(dir) or tf.saved_model.save(..., signatures=...)"
        )
    declared = [TensorInfo(name, tuple(spec.shape)[1:], spec.dtype.name)
                for name, spec in signature.structured_input_signature[1].items()]
    inputs = _resolve_inputs(path, declared, shapes)
    outputs = tuple(TensorInfo(name, tuple(spec.shape)[1:])
                    for name, spec in signature.structured_outputs.items())
    names = [tensor.name for tensor in inputs]

    @tf.function(input_signature=input_specs(inputs))
    def graph_function(*tensors: tf.Tensor) -> dict[str, tf.Tensor]:
        results = signature(**dict(zip(names, tensors, strict=True)))
        return {tensor.name: results[tensor.name] for tensor in outputs}

    def export(directory: Path) -> None:
        module = tf.Module()
        module.loaded = loaded  # tracks the variables the signature captures
        module.serve = graph_function
        tf.saved_model.save(module, str(directory),
                            signatures={"serving_default": graph_function.get_concrete_function()})

    return LoadedModel(
        path=path,
        format="saved_model",
        inputs=inputs,
        outputs=outputs,
        parameters=None,
        input_preprocessing=None,
        predict=predictor(graph_function, inputs),
        graph_function=graph_function,
        trackable=loaded,
        export=export,
    )


def _resolve_inputs(path: Path, declared: list[TensorInfo],
                    shapes: InputShapes) -> tuple[TensorInfo, ...]:
    """Every input with a static per-sample shape: ``shapes.given`` (--input-shape) sets the
    shape of a single input; an input without a static size otherwise takes the dataset's."""
    if shapes.given is not None and len(declared) != 1:
        raise ModelError(
            f"--input-shape applies to a model with one input; model {path} has {len(declared)} "
            f"({listed(tensor.name for tensor in declared)}): give them static shapes, or pass "
            "an array dataset whose arrays (one per input name) give their sizes")
    return tuple(TensorInfo(tensor.name, _resolve_input_shape(
        path, tensor.name, tensor.shape, shapes.given,
        shapes.data_shape(tensor.name, len(declared) == 1)), tensor.dtype) for tensor in declared)


def _resolve_input_shape(path: Path, name: str, declared: tuple[int | None, ...],
                         override: tuple[int, ...] | None,
                         data: tuple[int, ...] | None) -> tuple[int, ...]:
    shown = _shape_text((None, *declared))
    if not declared:
        raise ModelError(f"model {path} input '{name}' has shape {shown}: one value per sample "
                         "is not supported; give the input a feature axis, e.g. (None, 1)")
    if override is not None:
        if len(override) != len(declared):
            raise ModelError(
                f"--input-shape {','.join(map(str, override))} has {len(override)} dimension(s); "
                f"model {path} input '{name}' {shown} needs {len(declared)} (batch excluded)")
        for axis, (have, want) in enumerate(zip(declared, override, strict=True)):
            if have is not None and have != want:
                raise ModelError(
                    f"--input-shape {','.join(map(str, override))} conflicts with model {path} "
                    f"input '{name}' {shown} (dimension {axis + 1} is {have})"
                )
        return tuple(override)
    if any(size is None for size in declared):
        if data is not None and len(data) == len(declared) and all(
                size is None or size == found for size, found in zip(declared, data, strict=True)):
            return data
        example = "224,224,3" if len(declared) == 3 else ",".join(
            "16000" if size is None else str(size) for size in declared)
        misfit = (f"; the dataset's array for it has per-sample shape {_shape_text(data)},"
                  " which does not fit" if data is not None else "")
        raise ModelError(
            f"model {path} input '{name}' has no static size {shown}{misfit}: pass "
            f"--input-shape with its {len(declared)} dimension(s), batch excluded "
            f"(for example --input-shape {example}), or an array dataset (.npz) whose array "
            f"'{name}' has the size every sample takes"
        )
    return tuple(int(size) for size in declared)  # type: ignore[arg-type]


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"
