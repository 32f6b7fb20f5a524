"""Each output's task from the model file (activation, saved loss), then its shape; --task
NAME=TASK; regression heads bounded by --max-relative-error: unit tests, and a face-detector-like
model with score, box and landmark heads trained a few epochs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.errors import ConfigError
from converters.inputs.model import load
from converters.validation.metrics import OutputHint, OutputTask, output_tasks, parse_task_request
from tests.conftest import run_invoke

SIZE = 16


def tasks_of(shapes: dict[str, tuple[int, ...]], hints: dict[str, OutputHint],
             request: str = "auto") -> dict[str, OutputTask]:
    rng = np.random.default_rng(0)
    values = {name: rng.normal(size=(8, *shape)) for name, shape in shapes.items()}
    return output_tasks(shapes, request, values, hints)  # type: ignore[arg-type]


def test_a_softmax_over_four_classes_per_step_is_not_boxes() -> None:
    tasks = tasks_of({"stages": (30, 4)}, {"stages": OutputHint("softmax")})
    assert tasks["stages"] == OutputTask("detection", "classes")
    assert tasks_of({"stages": (30, 4)}, {})["stages"] == OutputTask("detection", "boxes")


def test_linear_vectors_beside_class_scores_are_regression() -> None:
    shapes = {"score": (2,), "box": (4,), "landmarks": (10,)}
    hints = {"score": OutputHint("softmax"), "box": OutputHint("linear"),
             "landmarks": OutputHint("linear")}
    tasks = tasks_of(shapes, hints)
    assert [tasks[name].task for name in shapes] == ["classification", "regression", "regression"]
    # Without an output known to hold classes, a linear vector may be logits: shape decides.
    assert tasks_of({"logits": (5,)}, {"logits": OutputHint("linear")})["logits"].task == \
        "classification"


def test_a_saved_loss_decides_for_a_linear_layer() -> None:
    hints = {"logits": OutputHint("linear", "SparseCategoricalCrossentropy"),
             "value": OutputHint("relu", "mse")}
    tasks = tasks_of({"logits": (5,), "value": (3,)}, hints)
    assert (tasks["logits"].task, tasks["value"].task) == ("classification", "regression")
    # A detector's anchors × 4 trained with a squared error stay boxes.
    boxes = tasks_of({"boxes": (4, 4)}, {"boxes": OutputHint("linear", "mse")})["boxes"]
    assert boxes == OutputTask("detection", "boxes")


def test_task_per_output_overrides_and_unknown_names_are_refused() -> None:
    shapes = {"score": (2,), "box": (4,)}
    hints = {"score": OutputHint("softmax"), "box": OutputHint("linear")}
    tasks = tasks_of(shapes, hints, "box=embedding")
    assert (tasks["score"].task, tasks["box"].task) == ("classification", "embedding")
    assert tasks_of(shapes, hints, "regression,score=classification")["box"].task == "regression"
    with pytest.raises(ConfigError, match="names output boxes, which the model does not have"):
        tasks_of(shapes, hints, "boxes=regression")
    assert parse_task_request("regression, score=classification") == (
        "regression", {"score": "classification"})
    with pytest.raises(ConfigError, match="unknown --task 'boxes' in 'face=boxes'"):
        parse_task_request("face=boxes")


# --- a face-detector-like model: face score, box (4) and landmarks (10) ----------------------

def faces(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """16×16 images; half hold a bright square (a "face") whose box (top, left, bottom, right,
    in 0..1) and five landmarks (corners and centre, x and y) are the regression targets."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.2, 0.05, (count, SIZE, SIZE, 3)).astype(np.float32)
    labels = rng.integers(0, 2, count)
    boxes = np.zeros((count, 4), np.float32)
    for n in np.flatnonzero(labels):
        size = int(rng.integers(5, 10))
        top, left = (int(v) for v in rng.integers(0, SIZE - size + 1, 2))
        images[n, top:top + size, left:left + size] += 0.6
        boxes[n] = np.array([top, left, top + size, left + size]) / SIZE
    top, left, bottom, right = boxes.T
    landmarks = np.stack([left, top, right, top, (left + right) / 2, (top + bottom) / 2,
                          left, bottom, right, bottom], axis=1).astype(np.float32)
    return images, labels, boxes, landmarks


def face_model() -> Any:
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(image)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", padding="same")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    outputs = {"score": keras.layers.Dense(2, activation="softmax", name="score")(x),
               "box": keras.layers.Dense(4, name="box")(x),
               "landmarks": keras.layers.Dense(10, name="landmarks")(x)}
    return keras.Model(image, outputs)


@pytest.fixture(scope="module")
def face_detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    import keras

    root = tmp_path_factory.mktemp("faces")
    model = face_model()
    model.compile(optimizer=keras.optimizers.Adam(0.005),
                  loss={"score": "sparse_categorical_crossentropy", "box": "mse",
                        "landmarks": "mse"})
    images, labels, boxes, landmarks = faces(512, seed=0)
    model.fit(images, {"score": labels, "box": boxes, "landmarks": landmarks}, epochs=8,
              batch_size=32, verbose=0)
    test, test_labels, _, _ = faces(96, seed=1)
    accuracy = float(np.mean(model.predict(test, verbose=0)["score"].argmax(-1) == test_labels))
    model.save(root / "faces.keras")
    np.savez(root / "faces.npz", image=test, labels=test_labels)
    return root / "faces.keras", root / "faces.npz", accuracy


def test_the_file_gives_each_head_its_activation_and_loss(
        face_detector: tuple[Path, Path, float]) -> None:
    model, _, _ = face_detector
    hints = load(model).output_hints
    assert hints["score"] == OutputHint("softmax", "sparse_categorical_crossentropy")
    assert hints["box"] == OutputHint("linear", "mse")


def test_face_detector_heads_are_scored_by_their_task(face_detector: tuple[Path, Path, float],
                                                      tmp_path: Path) -> None:
    model, data, keras_accuracy = face_detector
    assert keras_accuracy > 0.9  # the score head has learnt its task

    def convert(*extra: str) -> dict[str, Any]:
        result = run_invoke("convert", "--model", str(model), "--dataset", str(data), "--out",
                            str(tmp_path / "out"), "--runner", "local", "--quant", "fp32,int8",
                            "--io-dtype", "float32", "--calibration-size", "32",
                            "--validation-size", "64", "--latency-runs", "2", "--threads", "1",
                            *extra)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        report: dict[str, Any] = json.loads((tmp_path / "out" / "faces" / "report.json").read_text())
        return report

    report = convert()
    assert {name: output["task"] for name, output in report["reference"]["outputs"].items()} == {
        "score": "classification", "box": "regression", "landmarks": "regression"}
    artifacts = {a["variant"]: a for a in report["artifacts"] if a["target"] == "tflite"}
    int8 = artifacts["int8"]
    assert int8["accuracy_drop_basis"] == "score: accuracy"
    assert int8["accuracy_drop"] == pytest.approx(
        report["reference"]["accuracy"] - int8["outputs"]["score"]["accuracy"])
    regression = int8["regression_error"]
    assert regression["output"] in ("box", "landmarks")
    assert regression["relative_error"] == max(int8["outputs"][name]["relative_error"]
                                               for name in ("box", "landmarks"))
    assert 0 < regression["relative_error"] < 0.05
    assert artifacts["fp32"]["regression_error"]["relative_error"] < 1e-5
    assert "tflite/faces_int8.tflite" not in report["recommendation"]["rejected"]
    # A bound the int8 heads cannot meet rejects it; the fp32 one still passes.
    strict = convert("--max-relative-error", "0.0001")
    assert "tflite/faces_int8.tflite" in strict["recommendation"]["rejected"]
    assert "tflite/faces_fp32.tflite" not in strict["recommendation"]["rejected"]
    # --task per output: the box head judged as class scores (arg-max agreement) on request.
    named = convert("--task", "box=classification", "--task", "landmarks=embedding")
    assert named["reference"]["outputs"]["box"]["task"] == "classification"
    assert named["reference"]["outputs"]["landmarks"]["task"] == "embedding"
