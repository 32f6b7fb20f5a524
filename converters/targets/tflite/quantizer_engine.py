"""Quantized TFLite models derived from the one fp32 ``.tflite`` with Google's ai-edge-quantizer.

The second quantization engine beside the TF converter (``converters/stages/tflite.py``): it
reads the fp32 flatbuffer, never TensorFlow, so each mode costs a fraction of a conversion.

* :func:`quantize_fp16` - float16 weights (``FLOAT_CASTING`` weight-only, 16 bits).
* :func:`quantize_dynamic` - int8 weights, float activations (``dynamic_legacy_wi8_afp32``).
* :func:`quantize_int8` - static int8 weights and activations calibrated on given arrays
  (recipe ``static_wi8_ai8``), float32 or int8 model I/O, optionally with ops kept in float.
* :func:`op_sensitivity` - each op's quantization error against the fp32 model, tensor by
  tensor in LiteRT (any model I/O type, any fixed or dynamic batch).
* :func:`accuracy_aware_int8` - keep the most sensitive ops in float, one group at a time,
  until the accuracy drop on the validation arrays is within a bound.

ai-edge-quantizer and the LiteRT interpreter are imported lazily: importing this module needs
only numpy. Every function is deterministic for the same inputs (same bytes twice).
"""

from __future__ import annotations

import contextlib
import re
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from converters.errors import ConversionError, ToolMissingError, xnnpack_refusal

IOType = Literal["float32", "int8"]
# A channel's fp32 mean square counts as at least this fraction of the median channel's.
_CHANNEL_FLOOR = 0.01
# Threads for calibration and comparison interpreters (the quantizer's default is 16).
Samples = np.ndarray | dict[str, np.ndarray]  # one array, or one per input name
DEFAULT_THREADS = 2


@dataclass(frozen=True)
class QuantizedModel:
    """One artifact made by the quantizer, with what it is and how long it took."""

    mode: str  # "fp16", "dynamic", "int8" or "int8-mixed"
    flatbuffer: bytes
    seconds: float
    input_type: str  # numpy dtype name of the model's first input, e.g. "float32"
    output_type: str
    kept_float: tuple[str, ...] = ()  # op scopes (output tensor names) kept in float
    recipe: list[dict[str, Any]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.flatbuffer)


@dataclass(frozen=True)
class ModelOp:
    """One operator of the fp32 model's main subgraph, as the quantizer names it."""

    index: int
    op: str  # builtin name, e.g. FULLY_CONNECTED
    scope: str  # the quantizer's op scope: output tensor names joined by ";" (trailing ";")
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]  # non-constant input tensor names


@dataclass(frozen=True)
class OpError:
    """Quantization error of one op on the calibration samples.

    ``output_nmse`` is the error of the op's output tensor against the fp32 model: per channel
    squared error over the fp32 mean square, averaged over channels (see
    :func:`channel_nmse`). It is the error accumulated up to this op; ``added_nmse``
    subtracts the largest such error among the op's inputs: the error this op adds, which
    ranks the ops.
    """

    index: int
    op: str
    scope: str
    output_nmse: float
    added_nmse: float

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "tensor": self.scope.rstrip(";"),
                "output_nmse": self.output_nmse, "added_nmse": self.added_nmse}


@dataclass(frozen=True)
class SearchStep:
    """One model tried by the accuracy-aware search."""

    kept_float: tuple[str, ...]
    score: float
    drop: float
    size: int


@dataclass(frozen=True)
class MixedResult:
    """Outcome of :func:`accuracy_aware_int8`.

    ``score`` is accuracy against labels, or top-1 agreement with the reference outputs when no
    labels were given; ``drop`` is the fp32 model's score minus the model's.
    """

    model: QuantizedModel
    kept_float: tuple[OpError, ...]
    fp32_score: float
    int8_score: float
    score: float
    max_drop: float
    within_bound: bool
    int8_model: QuantizedModel  # plain int8, where the search started
    steps: tuple[SearchStep, ...]

    @property
    def int8_size(self) -> int:
        return self.int8_model.size

    @property
    def drop(self) -> float:
        return self.fp32_score - self.score

    @property
    def int8_drop(self) -> float:
        return self.fp32_score - self.int8_score


def _quantizer_modules() -> tuple[Any, Any, Any]:
    try:
        from ai_edge_quantizer import qtyping, quantizer, recipe
    except ImportError:
        raise ToolMissingError(
            "ai-edge-quantizer is not installed: pip install -c constraints.txt "
            "'.[quantizer]' (or pip install ai-edge-quantizer==0.10.0)"
        ) from None
    return quantizer, recipe, qtyping


def litert_interpreter(flatbuffer: bytes, threads: int) -> Any:
    """A LiteRT interpreter of ``flatbuffer`` with its tensors allocated."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ToolMissingError("the LiteRT interpreter is not installed: pip install ai-edge-litert") \
            from None
    interpreter = Interpreter(model_content=bytes(flatbuffer), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def signature_input(fp32: bytes) -> tuple[str, str]:
    """(signature key, input name) of a single-input model, as the quantizer's data needs them."""
    signatures = litert_interpreter(fp32, 1).get_signature_list()
    if len(signatures) != 1:
        raise ValueError(f"expected one signature in the fp32 model, found {sorted(signatures)}")
    [(key, signature)] = signatures.items()
    if len(signature["inputs"]) != 1:
        raise ValueError(f"expected one input in signature {key}, found {signature['inputs']}")
    return key, signature["inputs"][0]


def signature_data(fp32: bytes, samples: np.ndarray) -> dict[str, list[dict[str, np.ndarray]]]:
    """Samples (N x ...) as the quantizer's ``{signature: [{input: batch of one}, ...]}``."""
    key, name = signature_input(fp32)
    return {key: [{name: samples[i:i + 1].astype(np.float32)} for i in range(len(samples))]}


def _io_types(flatbuffer: bytes) -> tuple[str, str]:
    interpreter = litert_interpreter(flatbuffer, 1)
    return (np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
            np.dtype(interpreter.get_output_details()[0]["dtype"]).name)


def list_ops(fp32: bytes) -> list[ModelOp]:
    """The main subgraph's operators with the scopes the quantizer's recipes match against."""
    _quantizer_modules()
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    model = fb.read_model(bytearray(fp32))
    subgraph = model.subgraphs[0]
    tensors = subgraph.tensors

    def name(index: int) -> str:
        return str(fb.get_tensor_name(tensors[index]))

    def constant(index: int) -> bool:
        return model.buffers[tensors[index].buffer].data is not None

    names = _builtin_names()
    ops = []
    for index, op in enumerate(subgraph.operators):
        code = model.operatorCodes[op.opcodeIndex].builtinCode
        ops.append(ModelOp(
            index=index,
            op=names.get(code, f"BUILTIN_{code}"),
            scope=str(fb.get_op_scope(op, tensors)),
            outputs=tuple(name(i) for i in op.outputs if i != -1),
            inputs=tuple(name(i) for i in op.inputs if i != -1 and not constant(i)),
        ))
    return ops


def _builtin_names() -> dict[int, str]:
    """Builtin operator code -> name (CONV_2D), from LiteRT's flatbuffer schema."""
    from ai_edge_litert import schema_py_generated as schema

    return {value: name for name, value in vars(schema.BuiltinOperator).items()
            if not name.startswith("_") and isinstance(value, int)}


def resolve_scopes(fp32: bytes, keep_float: Iterable[int | str]) -> tuple[str, ...]:
    """Op scopes for ops given by index in the main subgraph, by scope or by an output tensor name."""
    ops = list_ops(fp32)
    scopes: list[str] = []
    for item in keep_float:
        if isinstance(item, int):
            if not 0 <= item < len(ops):
                raise ValueError(f"op index {item} out of range (the model has {len(ops)} ops)")
            scope = ops[item].scope
        else:
            matches = [op.scope for op in ops if item == op.scope or item in op.outputs]
            if not matches:
                raise ValueError(f"no op has the output tensor {item!r}")
            scope = matches[0]
        if scope not in scopes:
            scopes.append(scope)
    return tuple(sorted(scopes))


@contextlib.contextmanager
def _preserving_all_tensors() -> Iterator[None]:
    """Without LiteRT's warning that an interpreter keeping every intermediate tensor is
    "intended for debugging": calibration and the op comparison keep them on purpose (the
    quantizer's calibration creates such interpreters itself)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Warning: Enabling `experimental_preserve_all_tensors`")
        yield


def calibrate(fp32: bytes, calibration: np.ndarray, threads: int = DEFAULT_THREADS) -> dict[str, Any]:
    """Min/max of every tensor of the fp32 model on the calibration samples (the quantizer's QSVs).

    Computed once under the full static recipe, the result serves every per-op recipe of the
    search (a recipe that keeps ops in float needs a subset of these tensors).
    """
    quantizer, recipe, _ = _quantizer_modules()
    engine = quantizer.Quantizer(bytearray(fp32), recipe.static_wi8_ai8())
    with _preserving_all_tensors():
        result: dict[str, Any] = engine.calibrate(signature_data(fp32, calibration),
                                                  num_threads=threads)
    return result


def quantize_dynamic(fp32: bytes, small_weights: Literal["float", "int8"] = "float") -> QuantizedModel:
    """Dynamic-range model: int8 channel-wise weights, float activations quantized at run time.

    ``small_weights="float"`` (default) is the quantizer's ``dynamic_legacy_wi8_afp32`` recipe:
    only weights of at least 1024 elements are quantized, as the TF converter does. ``"int8"``
    is ``dynamic_wi8_afp32``: every weight, including 3x3 depthwise kernels, whose hybrid
    kernels are slow (MobileNetV2 0.35 96x96, 1 thread: 1.0-1.1 ms against 0.38-0.48 ms for
    the legacy recipe and for fp32; see benchmarks/quantizer_engines.out.md).
    """
    quantizer, recipe, _ = _quantizer_modules()
    plan = recipe.dynamic_legacy_wi8_afp32() if small_weights == "float" else recipe.dynamic_wi8_afp32()
    started = time.perf_counter()
    engine = quantizer.Quantizer(bytearray(fp32), plan)
    result = engine.quantize(enable_progress_bar=False, enable_progress_report=False)
    seconds = time.perf_counter() - started
    flatbuffer = bytes(result.quantized_model)
    return QuantizedModel("dynamic", flatbuffer, seconds, *_io_types(flatbuffer),
                          recipe=_plain_recipe(engine))


def quantize_fp16(fp32: bytes) -> QuantizedModel:
    """float16 weights, dequantized to float32 at load (like the TF converter's fp16 mode).

    The quantizer's ``FLOAT_CASTING`` algorithm with a 16-bit weight-only config; it covers
    FULLY_CONNECTED, CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and EMBEDDING_LOOKUP weights.
    """
    quantizer, _, qtyping = _quantizer_modules()
    from ai_edge_quantizer import algorithm_manager

    started = time.perf_counter()
    engine = quantizer.Quantizer(bytearray(fp32))
    engine.add_weight_only_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, 16,
                                  algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
    result = engine.quantize(enable_progress_bar=False, enable_progress_report=False)
    seconds = time.perf_counter() - started
    flatbuffer = bytes(result.quantized_model)
    return QuantizedModel("fp16", flatbuffer, seconds, *_io_types(flatbuffer),
                          recipe=_plain_recipe(engine))


def int8_recipe(keep_float_scopes: Sequence[str] = (), io_type: IOType = "float32") -> list[dict[str, Any]]:
    """Static int8 (``static_wi8_ai8``) with ``NO_QUANTIZE`` entries for the given op scopes.

    Recipe entries match an op's scope with ``re.search``, the last match wins: each kept op
    gets an anchored, escaped regex after the catch-all entry. With ``io_type="float32"`` the
    virtual ``INPUT``/``OUTPUT`` ops stay unquantized, so the model takes and returns float32
    (the quantizer otherwise makes int8 I/O).
    """
    quantizer, recipe, qtyping = _quantizer_modules()
    from ai_edge_quantizer import algorithm_manager, recipe_manager

    manager = recipe_manager.RecipeManager()
    manager.load_quantization_recipe(recipe.static_wi8_ai8())
    no_quantize = algorithm_manager.AlgorithmName.NO_QUANTIZE
    if io_type == "float32":
        for io_op in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
            manager.add_quantization_config(".*", io_op, None, no_quantize)
    for scope in keep_float_scopes:
        manager.add_quantization_config(f"^{re.escape(scope)}$", qtyping.TFLOperationName.ALL_SUPPORTED,
                                        None, no_quantize)
    plan: list[dict[str, Any]] = manager.get_quantization_recipe()
    return plan


def quantize_int8(fp32: bytes, calibration: np.ndarray | None = None,
                  keep_float: Iterable[int | str] = (), io_type: IOType = "float32",
                  calibration_result: dict[str, Any] | None = None,
                  threads: int = DEFAULT_THREADS) -> QuantizedModel:
    """Static int8 model calibrated on ``calibration`` (N x input shape, float32, preprocessed).

    ``keep_float`` names ops kept in float (indices in the main subgraph, scopes or output
    tensor names); quantized neighbours get QUANTIZE/DEQUANTIZE ops around them. Pass a
    ``calibration_result`` from :func:`calibrate` to skip calibrating again.
    """
    quantizer, _, _ = _quantizer_modules()
    started = time.perf_counter()
    scopes = resolve_scopes(fp32, keep_float)
    engine = quantizer.Quantizer(bytearray(fp32), int8_recipe(scopes, io_type))
    with _preserving_all_tensors():  # calibrating, and checking a calibration, make them
        if calibration_result is None:
            if calibration is None:
                raise ValueError("static int8 needs calibration samples or a calibration result")
            calibration_result = engine.calibrate(signature_data(fp32, calibration),
                                                  num_threads=threads)
        result = engine.quantize(calibration_result, enable_progress_bar=False,
                                 enable_progress_report=False)
    seconds = time.perf_counter() - started
    flatbuffer = bytes(result.quantized_model)
    return QuantizedModel("int8-mixed" if scopes else "int8", flatbuffer, seconds,
                          *_io_types(flatbuffer), kept_float=scopes, recipe=_plain_recipe(engine))


def _plain_recipe(engine: Any) -> list[dict[str, Any]]:
    """The engine's recipe with enums as their values (JSON-ready, for report.json)."""
    import json

    plan = json.loads(json.dumps(engine.get_quantization_recipe(), default=lambda v: v.value))
    return list(plan)


def predict(flatbuffer: bytes, images: np.ndarray, threads: int = DEFAULT_THREADS,
            what: str = "the quantized model") -> np.ndarray:
    """Float outputs of a model on float32 inputs, one sample at a time (quantized I/O handled)."""
    interpreter = litert_interpreter(flatbuffer, threads)
    source = interpreter.get_input_details()[0]
    target = interpreter.get_output_details()[0]
    outputs = []
    for image in images:
        interpreter.set_tensor(source["index"], to_input(image[None], source))
        invoke(interpreter, what)
        outputs.append(_from_output(interpreter.get_tensor(target["index"]), target)[0])
    return np.stack(outputs)


def invoke(interpreter: Any, what: str) -> None:
    """Run ``interpreter`` (of ``what``: "the quantized model") once. XNNPACK, LiteRT's default
    CPU kernels, refuses some quantized models when they first run: a ConversionError that
    says so; any other error is raised as it is."""
    try:
        interpreter.invoke()
    except RuntimeError as error:
        if (refusal := xnnpack_refusal(error)) is None:
            raise
        raise ConversionError(f"LiteRT cannot run {what}: {refusal}") from None


def to_input(batch: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """float32 inputs in the dtype of the input ``detail`` (quantized with its scale/zero point;
    an integer input without a scale, such as token ids, takes the values as they are)."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return batch.astype(np.float32)
    scale, zero_point = detail["quantization"]
    if scale == 0:
        return batch.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(batch / scale + zero_point), info.min, info.max).astype(dtype)


def _from_output(raw: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if raw.dtype == np.float32:
        return raw
    scale, zero_point = detail["quantization"]
    return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)


def channel_nmse(target: np.ndarray, reference: np.ndarray) -> float:
    """Per-channel squared error over the channel's fp32 mean square, averaged over channels.

    Channels are the last axis; every other axis (batch, spatial) is pooled, so give a batch
    of samples. Per channel, so one outlier channel with a huge range cannot hide the error it
    causes in all the others (a tensor-wide MSE or SNR is dominated by that channel). A
    channel's mean square is floored at 1 % of the median channel's, so near-zero channels
    (dead ReLUs, unlikely softmax classes) cannot blow the ratio up. Non-float tensors
    (shapes, indices) compare exactly: 0 when equal, else 1.
    """
    ref = np.asarray(reference)
    out = np.asarray(target)
    if ref.shape != out.shape:
        return float("nan")
    if not np.issubdtype(ref.dtype, np.floating):
        return 0.0 if np.array_equal(ref, out) else 1.0
    # float32 values, float64 sums: no float64 copies of the (large) activations
    ref = ref.astype(np.float32, copy=False).reshape(-1, ref.shape[-1] if ref.ndim else 1)
    difference = out.astype(np.float32, copy=False).reshape(ref.shape) - ref
    power = np.asarray(np.mean(np.square(ref), axis=0, dtype=np.float64))
    noise = np.asarray(np.mean(np.square(difference, out=difference), axis=0, dtype=np.float64))
    positive = power[power > 0]
    if positive.size == 0:
        return 0.0 if not noise.any() else 1.0
    floor = _CHANNEL_FLOOR * float(np.median(positive))
    return float(np.mean(noise / np.maximum(power, floor)))


def op_sensitivity(fp32: bytes, quantized: bytes, samples: Samples, top: int | None = 10,
                   threads: int = DEFAULT_THREADS, batch: int = 8) -> list[OpError]:
    """The ops of ``fp32`` with the largest error the quantization of ``quantized`` adds.

    Runs both models on ``samples`` with every tensor preserved and compares the output tensor
    of each op of ``fp32`` with the same-named tensor of ``quantized`` (dequantized) by
    :func:`channel_nmse` (see :func:`tensor_errors`). Ops whose output tensor is absent from
    the quantized model are skipped. Sorted by ``added_nmse``, largest first; ``top=None``
    returns every op.
    """
    ops = list_ops(fp32)
    nmse = tensor_errors(fp32, quantized, samples, {name for op in ops for name in op.outputs},
                         threads, batch)
    errors = []
    for op in ops:
        measured = [nmse[name] for name in op.outputs if name in nmse]
        if not measured:
            continue
        output = max(measured)
        upstream = max((nmse.get(name, 0.0) for name in op.inputs), default=0.0)
        errors.append(OpError(op.index, op.op, op.scope, output, max(0.0, output - upstream)))
    errors.sort(key=lambda e: (-e.added_nmse, e.index))
    return errors if top is None else errors[:top]


def tensor_errors(fp32: bytes, quantized: bytes, samples: Samples, names: set[str],
                  threads: int = DEFAULT_THREADS, batch: int = 8) -> dict[str, float]:
    """:func:`channel_nmse` of each named tensor of ``quantized`` against ``fp32``'s.

    Both models run on the same float32 samples in batches of ``batch`` (one by one for a model
    with a fixed batch of 1, like the Edge TPU's), integer model inputs quantized with their
    scale; a tensor's error is the mean over batches (a batch pools its samples, so a batch of
    several gives each channel more values). LiteRT is used directly, not the quantizer's
    ``compare_model``, which feeds both models the same arrays and so cannot run a model with
    uint8 or int8 input. ``samples`` is one array (a one-input model) or one per input name.
    """
    reference = _Preserving(fp32, threads, "the fp32 model")
    target = _Preserving(quantized, threads, "the quantized model")
    named = reference.named(samples)
    size = min(batch, reference.max_batch, target.max_batch)
    totals: dict[str, list[float]] = {}
    for start in range(0, len(next(iter(named.values()))), size):
        chunk = {name: array[start:start + size].astype(np.float32)
                 for name, array in named.items()}
        expected = reference.run(chunk, names)
        actual = target.run(chunk, set(expected))
        for name, value in expected.items():
            if name in actual:
                error = channel_nmse(actual[name], value)
                if np.isfinite(error):
                    totals.setdefault(name, []).append(error)
    return {name: float(np.mean(values)) for name, values in totals.items()}


class _Preserving:
    """A LiteRT interpreter keeping every intermediate tensor, fed float32 batches."""

    def __init__(self, flatbuffer: bytes, threads: int, what: str) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.what = what
        with _preserving_all_tensors():
            self.interpreter = Interpreter(model_content=bytes(flatbuffer), num_threads=threads,
                                           experimental_preserve_all_tensors=True)
        self.inputs = _signature_inputs(self.interpreter)
        batches = [detail["shape_signature"][0] for detail in self.inputs.values()]
        self.max_batch = 1 if any(b != -1 for b in batches) else 1 << 30
        self.by_name = {d["name"]: d for d in self.interpreter.get_tensor_details()}
        self.batch = 0

    def named(self, samples: Samples) -> dict[str, np.ndarray]:
        """``samples`` by this model's input names (one array: the model's single input)."""
        if isinstance(samples, dict):
            return samples
        if len(self.inputs) != 1:
            raise ValueError(f"the model has inputs {', '.join(self.inputs)}: pass one array each")
        return {next(iter(self.inputs)): samples}

    def run(self, chunk: dict[str, np.ndarray], names: set[str]) -> dict[str, np.ndarray]:
        count = len(next(iter(chunk.values())))
        if count != self.batch:
            for name, detail in self.inputs.items():
                self.interpreter.resize_tensor_input(detail["index"], [count, *chunk[name].shape[1:]])
            self.interpreter.allocate_tensors()
            self.batch = count
        for name, detail in self.inputs.items():
            self.interpreter.set_tensor(detail["index"], to_input(chunk[name], detail))
        invoke(self.interpreter, self.what)
        values = {}
        for name in names:
            tensor = self.by_name.get(name)
            if tensor is None or not all(tensor["shape"]):
                continue
            try:
                raw = self.interpreter.get_tensor(tensor["index"])
            except ValueError:  # a tensor the runtime did not keep (no data)
                continue
            values[name] = _dequantized(raw, tensor)
        return values


def _signature_inputs(interpreter: Any) -> dict[str, dict[str, Any]]:
    """Input details by signature name (by tensor name for a model without a signature)."""
    details = interpreter.get_input_details()
    signatures = interpreter.get_signature_list()
    if not signatures:
        return {str(detail["name"]): detail for detail in details}
    by_index = {int(detail["index"]): detail for detail in details}
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    return {name: by_index[int(detail["index"])]
            for name, detail in runner.get_input_details().items()}


def _dequantized(raw: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A quantized tensor as float (per-tensor or per-channel scale); others as they are."""
    scales = detail["quantization_parameters"]["scales"]
    if raw.dtype not in (np.int8, np.uint8, np.int16) or len(scales) == 0:
        return raw
    zero_points = detail["quantization_parameters"]["zero_points"]
    if len(scales) == 1:
        return ((raw.astype(np.float32) - zero_points[0]) * scales[0]).astype(np.float32)
    axis = detail["quantization_parameters"]["quantized_dimension"]
    shape = [1] * raw.ndim
    shape[axis] = len(scales)
    return ((raw.astype(np.float32) - zero_points.reshape(shape)) * scales.reshape(shape)
            ).astype(np.float32)


def score(outputs: np.ndarray, labels: np.ndarray | None, reference: np.ndarray | None) -> float:
    """Accuracy against labels, else top-1 agreement with the reference outputs."""
    predicted = outputs.reshape(len(outputs), -1).argmax(axis=1)
    if labels is not None:
        return float(np.mean(predicted == labels))
    if reference is None:
        raise ValueError("give labels or reference outputs to score a model")
    return float(np.mean(predicted == reference.reshape(len(reference), -1).argmax(axis=1)))


def accuracy_aware_int8(fp32: bytes, calibration: np.ndarray, validation: np.ndarray,
                        labels: np.ndarray | None = None, reference: np.ndarray | None = None,
                        max_drop: float = 0.01, group_size: int = 1, max_float_ops: int | None = None,
                        sensitivity_samples: int = 16,
                        threads: int = DEFAULT_THREADS) -> MixedResult:
    """Static int8 with the fewest sensitive ops kept in float that keeps the drop within ``max_drop``.

    The fp32 model is scored on ``validation`` (accuracy with ``labels``, else top-1 agreement
    with ``reference``). Starting from plain int8, each step measures :func:`op_sensitivity`
    of the current model on the first ``sensitivity_samples`` calibration samples and keeps the
    ``group_size`` ops adding the most error in float, until the drop is within the bound, no
    quantized op is left, or ``max_float_ops`` ops are float. Then, within the bound, each kept
    op is tried quantized again, latest first, and stays quantized when the bound still holds:
    the error an op "adds" is measured against its inputs' error, and ops that amplify upstream
    error (a SOFTMAX after the op that caused it) rank high without being the cause. The
    calibration runs once.
    """
    calibration_result = calibrate(fp32, calibration, threads)
    fp32_score = score(predict(fp32, validation, threads, "the fp32 model"), labels, reference)
    probe = calibration[:sensitivity_samples]
    limit = max_float_ops if max_float_ops is not None else len(list_ops(fp32))
    kept: list[OpError] = []
    model = plain = quantize_int8(fp32, keep_float=(), calibration_result=calibration_result,
                                  threads=threads)
    int8_score = current = score(predict(model.flatbuffer, validation, threads), labels, reference)
    steps = [SearchStep((), current, fp32_score - current, model.size)]
    while fp32_score - current > max_drop and len(kept) < limit:
        chosen = {e.scope for e in kept}
        ranked = [e for e in op_sensitivity(fp32, model.flatbuffer, probe, top=None, threads=threads)
                  if e.scope not in chosen and e.added_nmse > 0]
        if not ranked:
            break
        kept.extend(ranked[:min(group_size, limit - len(kept))])
        model = quantize_int8(fp32, keep_float=[e.scope for e in kept],
                              calibration_result=calibration_result, threads=threads)
        current = score(predict(model.flatbuffer, validation, threads), labels, reference)
        steps.append(SearchStep(model.kept_float, current, fp32_score - current, model.size))
    if fp32_score - current <= max_drop:
        for candidate in reversed(list(kept)):
            trial = [e for e in kept if e is not candidate]
            retry = quantize_int8(fp32, keep_float=[e.scope for e in trial],
                                  calibration_result=calibration_result, threads=threads)
            try:
                trial_score = score(predict(retry.flatbuffer, validation, threads), labels,
                                    reference)
            except ConversionError:  # LiteRT cannot run it: the op stays in float
                continue
            steps.append(SearchStep(retry.kept_float, trial_score, fp32_score - trial_score,
                                    retry.size))
            if fp32_score - trial_score <= max_drop:
                kept, model, current = trial, retry, trial_score
    return MixedResult(model=model, kept_float=tuple(kept), fp32_score=fp32_score,
                       int8_score=int8_score, score=current, max_drop=max_drop,
                       within_bound=fp32_score - current <= max_drop, int8_model=plain,
                       steps=tuple(steps))
