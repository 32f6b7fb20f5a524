"""Per-output metrics (numpy only): tasks by shape, class decisions, mIoU, SNR, headlines."""

import numpy as np
import pytest

from converters.errors import ValidationError
from converters.validation import metrics


@pytest.mark.parametrize("shape,requested,expected", [
    ((10,), "auto", ("classification", None)),
    ((1,), "auto", ("regression", None)),
    ((8, 4), "auto", ("detection", "boxes")),
    ((8, 3), "auto", ("detection", "classes")),
    ((16, 16, 3), "auto", ("segmentation", None)),
    ((16, 16, 1), "auto", ("regression", None)),
    ((10,), "embedding", ("embedding", None)),
    ((16, 16, 3), "classification", ("regression", None)),
    ((8, 4), "detection", ("detection", "boxes")),
])
def test_output_task_by_shape(shape: tuple[int, ...], requested: str,
                              expected: tuple[str, str | None]) -> None:
    kind = metrics.output_task(shape, requested)
    assert (kind.task, kind.head) == expected


def test_embeddings_and_binary_classifiers_are_told_by_the_keras_values() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(20, 8))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert metrics.output_task((8,), "auto", unit).task == "embedding"
    confident_softmax = np.eye(8)[rng.integers(0, 8, 20)] * 0.999 + 0.001 / 8
    assert metrics.output_task((8,), "auto", confident_softmax).task == "classification"
    sigmoid = rng.uniform(0, 1, (20, 1))
    assert metrics.output_task((1,), "auto", sigmoid).task == "classification"
    labels = (sigmoid[:, 0] > 0.5).astype(np.int64)
    record = metrics.compare_output(sigmoid, sigmoid + 0.001, metrics.OutputTask("classification"),
                                    labels)
    assert record["accuracy"] == 1.0 and record["headline"] == "accuracy"


def test_class_labels_go_to_the_output_with_as_many_classes() -> None:
    """Class scores beside an unnormalised 8-wide output (taken for classification): the labels
    (4 classes) belong to the 4-wide output, whatever the order; else to the first."""
    classification = metrics.OutputTask("classification")
    tasks = {"embedding": classification, "probs": classification}
    labels = np.array([0, 3, 1, 2, 3])
    assert metrics.label_owner({"embedding": (8,), "probs": (4,)}, tasks, labels) == "probs"
    assert metrics.label_owner({"embedding": (8,), "probs": (5,)}, tasks, labels) == "embedding"
    assert metrics.label_owner({"embedding": (8,)}, {"embedding": metrics.OutputTask("embedding")},
                               labels) is None


def test_segmentation_metrics_against_keras_and_labels() -> None:
    labels = np.zeros((2, 4, 4), np.int64)
    labels[:, :2] = 1
    keras = np.eye(2)[labels]  # exact scores
    artifact = keras.copy()
    artifact[0, 0, 0] = [1, 0]  # one pixel of 32 flips
    record = metrics.compare_output(keras, artifact, metrics.OutputTask("segmentation"), labels)
    assert record["pixel_agreement"] == pytest.approx(31 / 32)
    # class 1: 15 / 16 ; class 0: 16 / 17
    assert record["miou"] == pytest.approx((15 / 16 + 16 / 17) / 2)
    assert record["miou_labels"] == record["miou"] and record["keras_miou_labels"] == 1.0
    assert record["headline"] == "miou_labels" and record["drop"] == pytest.approx(1 - record["miou"])


def test_snr_relative_error_and_worst_headline() -> None:
    keras = np.ones((4, 3))
    assert metrics.snr_db(keras, keras) == metrics.SNR_CAP_DB
    assert metrics.snr_db(keras, keras * 1.1) == pytest.approx(20.0)
    per_output = metrics.compare({"a": keras, "b": keras},
                                 {"a": keras, "b": keras * 1.1},
                                 {"a": metrics.OutputTask("regression"),
                                  "b": metrics.OutputTask("regression")}, None)
    assert per_output["b"]["relative_error"] == pytest.approx(0.1)
    assert metrics.worst_headline(per_output) == {"output": "b", "metric": "relative_error",
                                                  "drop": pytest.approx(0.1)}
    summary = metrics.summary(per_output)
    assert summary["top1_agreement"] is None and summary["max_abs_error"] == pytest.approx(0.1)
    with pytest.raises(ValidationError, match="no output named b .* matched by name"):
        metrics.compare({"a": keras, "b": keras}, {"a": keras, "c": keras},
                        {"a": metrics.OutputTask("regression"), "b": metrics.OutputTask("regression")},
                        None)
