"""Split a partly mapped int8 .tflite into an Edge TPU head and a CPU tail (``--edgetpu-split``).

Coral users fix a model whose end cannot map (an ARG_MAX decoder, detection post-processing, a
float-only op) by cutting it: the head, every op the pre-check (:mod:`converters.edgetpu_check`)
predicts on the Edge TPU, is compiled alone and maps entirely; the tail, every other op, runs on
the CPU. Both are copies of the original flatbuffer (LiteRT's schema object API) that keep a
subset of the operators, with the subgraph's inputs and outputs set to the boundary tensors.
Tensors are kept as they are, so tensor indices and names match the original model; the
buffers (weights) that no kept operator reads are emptied.
Running head then tail on the CPU is checked against the whole model on seeded random inputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converters import console
from converters.errors import ConversionError, ModelError, ToolMissingError
from converters.fsutil import read_json, write_json_atomic
from converters.targets.edgetpu import check as edgetpu_check
from converters.targets.tflite import flatbuffer as tflite_inspect
from converters.targets.tflite import metadata
from converters.validation.compare import caller_tensor, dequantize, match_inputs, quantize
from converters.validation.latency import Latency, measure_latency

HEAD_SUFFIX = "_head.tflite"
TAIL_SUFFIX = "_tail.tflite"
RECORD_SUFFIX = "_split.json"
VALIDATION_SAMPLES = 8
FLATBUFFER_IDENTIFIER = b"TFL3"
NOT_NEEDED = "every op is predicted on the Edge TPU: nothing to split"


@dataclass(frozen=True)
class SplitPlan:
    """Operator and boundary-tensor indices of the head (Edge TPU) and the tail (CPU)."""

    head_ops: tuple[int, ...]
    tail_ops: tuple[int, ...]
    head_inputs: tuple[int, ...]
    head_outputs: tuple[int, ...]
    tail_inputs: tuple[int, ...]
    tail_outputs: tuple[int, ...]


def plan_split(graph: tflite_inspect.TFLiteGraph, precheck: dict[str, Any]) -> SplitPlan | str:
    """Where to cut, or why the model cannot (or need not) be split."""
    if precheck["blocking"]:
        return f"the compiler refuses the whole model: {'; '.join(precheck['blocking'])}"
    on_cpu = {op["index"] for op in precheck["cpu_op_reasons"]}
    head = tuple(op for op in graph.operators if op.index not in on_cpu)
    tail = tuple(op for op in graph.operators if op.index in on_cpu)
    if not tail:
        return NOT_NEEDED
    if not head:
        return "no op is predicted on the Edge TPU: there is no head to compile"
    model_inputs = {t.index for t in graph.inputs}
    model_outputs = {t.index for t in graph.outputs}
    head_inputs = _consumed(head) - _produced(head)
    early = sorted(head_inputs - model_inputs)
    if early:
        first = next(op for op in tail if early[0] in {t.index for t in op.outputs})
        return (f"op {first.index} {first.name} runs on the CPU before the Edge TPU segment: a "
                "head-then-tail split cannot hold it (the compiler already runs it on the CPU)")
    tail_inputs = _consumed(tail) - _produced(tail)
    return SplitPlan(
        head_ops=tuple(op.index for op in head), tail_ops=tuple(op.index for op in tail),
        head_inputs=_ordered(graph.inputs, head_inputs),
        head_outputs=tuple(sorted((tail_inputs | model_outputs) & _produced(head))),
        tail_inputs=tuple(sorted(tail_inputs)),
        tail_outputs=tuple(sorted(model_outputs & _produced(tail))))


def _produced(ops: tuple[tflite_inspect.OperatorInfo, ...]) -> set[int]:
    return {t.index for op in ops for t in op.outputs}


def _consumed(ops: tuple[tflite_inspect.OperatorInfo, ...]) -> set[int]:
    return {t.index for op in ops for t in op.inputs if not t.constant}


def _ordered(tensors: tuple[tflite_inspect.TensorInfo, ...], wanted: set[int]) -> tuple[int, ...]:
    return tuple(t.index for t in tensors if t.index in wanted)


def sub_model(data: bytes, operators: tuple[int, ...], inputs: tuple[int, ...],
              outputs: tuple[int, ...]) -> bytes:
    """A copy of the model's main subgraph keeping ``operators``, with the given I/O tensors."""
    import flatbuffers

    schema = tflite_inspect.schema_module()
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    graph = model.subgraphs[0]
    graph.operators = [copy.deepcopy(graph.operators[i]) for i in operators]
    graph.inputs, graph.outputs = list(inputs), list(outputs)
    model.signatureDefs = []  # they name the whole model's inputs and outputs
    # The whole model's TFLite metadata describes its inputs and outputs: metadata.for_part
    # writes the piece's own
    model.metadata = [entry for entry in model.metadata or []
                      if not metadata.is_metadata_entry(entry)]
    _empty_unused_buffers(model)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=FLATBUFFER_IDENTIFIER)
    return bytes(builder.Output())


def _empty_unused_buffers(model: Any) -> None:
    """Empty the buffers (weights) no kept tensor reads; indices stay valid."""
    graph = model.subgraphs[0]
    used = {*graph.inputs, *graph.outputs}
    for op in graph.operators:
        used.update(i for i in (*(op.inputs if op.inputs is not None else ()),
                                *(op.outputs if op.outputs is not None else ()),
                                *(op.intermediates if op.intermediates is not None else ()))
                    if i >= 0)
    needed = {tensor.buffer for index, tensor in enumerate(graph.tensors) if index in used}
    needed |= {tensor.buffer for other in model.subgraphs[1:] for tensor in other.tensors}
    needed |= {entry.buffer for entry in model.metadata or []}  # e.g. min_runtime_version
    for index, buffer in enumerate(model.buffers):
        if index not in needed:
            buffer.data = None


class Pipeline:
    """Head then tail on the CPU with LiteRT, fed and read by tensor index (kept by the split);
    ``signature`` (the whole model's names → tensor indices) names the inputs and outputs; a
    pair recorded before the split kept it has one input and one output, ``input``/``output``."""

    def __init__(self, head: Path, tail: Path, threads: int = 1,
                 head_delegates: list[Any] | None = None,
                 signature: dict[str, dict[str, int]] | None = None) -> None:
        self.head = _interpreter(head, threads, head_delegates)
        self.tail = _interpreter(tail, threads)
        first_input = self.head.get_input_details()[0]
        self.feeds, self.fetches = (
            (signature["inputs"], signature["outputs"]) if signature is not None else
            ({"input": int(first_input["index"])},
             {"output": int(self.tail.get_output_details()[0]["index"])}))
        self.details = {d["index"]: d for interpreter in (self.head, self.tail)
                        for d in (*interpreter.get_input_details(),
                                  *interpreter.get_output_details())}
        self.input_tensors = tuple(caller_tensor(name, self.details[index])
                                   for name, index in self.feeds.items())

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.feeds)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.fetches)

    def run(self, feeds: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Every output of head and tail, by tensor index, for model inputs ``feeds``."""
        values = dict(feeds)
        for interpreter in (self.head, self.tail):
            for detail in interpreter.get_input_details():
                interpreter.set_tensor(detail["index"], values[detail["index"]])
            interpreter.invoke()
            values.update({d["index"]: interpreter.get_tensor(d["index"])
                           for d in interpreter.get_output_details()})
        return values

    def _quantized_feeds(self, inputs: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
        return {index: quantize(array, self.details[index])
                for index, array in ((self.feeds[name], array) for name, array in
                                     match_inputs(inputs, self.feeds).items())}

    def predict_named(self, inputs: dict[str, np.ndarray], description: str = "") -> dict[str, np.ndarray]:
        """Every model output by name, for float inputs by name, one sample at a time."""
        count = len(next(iter(inputs.values())))
        results = []
        for i in console.progress(range(count), description, total=count):
            values = self.run(self._quantized_feeds({name: array[i:i + 1]
                                                     for name, array in inputs.items()}))
            results.append({name: dequantize(values[index], self.details[index])
                            for name, index in self.fetches.items()})
        return {name: np.concatenate([result[name] for result in results])
                for name in self.fetches}

    def latency_named(self, sample: dict[str, np.ndarray], runs: int) -> Latency:
        feeds = self._quantized_feeds({name: array[None] for name, array in sample.items()})
        return measure_latency(lambda: self.run(feeds), runs)


def signature_indices(model: Path) -> dict[str, dict[str, int]] | None:
    """The whole model's serving signature: input and output names → tensor indices."""
    interpreter = _interpreter(model, 1)
    signatures = interpreter.get_signature_list()
    if not signatures:
        return None
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    return {"inputs": {n: int(d["index"]) for n, d in runner.get_input_details().items()},
            "outputs": {n: int(d["index"]) for n, d in runner.get_output_details().items()}}


def _interpreter(path: Path, threads: int, delegates: list[Any] | None = None) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ToolMissingError("the LiteRT interpreter is not installed: pip install "
                               "ai-edge-litert (or pip install '.[tflite]')") from None
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=threads,
                                  experimental_delegates=delegates)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as error:
        raise ConversionError(f"LiteRT cannot load the split model {path}: {error}") from None
    return interpreter


def random_inputs(details: list[dict[str, Any]], seed: int) -> dict[int, np.ndarray]:
    """One seeded random value per model input, over its integer range (or N(0, 1) for float)."""
    generator = np.random.default_rng(seed)
    feeds = {}
    for detail in details:
        dtype = np.dtype(detail["dtype"])
        shape = tuple(int(s) for s in detail["shape"])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            feeds[detail["index"]] = generator.integers(info.min, info.max, shape, dtype=dtype,
                                                        endpoint=True)
        else:
            feeds[detail["index"]] = generator.standard_normal(shape).astype(dtype)
    return feeds


def validate(model: Path, head: Path, tail: Path, samples: int = VALIDATION_SAMPLES,
             seed: int = 0) -> dict[str, Any]:
    """Compare every output of the whole model with head-then-tail on the same inputs."""
    whole = _interpreter(model, 1)
    pipeline = Pipeline(head, tail)
    outputs = whole.get_output_details()
    max_diff = 0.0
    for sample in range(samples):
        feeds = random_inputs(whole.get_input_details(), seed + sample)
        for index, value in feeds.items():
            whole.set_tensor(index, value)
        whole.invoke()
        split = pipeline.run(feeds)
        for detail in outputs:
            expected = whole.get_tensor(detail["index"]).astype(np.float64)
            max_diff = max(max_diff, float(np.max(np.abs(expected - split[detail["index"]]),
                                                  initial=0.0)))
    return {"samples": samples, "seed": seed, "inputs": "uniform random over each input's range",
            "outputs_compared": [d["name"] for d in outputs], "bit_exact": max_diff == 0.0,
            "max_abs_difference": max_diff}


def split_model(model: Path, out_dir: Path | None = None) -> dict[str, Any]:
    """Write ``<stem>_head.tflite`` and ``<stem>_tail.tflite`` next to the model (or in
    ``out_dir``), validate them and write ``<stem>_split.json``; the record is returned."""
    precheck = edgetpu_check.check_model(model)
    graph = tflite_inspect.read(model)
    plan = plan_split(graph, precheck)
    folder = out_dir or model.parent
    record_path = folder / f"{model.stem}{RECORD_SUFFIX}"
    if isinstance(plan, str):
        record: dict[str, Any] = {"model": model.name, "split": False, "reason": plan,
                                  "needed": plan != NOT_NEEDED}
        write_json_atomic(record_path, record)
        return record
    data = model.read_bytes()
    head, tail = folder / f"{model.stem}{HEAD_SUFFIX}", folder / f"{model.stem}{TAIL_SUFFIX}"
    head.write_bytes(metadata.for_part(
        data, sub_model(data, plan.head_ops, plan.head_inputs, plan.head_outputs), "Edge TPU head"))
    tail.write_bytes(metadata.for_part(
        data, sub_model(data, plan.tail_ops, plan.tail_inputs, plan.tail_outputs), "CPU tail"))
    head_check = edgetpu_check.check_file(head)
    names = {t.index: t.name for op in graph.operators for t in (*op.inputs, *op.outputs)}
    record = {
        "model": model.name, "split": True, "head": head.name, "tail": tail.name,
        "boundary_tensors": [names[i] for i in plan.head_outputs if i in plan.tail_inputs],
        "head_ops": len(plan.head_ops), "tail_ops": len(plan.tail_ops),
        "tail_operators": sorted({graph.operators[i].name for i in plan.tail_ops}),
        "head_predicted_tpu_fraction": head_check["tpu_fraction"],
        "validation": validate(model, head, tail),
        "signature": signature_indices(model),
    }
    write_json_atomic(record_path, record)
    return record


def read_record(path: Path) -> dict[str, Any]:
    """A ``*_split.json`` written by :func:`split_model`, checked to describe a real split."""
    if not path.is_file():
        raise ModelError(f"{path} does not exist: write it with invoke edgetpu-check --model "
                         "X.tflite --edgetpu-split (or convert --target edgetpu --edgetpu-split)")
    record = read_json(path)
    if not record.get("split"):
        raise ModelError(f"{path} records no split: {record.get('reason', 'unknown reason')}")
    return record


def head_to_run(record_path: Path, record: dict[str, Any]) -> Path:
    """The compiled head (``*_head_edgetpu.tflite`` beside the record or in the build's
    ``edgetpu/compiled``) when there is one, else the uncompiled head (it runs on the CPU)."""
    compiled_name = record["head"].replace(".tflite", "_edgetpu.tflite")
    for folder in (record_path.parent, record_path.parent.parent / "compiled"):
        if (folder / compiled_name).is_file():
            return folder / compiled_name
    return record_path.parent / record["head"]


def split_lines(record: dict[str, Any]) -> list[str]:
    """How the console and the report describe a split."""
    if not record["split"]:
        return [f"Edge TPU split: not written ({record['reason']})."]
    check = record["validation"]
    agreement = ("bit-exact" if check["bit_exact"] else
                 f"max |difference| {check['max_abs_difference']:g}")
    return [f"Edge TPU split: head {record['head']} ({record['head_ops']} ops, "
            f"{100 * record['head_predicted_tpu_fraction']:.0f} % predicted on the Edge TPU) "
            f"and CPU tail {record['tail']} ({record['tail_ops']} ops: "
            f"{', '.join(record['tail_operators'])}), cut at {', '.join(record['boundary_tensors'])};"
            f" head then tail on the CPU vs the whole model on {check['samples']} random inputs: "
            f"{agreement}."]
