"""Stage ``reference``: the Keras model itself on the validation split (outputs, accuracy, latency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters import console
from converters.cpu import this_cpu
from converters.errors import DatasetError, ModelError
from converters.fsutil import read_json, write_json_atomic
from converters.inputs.array_files import listed
from converters.inputs.model import Arrays
from converters.stages import data, export
from converters.stages.base import StageContext
from converters.stages.reference_params import OUTPUTS, SUMMARY, ReferenceParams
from converters.validation import metrics
from converters.validation.latency import measure_latency

# Images per Keras call: the activations of a batch of 32 at 224x224 held ~+300 MiB more than 8,
# which the stage process keeps for the rest of a -j 1 build (benchmarks/memory_notes.md).
BATCH = 8


def run(context: StageContext) -> None:
    import tensorflow as tf

    params = ReferenceParams.of(context)
    threads = params.threads
    model = params.load_model(context)
    inputs = data.load_inputs(context.build_dir, data.VALIDATION)
    count = data.sample_count(inputs)
    batches = [model.predict({name: array[i:i + BATCH] for name, array in inputs.items()})
               for i in console.progress(range(0, count, BATCH), "Keras reference",
                                         total=(count + BATCH - 1) // BATCH)]
    outputs = {tensor.name: np.concatenate([batch[tensor.name] for batch in batches])
               .astype(np.float32) for tensor in model.outputs}
    for name, values in outputs.items():
        bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
        if bad.any():
            raise ModelError(
                f"model {context.model_path} gives non-finite outputs (NaN or Inf) in output "
                f"'{name}' on {int(bad.sum())} of {count} validation samples: nothing can be "
                "validated against it. Check the model's weights and its preprocessing "
                "(--preprocessing), then convert again")
    first = [tf.constant(array[:1]) for array in inputs.values()]
    latency = measure_latency(lambda: model.graph_function(*first), params.latency_runs)
    with context.write(OUTPUTS).open("wb") as file:
        np.savez(file, **outputs)  # type: ignore[arg-type]
    labels = data.load_labels(context.build_dir)
    tasks = metrics.output_tasks({tensor.name: tensor.shape for tensor in model.outputs},
                                 params.task, outputs, model.output_hints)
    check_array_labels(context, outputs, tasks, labels)
    labelled = labelled_quality(outputs, tasks, labels)
    summary = {
        "accuracy": next((v["accuracy"] for v in labelled.values() if "accuracy" in v), None),
        "outputs": {name: {**tasks[name].as_dict(), **labelled.get(name, {})} for name in outputs},
        **latency.as_record(),
        "latency_method": "tf.function call, batch 1",
        "threads": threads,
        "latency_runs": params.latency_runs,
        "samples": int(count),
        "cpu": this_cpu().as_record(),
    }
    write_json_atomic(context.write(SUMMARY), summary)


def output_tasks(build_dir: Path) -> dict[str, metrics.OutputTask]:
    """Each output's task as the reference stage decided it, in the model's output order."""
    recorded = read_json(build_dir / SUMMARY)["outputs"]
    return {name: metrics.OutputTask(record["task"], record.get("head"))
            for name, record in recorded.items()}


def check_array_labels(context: StageContext, outputs: Arrays,
                       tasks: dict[str, metrics.OutputTask], labels: np.ndarray | None) -> None:
    """An array dataset's class indices (N,) are classes of the output they belong to: a label
    outside them (7 or -1 for 4 classes) would silently count as a wrong prediction. (An image
    folder's labels are its class folders, checked against the model by the data stage or let
    through on purpose by --allow-class-mismatch; class maps may hold an "ignore" value.)"""
    info = read_json(context.build_dir / data.DATASET_INFO)
    owner = metrics.label_owner({n: tuple(a.shape[1:]) for n, a in outputs.items()}, tasks, labels)
    if info.get("kind") != data.ARRAYS or owner is None or labels is None or labels.ndim != 1:
        return
    classes = max(2, outputs[owner].shape[-1])  # one unit: a binary classifier, classes 0 and 1
    bad = (labels < 0) | (labels >= classes)
    if not bad.any():
        return
    samples = [info["validation"]["files"][i] for i in np.flatnonzero(bad)]
    raise DatasetError(
        f"the labels of dataset {context.dataset_dir} hold values outside the {classes} classes "
        f"(0 to {classes - 1}) of the model output '{owner}': "
        f"{listed(str(v) for v in np.unique(labels[bad]))}, in {len(samples)} validation "
        f"sample(s) ({listed(samples)}). Accuracy would count them as wrong predictions: "
        "fix the labels (class indices in the model's output order), or drop those samples")


def labelled_quality(outputs: Arrays, tasks: dict[str, metrics.OutputTask],
                     labels: np.ndarray | None) -> dict[str, dict[str, Any]]:
    """The Keras model's own quality against the labels: accuracy of a classifier, pixel
    accuracy and mIoU of a segmentation output (for the output the labels belong to)."""
    owner = metrics.label_owner({n: tuple(a.shape[1:]) for n, a in outputs.items()}, tasks, labels)
    if owner is None or labels is None:
        return {}
    values = outputs[owner]
    if tasks[owner].task == "classification":
        return {owner: {"accuracy": metrics.accuracy(values, labels)}}
    predicted = values.argmax(-1)
    return {owner: {"pixel_accuracy": float(np.mean(predicted == labels)),
                    "miou_labels": metrics.mean_iou(labels, predicted, values.shape[-1])}}


def load_outputs(build_dir: Path) -> Arrays:
    """The Keras outputs on the validation split, by output name in the model's order."""
    with np.load(build_dir / OUTPUTS, allow_pickle=False) as stored:
        return {tensor.name: stored[tensor.name] for tensor in export.model_outputs(build_dir)}


def load_single_output(build_dir: Path, needed_by: str) -> np.ndarray:
    """The Keras outputs of a model with one output, for a stage that handles only those."""
    outputs = load_outputs(build_dir)
    if len(outputs) != 1:
        raise ModelError(f"{needed_by} handles models with one output; this model has "
                         f"{len(outputs)} ({listed(outputs)})")
    return next(iter(outputs.values()))
