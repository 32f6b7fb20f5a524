"""Agreement between an artifact's outputs and the Keras model's, per output and per task.

Every output gets max/mean absolute error, cosine similarity of the flattened outputs and the
signal-to-noise ratio (Keras output power over error power, dB). Then, by the output's task:

- classification (N × classes): top-1 agreement, and accuracy against labels (N,);
- segmentation (N × H × W × classes): per-pixel class agreement and mIoU against the Keras
  classes, and pixel accuracy and mIoU against labels (N × H × W) when given;
- detection: class heads (N × anchors × classes) per-anchor class agreement; box heads
  (N × anchors × 4) mean/max box error and the error relative to the boxes' mean magnitude;
- regression: relative error ||artifact - Keras|| / ||Keras||;
- embedding: cosine similarity.

Each output has a headline: a ``drop`` (0 = as good as Keras) that the recommendation bounds
with --max-accuracy-drop. Needs only numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from converters.errors import ConfigError, ValidationError
from converters.inputs.array_files import listed
from converters.validation.task_request import parse_task_request

CLASS_ACTIVATIONS = ("softmax", "sigmoid", "log_softmax")
CLASS_LOSSES = ("crossentropy", "hinge", "focal", "kl_divergence", "kld")
REGRESSION_LOSSES = ("squared", "absolute", "huber", "log_cosh", "logcosh", "mse", "mae",
                     "mape", "msle", "poisson")
BOX_COORDINATES = 4
SNR_CAP_DB = 200.0  # identical outputs: no noise at all; a finite number keeps JSON plain


@dataclass(frozen=True)
class OutputTask:
    """How one output is judged: its task and, for detection, which head it is."""

    task: str
    head: str | None = None  # "classes" | "boxes" for detection

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, **({"head": self.head} if self.head else {})}


def output_task(shape: tuple[int | None, ...], requested: str,
                values: np.ndarray | None = None) -> OutputTask:
    """The task of an output of per-sample ``shape``: ``requested`` (--task) or, for ``auto``,
    what the shape says (vector → classification, or embedding when the Keras ``values`` are
    unit-length vectors; anchors × 4 → boxes, anchors × classes → class head,
    H × W × classes → segmentation, anything else → regression)."""
    rank = len(shape)
    last = shape[-1] if shape else 1
    if requested in ("regression", "embedding"):
        return OutputTask(requested)
    if requested == "classification":
        return OutputTask("classification" if rank == 1 else "regression")
    if rank == 1 and last == 1 and values is not None and is_probability(values):
        return OutputTask("classification")  # one sigmoid unit: a binary classifier
    if requested == "segmentation":
        return OutputTask("segmentation" if rank == 3 else "regression")
    if requested == "detection":
        if rank == 2:
            return OutputTask("detection", "boxes" if last == BOX_COORDINATES else "classes")
        return OutputTask("regression")
    if rank == 1 and (last or 0) > 1:
        if values is not None and is_unit_length(values):
            return OutputTask("embedding")
        return OutputTask("classification")
    if rank == 2 and (last or 0) > 1:
        return OutputTask("detection", "boxes" if last == BOX_COORDINATES else "classes")
    if rank == 3 and (last or 0) > 1:
        return OutputTask("segmentation")
    return OutputTask("regression")


@dataclass(frozen=True)
class OutputHint:
    """What the model file says of one output beyond its shape: its layer's activation
    (softmax, sigmoid, linear, ...) and the loss it was compiled with, when saved."""

    activation: str | None = None
    loss: str | None = None

    def kind(self) -> str | None:
        """``"classes"`` (class scores), ``"regression"``, ``"linear"`` (a linear layer whose
        loss is unknown: logits or values) or None (nothing to go by)."""
        if self.activation in CLASS_ACTIVATIONS:
            return "classes"
        loss = (self.loss or "").lower()
        if any(word in loss for word in CLASS_LOSSES):
            return "classes"
        if any(word in loss for word in REGRESSION_LOSSES):
            return "regression"
        return "linear" if self.activation == "linear" else None

    def as_dict(self) -> dict[str, str | None]:
        return {"activation": self.activation, "loss": self.loss}


def output_tasks(shapes: dict[str, tuple[int | None, ...]], request: str,
                 values: dict[str, np.ndarray], hints: dict[str, OutputHint]
                 ) -> dict[str, OutputTask]:
    """Each output's task: the one ``--task`` names for it, else ``--task``'s task for all,
    else (``auto``) what the model file says (:meth:`OutputHint.kind`: class scores; a
    regression loss; a linear vector beside class scores, such as a face detector's box and
    landmark heads; anchors × 4 stay boxes), else what its shape says (:func:`output_task`)."""
    default, named = parse_task_request(request)
    if unknown := sorted(set(named) - set(shapes)):
        raise ConfigError(f"--task names output {listed(unknown)}, which the model does not "
                          f"have: its outputs are {listed(shapes)}")
    kinds = {name: hints[name].kind() if name in hints else None for name in shapes}
    has_classes = "classes" in kinds.values()
    tasks = {}
    for name, shape in shapes.items():
        requested = named.get(name, default)
        kind = kinds[name]
        if requested != "auto":
            tasks[name] = output_task(shape, requested, values[name])
        elif kind == "classes":
            tasks[name] = class_task(shape)
        elif kind == "regression" or (kind == "linear" and has_classes and len(shape) == 1):
            # anchors × 4 stay a detector's boxes: regression judged by box error
            by_shape = output_task(shape, "auto", values[name])
            tasks[name] = by_shape if by_shape.head == "boxes" else OutputTask("regression")
        else:
            tasks[name] = output_task(shape, "auto", values[name])
    return tasks


def class_task(shape: tuple[int | None, ...]) -> OutputTask:
    """Class scores of this per-sample shape: a classifier's vector, a class per position
    (rows × classes, judged as a detector's class head: per row), a class per pixel."""
    if len(shape) == 2:
        return OutputTask("detection", "classes")
    if len(shape) == 3:
        return OutputTask("segmentation")
    return OutputTask("classification")


def is_unit_length(values: np.ndarray) -> bool:
    """Every row has L2 norm 1 (an L2-normalized embedding) and is not a probability
    distribution (a confident softmax is nearly one-hot, so its norm is nearly 1 too)."""
    rows = values.reshape(len(values), -1).astype(np.float64)
    if not len(rows):
        return False
    probabilities = bool(np.all(rows >= 0)) and bool(np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))
    return not probabilities and bool(np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-3))


def compare_output(reference: np.ndarray, outputs: np.ndarray, kind: OutputTask,
                   labels: np.ndarray | None) -> dict[str, Any]:
    """Every metric of one output (``labels`` only when they belong to this output)."""
    if reference.shape != outputs.shape:
        raise ValidationError(f"artifact output shape {outputs.shape} differs from the Keras "
                              f"output shape {reference.shape}")
    ref = reference.astype(np.float64)
    out = outputs.astype(np.float64)
    difference = np.abs(ref - out)
    record: dict[str, Any] = {
        **kind.as_dict(),
        "max_abs_error": float(difference.max()),
        "mean_abs_error": float(difference.mean()),
        "cosine_similarity": cosine(ref, out),
        "snr_db": snr_db(ref, out),
    }
    if kind.task == "classification":
        agreement = float(np.mean(classes(ref) == classes(out, like=ref)))
        keras_accuracy = accuracy(ref, labels)
        record |= {"top1_agreement": agreement, "accuracy": accuracy(out, labels, like=ref)}
        if keras_accuracy is not None:
            return record | headline("accuracy", keras_accuracy - record["accuracy"])
        return record | headline("top1_agreement", 1.0 - agreement)
    if kind.task == "segmentation":
        return record | segmentation(ref, out, labels)
    if kind.task == "detection" and kind.head == "classes":
        agreement = float(np.mean(ref.argmax(-1) == out.argmax(-1)))
        return record | {"anchor_class_agreement": agreement} | headline(
            "anchor_class_agreement", 1.0 - agreement)
    if kind.task == "detection":
        scale = float(np.mean(np.abs(ref))) or 1.0
        box_error = float(np.mean(difference)) / scale
        return record | {"box_mean_abs_error": float(difference.mean()),
                         "box_max_abs_error": float(difference.max()),
                         "box_relative_error": box_error} | headline("box_relative_error", box_error)
    if kind.task == "embedding":
        return record | headline("cosine_similarity", 1.0 - record["cosine_similarity"])
    error = relative_error(ref, out)
    return record | {"relative_error": error} | headline("relative_error", error)


def headline(metric: str, drop: float) -> dict[str, Any]:
    """The metric the recommendation bounds, as a drop from Keras' quality (0 = no loss)."""
    return {"headline": metric, "drop": float(drop)}


def segmentation(ref: np.ndarray, out: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    """Per-pixel agreement and mIoU against Keras' per-pixel classes (and against labels)."""
    classes = ref.shape[-1]
    ref_classes, out_classes = ref.argmax(-1), out.argmax(-1)
    agreement = float(np.mean(ref_classes == out_classes))
    record: dict[str, Any] = {"pixel_agreement": agreement,
                              "miou": mean_iou(ref_classes, out_classes, classes),
                              "pixel_accuracy": None, "miou_labels": None}
    if labels is None:
        return record | headline("pixel_agreement", 1.0 - agreement)
    keras_miou = mean_iou(labels, ref_classes, classes)
    record |= {"pixel_accuracy": float(np.mean(out_classes == labels)),
               "miou_labels": mean_iou(labels, out_classes, classes),
               "keras_miou_labels": keras_miou}
    return record | headline("miou_labels", keras_miou - record["miou_labels"])


def mean_iou(truth: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    """Mean over the classes present in either map of intersection / union."""
    truth, predicted = truth.reshape(-1), predicted.reshape(-1)
    ious = []
    for label in range(classes):
        in_truth, in_predicted = truth == label, predicted == label
        union = int(np.sum(in_truth | in_predicted))
        if union:
            ious.append(np.sum(in_truth & in_predicted) / union)
    return float(np.mean(ious)) if ious else 1.0


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Mean over samples of the cosine between flattened outputs (over the whole split when a
    sample's output is a single number: the cosine of two numbers is only their signs)."""
    ref = ref.reshape(len(ref), -1)
    out = out.reshape(len(out), -1)
    if ref.shape[1] == 1:
        ref, out = ref.reshape(1, -1), out.reshape(1, -1)
    ref_norms = np.linalg.norm(ref, axis=1)
    out_norms = np.linalg.norm(out, axis=1)
    denominators = ref_norms * out_norms
    # Two zero vectors agree perfectly; one zero vector against a non-zero one does not.
    both_zero = ((ref_norms == 0) & (out_norms == 0)).astype(np.float64)
    values = np.divide(np.sum(ref * out, axis=1), denominators, out=both_zero,
                       where=denominators > 0)
    return float(values.mean())


def snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    """Signal-to-noise ratio in dB: Keras output power over the power of the difference."""
    noise = float(np.sum((ref - out) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0:
        return SNR_CAP_DB
    if signal == 0:
        return -SNR_CAP_DB
    return float(min(SNR_CAP_DB, 10.0 * math.log10(signal / noise)))


def relative_error(ref: np.ndarray, out: np.ndarray) -> float:
    norm = float(np.linalg.norm(ref))
    error = float(np.linalg.norm(ref - out))
    return error / norm if norm else (0.0 if error == 0 else math.inf)


def accuracy(outputs: np.ndarray, labels: np.ndarray | None,
             like: np.ndarray | None = None) -> float | None:
    return None if labels is None else labelled_accuracy(outputs, labels, like)


def labelled_accuracy(outputs: np.ndarray, labels: np.ndarray,
                      like: np.ndarray | None = None) -> float:
    """Top-1 accuracy of class scores against class indices (see :func:`classes`)."""
    flat = outputs.reshape(len(outputs), -1)
    return float(np.mean(classes(flat, None if like is None else like.reshape(flat.shape))
                         == labels))


def classes(scores: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """Predicted class per sample: the arg-max, or for one unit (a binary classifier) whether
    it is above 0.5 (probabilities) or above 0 (logits), as the Keras scores ``like`` (default
    ``scores``) are: a quantized probability may stray just outside 0..1."""
    if scores.shape[-1] != 1:
        return scores.argmax(-1)
    threshold = 0.5 if is_probability(scores if like is None else like) else 0.0
    return (scores[..., 0] > threshold).astype(np.int64)


def is_probability(values: np.ndarray) -> bool:
    return bool(values.size) and bool(np.all((values >= 0) & (values <= 1)))


def label_owner(shapes: dict[str, tuple[int | None, ...]], tasks: dict[str, OutputTask],
                labels: np.ndarray | None) -> str | None:
    """The output that labels belong to: class indices (N,) to the classification output with as
    many classes as the labels span (a model with class scores beside an embedding, say), else
    the first classification output; class maps (N × H × W) to the first segmentation output of
    that height and width."""
    if labels is None:
        return None
    if labels.ndim == 1:
        classifiers = [name for name, kind in tasks.items() if kind.task == "classification"]
        spanned = int(labels.max()) + 1 if labels.size else 0
        exact = [name for name in classifiers if shapes[name] and shapes[name][-1] == spanned]
        return next(iter(exact or classifiers), None)
    for name, kind in tasks.items():
        if kind.task == "segmentation" and tuple(labels.shape[1:]) == tuple(shapes[name][:2]):
            return name
    return None


def compare(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
            tasks: dict[str, OutputTask], labels: np.ndarray | None) -> dict[str, dict[str, Any]]:
    """Metrics of every output, by name (outputs matched by name, never by position)."""
    missing = [name for name in reference if name not in outputs]
    if missing:
        raise ValidationError(f"the artifact has no output named {listed(missing)} (it has "
                              f"{listed(outputs)}): outputs are matched by name")
    owner = label_owner({n: tuple(a.shape[1:]) for n, a in reference.items()}, tasks, labels)
    return {name: compare_output(reference[name], outputs[name], tasks[name],
                                 labels if name == owner else None)
            for name in reference}


def worst_headline(per_output: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The output whose headline metric dropped most: the model's headline. Regression outputs
    beside other outputs are left out: :func:`regression_error` bounds them on their own."""
    judged = {name: record for name, record in per_output.items()
              if record["task"] != "regression"} or per_output
    name, record = max(judged.items(), key=lambda item: item[1]["drop"])
    return {"output": name, "metric": record["headline"], "drop": record["drop"]}


def regression_error(per_output: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The largest relative error of the regression outputs of a model that also has other
    outputs (a detector's box and landmark heads beside its score), which
    ``--max-relative-error`` bounds; None for any other model."""
    regression = {name: record for name, record in per_output.items()
                  if record["task"] == "regression"}
    if not regression or len(regression) == len(per_output):
        return None
    name, record = max(regression.items(), key=lambda item: item[1]["relative_error"])
    return {"output": name, "relative_error": record["relative_error"]}


def summary(per_output: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The record's ``metrics`` (the keys single-output classifiers always had), over every
    output: the largest errors, the lowest cosine, the lowest class agreement (top-1, per pixel
    or per anchor; None when no output has classes) and the labelled output's accuracy."""
    records = list(per_output.values())
    agreements = [r.get("top1_agreement", r.get("pixel_agreement", r.get("anchor_class_agreement")))
                  for r in records]
    known = [value for value in agreements if value is not None]
    accuracies = [r.get("accuracy", r.get("pixel_accuracy")) for r in records]
    labelled = [value for value in accuracies if value is not None]
    return {
        "max_abs_error": max(r["max_abs_error"] for r in records),
        "mean_abs_error": float(np.mean([r["mean_abs_error"] for r in records])),
        "cosine_similarity": min(r["cosine_similarity"] for r in records),
        "top1_agreement": min(known) if known else None,
        "accuracy": labelled[0] if labelled else None,
    }


