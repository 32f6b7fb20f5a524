"""An artifact's drop against the Keras model, read from its validation record and the reference
summary (plain JSON): what the report, the summary and int8-mixed's search compare, without
numpy."""

from __future__ import annotations

from typing import Any


def single_classifier(outputs: dict[str, Any]) -> bool:
    """One classification output: the drop is accuracy (or top-1 agreement), as it always was."""
    return len(outputs) == 1 and next(iter(outputs.values()))["task"] == "classification"


def accuracy_drop(record: dict[str, Any], keras: dict[str, Any]) -> tuple[float | None, str | None]:
    """An artifact's drop against Keras and what it is measured on, from its validation record
    and the reference summary: the task's headline metric (several or non-classification
    outputs), else accuracy with labels, else 1 - top-1 agreement; (None, None) when it failed."""
    if record.get("failed"):
        return None, None  # no metrics to compare: listed as failed, never recommended
    metrics, outputs = record["metrics"], record.get("outputs")
    if outputs and not single_classifier(outputs):
        headline = record["headline"]
        basis = (headline["metric"] if len(outputs) == 1
                 else f"{headline['output']}: {headline['metric']}")
        return float(headline["drop"]), basis
    if metrics["accuracy"] is not None and keras["accuracy"] is not None:
        return float(keras["accuracy"] - metrics["accuracy"]), "accuracy"
    return float(1.0 - metrics["top1_agreement"]), "top1_agreement"
