"""Models with several inputs and outputs, non-image inputs, detection and segmentation, end to
end through ``invoke convert``. Every model is trained a few epochs on generated data, so the
metrics compare a model that has learnt something (not flat outputs of random weights)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import run_invoke
from tests.multi_io_models import (
    audio_model,
    audio_samples,
    convert,
    detection_samples,
    detector_model,
    fusion_model,
    rectangle_maps,
    train,
)

OLD_METRIC_KEYS = {"max_abs_error", "mean_abs_error", "cosine_similarity", "top1_agreement",
                   "accuracy"}


def by_variant(report: dict[str, Any], target: str = "tflite") -> dict[str, dict[str, Any]]:
    return {a["variant"]: a for a in report["artifacts"] if a["target"] == target}


# --- detector: class logits (anchors × classes) and boxes (anchors × 4) --------------------

@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """A trained two-head detector and a flat folder of PNG images (no labels)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("detector")
    model = detector_model()
    test_images, test_classes, _ = detection_samples(200, seed=1)
    predicted = np.asarray(model.predict(test_images, verbose=0)[0]).argmax(-1)
    anchor_accuracy = float(np.mean(predicted == test_classes))
    model.save(root / "detector.keras")
    folder = root / "images"
    folder.mkdir()
    pixels, _, _ = detection_samples(80, seed=2)
    for index, image in enumerate(pixels):
        Image.fromarray((image * 255).round().astype(np.uint8)).save(folder / f"{index:03d}.png")
    return root / "detector.keras", folder, anchor_accuracy


def test_two_output_detector_validates_each_head(detector: tuple[Path, Path, float],
                                                 tmp_path: Path) -> None:
    model, images, anchor_accuracy = detector
    assert anchor_accuracy > 0.9  # the detector has learnt its task
    report = convert(model, images, tmp_path / "out", "--target", "tflite,onnx")
    assert [t["name"] for t in report["model"]["outputs"]] == ["class_logits", "boxes"]
    for target in ("tflite", "onnx"):
        fp32 = by_variant(report, target)["fp32"]
        classes, boxes = fp32["outputs"]["class_logits"], fp32["outputs"]["boxes"]
        assert (classes["task"], classes["head"]) == ("detection", "classes")
        assert (boxes["task"], boxes["head"]) == ("detection", "boxes")
        assert classes["anchor_class_agreement"] == 1.0
        assert boxes["box_relative_error"] < 1e-4 and classes["snr_db"] > 80
        assert fp32["accuracy_drop"] < 1e-4
    int8 = by_variant(report)["int8"]
    assert int8["outputs"]["class_logits"]["anchor_class_agreement"] > 0.9
    assert int8["outputs"]["boxes"]["box_relative_error"] < 0.1
    assert int8["outputs"]["boxes"]["snr_db"] > 15
    assert int8["accuracy_drop_basis"] in ("class_logits: anchor_class_agreement",
                                           "boxes: box_relative_error")
    assert set(int8["metrics"]) == OLD_METRIC_KEYS
    assert_bundle_runner_prints_both_heads(tmp_path / "out" / "detector", images, tmp_path / "bundle")


def assert_bundle_runner_prints_both_heads(build: Path, images: Path, folder: Path) -> None:
    """A bundle's run.py (the real file, beside the code and a bundle.json as `invoke bundle`
    writes them) on the int8 detector: one summary line per output, class scores' top classes."""
    import shutil
    import subprocess
    import sys

    from converters.bundles.bundle import shipped_code

    folder.mkdir()
    for name, source in shipped_code("converters.targets.tflite.device_runner").items():
        shutil.copy(source, folder / name)
    shutil.copy(build / "tflite" / "detector_int8.tflite", folder / "detector_int8.tflite")
    dataset = json.loads((build / "data" / "dataset.json").read_text())
    inputs = json.loads((build / "export" / "model.json").read_text())["inputs"]
    (folder / "bundle.json").write_text(json.dumps({
        "runtime": "litert", "artifact": "detector_int8.tflite",
        "model": {"input_shape": [16, 16, 3], "inputs": inputs},
        "preprocessing": dataset["preprocessing"], "class_names": []}))
    result = subprocess.run([sys.executable, str(folder / "run.py"), str(next(images.iterdir()))],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "XNNPACK" not in result.stderr  # the output is the model's, not LiteRT's notices
    lines = result.stdout.splitlines()
    assert {line.split(":")[0] for line in lines if not line.startswith(" ")} == {
        "class_logits", "boxes"}
    assert any(line.startswith("class_logits: shape [4, 3], min ") for line in lines)


def test_detector_edgetpu_split_and_infer_print_both_heads(detector: tuple[Path, Path, float],
                                                          tmp_path: Path) -> None:
    """The Edge TPU model (batch 1) of a two-output model: pre-check, head/tail split (the box
    head's LeakyReLU on the CPU), validation by name; infer prints both outputs."""
    model, images, _ = detector
    out = tmp_path / "out"
    result = run_invoke("convert", "--model", str(model), "--dataset", str(images), "--out",
                        str(out), "--calibration-size", "32", "--validation-size", "24",
                        "--latency-runs", "2", "--threads", "1", "--runner", "local",
                        "--target", "edgetpu", "--edgetpu-split")
    assert result.returncode != 0 and "the Edge TPU compile did not run" in result.stderr
    build = out / "detector"
    record = json.loads((build / "edgetpu" / "split" / "detector_int8_split.json").read_text())
    assert record["split"] and record["validation"]["bit_exact"]
    assert set(record["signature"]["outputs"]) == {"class_logits", "boxes"}
    report = json.loads((build / "report.json").read_text())
    edgetpu = by_variant(report, "edgetpu")["int8"]
    assert edgetpu["outputs"]["class_logits"]["anchor_class_agreement"] > 0.9
    image = next(images.iterdir())
    pair = run_invoke("infer", "--artifact", str(build / "edgetpu" / "split" /
                                                 "detector_int8_split.json"),
                      "--image", str(image), check=True)
    whole = run_invoke("infer", "--artifact", str(build / "edgetpu" / "detector_int8.tflite"),
                       "--image", str(image), check=True)
    assert pair.stdout == whole.stdout
    lines = whole.stdout.splitlines()
    assert lines[0].startswith("class_logits: shape [4, 3]") and any(
        line.startswith("boxes: shape [4, 4]") for line in lines)


# --- segmentation: H × W × classes, labelled class maps ------------------------------------

def segmentation_samples(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16×16×1 images with a rectangle of class 1 (grey) and one of class 2 (white)."""
    labels = rectangle_maps(count, 16, seed)
    noise = np.random.default_rng(seed + 1000).normal(0, 0.05, labels.shape)
    images = (labels * 0.45 + noise)[..., None].astype(np.float32)
    return images, labels


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import keras

    keras.utils.set_random_seed(2)
    root = tmp_path_factory.mktemp("segmenter")
    inputs = keras.Input((16, 16, 1), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Conv2D(3, 1, activation="softmax", name="mask")(x)
    model = keras.Model(inputs, outputs)
    images, labels = segmentation_samples(512, seed=0)
    train(model, images, labels, "sparse_categorical_crossentropy")
    model.save(root / "segmenter.keras")
    images, labels = segmentation_samples(80, seed=1)
    np.savez(root / "masks.npz", image=images, labels=labels)
    return root / "segmenter.keras", root / "masks.npz"


def test_segmentation_is_validated_per_pixel(segmenter: tuple[Path, Path], tmp_path: Path) -> None:
    model, dataset = segmenter
    report = convert(model, dataset, tmp_path / "out")
    assert report["reference"]["outputs"]["mask"]["miou_labels"] > 0.85
    artifacts = by_variant(report)
    fp32, int8 = artifacts["fp32"]["outputs"]["mask"], artifacts["int8"]["outputs"]["mask"]
    assert fp32["task"] == "segmentation"
    assert fp32["pixel_agreement"] > 0.99 and fp32["miou"] > 0.99
    assert int8["pixel_agreement"] > 0.95 and int8["miou"] > 0.85
    assert int8["miou_labels"] > 0.8 and int8["pixel_accuracy"] > 0.9
    assert artifacts["fp32"]["accuracy_drop_basis"] == "miou_labels"
    assert artifacts["fp32"]["path"] not in report["recommendation"]["rejected"]
    # The old keys stay, with per-pixel class agreement as top-1 agreement.
    assert set(artifacts["fp32"]["metrics"]) == OLD_METRIC_KEYS
    assert artifacts["fp32"]["metrics"]["top1_agreement"] == fp32["pixel_agreement"]


# --- two inputs: image + vector, a folder of .npz samples with labels ----------------------

@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return fusion_model(tmp_path_factory.mktemp("two_inputs"))


def test_two_input_model_is_fed_by_name(two_inputs: tuple[Path, Path], tmp_path: Path) -> None:
    model, samples = two_inputs
    report = convert(model, samples, tmp_path / "out", "--target", "tflite,onnx")
    assert [t["name"] for t in report["model"]["inputs"]] == ["image", "vector"]
    assert report["reference"]["accuracy"] > 0.9
    tflite, onnx = by_variant(report), by_variant(report, "onnx")
    assert tflite["fp32"]["metrics"]["top1_agreement"] == 1.0
    assert tflite["fp32"]["metrics"]["max_abs_error"] < 1e-4
    assert onnx["fp32"]["metrics"]["max_abs_error"] < 1e-4
    assert tflite["int8"]["metrics"]["accuracy"] > 0.85
    assert tflite["int8"]["accuracy_drop_basis"] == "accuracy"
    assert set(tflite["int8"]["metrics"]) == OLD_METRIC_KEYS
    # Per-op error of a two-input model: both inputs fed by name to the fp32 and int8 models.
    assert tflite["int8"]["op_errors"] and all(row["value"] > 0 for row in tflite["int8"]["op_errors"])
    # The automatic int8-mixed searches models with one input: here it is not needed, and says why
    reasons = {(n["target"], n["variant"]): n["reason"] for n in report["not_needed"]}
    assert ("the accuracy-aware search handles models with one input; this model has 2 "
            "(image, vector)") in reasons["tflite", "int8-mixed"]


def test_image_folder_for_a_two_input_model_is_refused(two_inputs: tuple[Path, Path],
                                                       tiny_dataset: Path, tmp_path: Path) -> None:
    model, _ = two_inputs
    result = run_invoke("convert", "--model", str(model), "--dataset", str(tiny_dataset),
                        "--out", str(tmp_path / "out"), "--runner", "local", "--quant", "fp32")
    assert result.returncode != 0
    assert "is an image folder" in result.stderr and "'vector' (4,)" in result.stderr
    assert "Traceback" not in result.stderr


# --- non-image: audio-shaped (samples × 1) input from a .npz file ----------------------------

@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("audio")
    audio_model().save(root / "tones.keras")
    clips, labels = audio_samples(80, seed=1)
    np.savez(root / "clips.npz", waveform=clips, labels=labels)
    return root / "tones.keras", root / "clips.npz"


def test_audio_model_with_npz_data_keeps_the_single_output_report(
        audio: tuple[Path, Path], tmp_path: Path) -> None:
    model, clips = audio
    report = convert(model, clips, tmp_path / "out")
    assert report["dataset"]["preprocessing"] is None  # arrays are used as given
    assert report["reference"]["accuracy"] > 0.9
    artifacts = by_variant(report)
    for variant in ("fp32", "int8"):
        artifact = artifacts[variant]
        assert set(artifact["metrics"]) == OLD_METRIC_KEYS
        assert artifact["accuracy_drop_basis"] == "accuracy"
        assert artifact["outputs"]["tone"]["task"] == "classification"
        assert artifact["metrics"]["top1_agreement"] == artifact["outputs"]["tone"]["top1_agreement"]
    assert artifacts["fp32"]["metrics"]["top1_agreement"] == 1.0
    assert artifacts["int8"]["metrics"]["top1_agreement"] > 0.9


def test_npz_without_the_input_array_names_it(audio: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = audio
    bad = tmp_path / "bad.npz"
    np.savez(bad, clips=np.zeros((10, 128, 1), np.float32), other=np.zeros((10, 3)))
    result = run_invoke("convert", "--model", str(model), "--dataset", str(bad), "--out",
                        str(tmp_path / "out"), "--runner", "local", "--quant", "fp32")
    assert result.returncode != 0
    assert "no array 'waveform'" in result.stderr and "(N, 256, 1)" in result.stderr
    assert "Traceback" not in result.stderr


# --- a plain TF SavedModel (tf.Module, no Keras metadata), three outputs --------------------

def test_plain_savedmodel_with_three_outputs(tmp_path: Path) -> None:
    """A tf.Module trained with a GradientTape, saved with a serving signature: classes,
    a regression value and an embedding (--task per shape: classification, regression)."""
    import tensorflow as tf

    rng = np.random.default_rng(5)
    features = rng.normal(0, 1, (1024, 6)).astype(np.float32)
    classes = (features[:, 0] + features[:, 1] > 0).astype(np.int64) + (features[:, 2] > 1)
    values = (features[:, 3] * 2 + features[:, 4]).astype(np.float32)

    class Model(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = tf.Variable(rng.normal(0, 0.4, (6, 16)).astype(np.float32))
            self.classes = tf.Variable(rng.normal(0, 0.4, (16, 3)).astype(np.float32))
            self.value = tf.Variable(rng.normal(0, 0.4, (16, 1)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec((None, 6), tf.float32, name="features")])
        def serve(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
            hidden = tf.nn.relu(features @ self.hidden)
            return {"logits": hidden @ self.classes, "value": hidden @ self.value,
                    "embedding": tf.math.l2_normalize(hidden, axis=-1)}

    module = Model()
    optimizer = tf.keras.optimizers.Adam(0.02)
    for _ in range(300):
        with tf.GradientTape() as tape:
            outputs = module.serve(features)
            loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
                classes, outputs["logits"], from_logits=True)) + tf.reduce_mean(
                (outputs["value"][:, 0] - values) ** 2)
        variables = [module.hidden, module.classes, module.value]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    assert float(loss) < 0.5  # trained
    saved = tmp_path / "plain_model"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    np.savez(tmp_path / "features.npz", features=features[:80], labels=classes[:80])
    report = convert(saved, tmp_path / "features.npz", tmp_path / "out")
    assert report["model"]["format"] == "saved_model"
    assert {t["name"] for t in report["model"]["outputs"]} == {"logits", "value", "embedding"}
    assert report["reference"]["accuracy"] > 0.85
    artifacts = by_variant(report)
    fp32, int8 = artifacts["fp32"]["outputs"], artifacts["int8"]["outputs"]
    assert fp32["value"]["task"] == "regression" and fp32["value"]["relative_error"] < 1e-5
    assert fp32["logits"]["top1_agreement"] == 1.0 and fp32["embedding"]["cosine_similarity"] > 0.9999
    assert int8["value"]["relative_error"] < 0.1 and int8["value"]["snr_db"] > 20
    assert int8["embedding"]["cosine_similarity"] > 0.98
    assert int8["logits"]["accuracy"] > 0.8


def test_a_model_returning_a_dict_is_validated_per_key(tmp_path: Path) -> None:
    """keras.Model(x, {"probs": ..., "embedding": ...}): outputs named by the keys; the labels
    (4 classes) are scored on the 4-class output, not on the 8-wide one beside it."""
    import keras

    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    features = rng.normal(0, 1, (1024, 6)).astype(np.float32)
    classes = (features[:, 0] > 0).astype(np.int64) * 2 + (features[:, 1] > 0)
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    probs = keras.layers.Dense(4, activation="softmax", name="class_head")(hidden)
    classifier = keras.Model(inputs, probs)
    classifier.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    classifier.fit(features, classes, epochs=8, batch_size=64, verbose=0)
    embedding = keras.layers.Dense(8, name="embedding_head")(hidden)
    path = tmp_path / "dict_model.keras"
    keras.Model(inputs, {"probs": probs, "embedding": embedding}).save(path)
    np.savez(tmp_path / "features.npz", features=features[:160], labels=classes[:160])
    report = convert(path, tmp_path / "features.npz", tmp_path / "out")
    assert {t["name"] for t in report["model"]["outputs"]} == {"probs", "embedding"}
    reference = report["reference"]["outputs"]
    assert reference["probs"]["accuracy"] > 0.9, reference
    assert "accuracy" not in reference["embedding"], reference


# --- tabular: features of very different ranges, ONNX int8 --------------------------------

def test_onnx_int8_keeps_an_input_float_whose_features_span_very_different_ranges(
        tmp_path: Path) -> None:
    """An income-like feature up to 70000 beside 0..1 features the class depends on (a
    Normalization layer first, as tabular models have): one int8 scale for the input would
    round the small features to one value; the input stays float and int8 keeps the accuracy."""
    import keras

    def records(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        features = rng.uniform(0, 1, (count, 4)).astype(np.float32)
        features[:, 0] *= 70000
        return features, (features[:, 1] + 0.5 * features[:, 2] > 0.75).astype(np.int64)

    train_x, train_y = records(2000, seed=0)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,), name="record")
    normalization = keras.layers.Normalization()
    normalization.adapt(train_x)
    x = keras.layers.Dense(16, activation="relu")(normalization(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="approved")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(train_x, train_y, epochs=10, batch_size=32, verbose=0)
    model.save(tmp_path / "tabular.keras")
    values, labels = records(120, seed=1)
    np.savez(tmp_path / "records.npz", record=values, labels=labels)
    report = convert(tmp_path / "tabular.keras", tmp_path / "records.npz", tmp_path / "out",
                     "--target", "onnx")
    assert report["reference"]["accuracy"] > 0.9
    onnx = by_variant(report, "onnx")
    (kept,) = onnx["int8"]["inputs_kept_float"]
    assert kept["input"] == "record" and kept["feature_range_ratio"] > 1e4
    assert "one int8 scale for all would round the narrow ones away" in kept["reason"]
    assert onnx["int8"]["metrics"]["accuracy"] > 0.9
    assert onnx["int8"]["metrics"]["top1_agreement"] > 0.95
    assert "inputs_kept_float" not in onnx["fp32"]


# --- TimeDistributed: one copy of the inner layer's ops, not one per time step -------------

def test_time_distributed_runs_its_layer_once_over_all_steps(tmp_path: Path) -> None:
    """Keras 3 runs TimeDistributed(Dense) once per time step when the time axis is static: 188
    MatMuls, an ONNX int8 file three times the fp32 one. Loaded here, it runs over the merged
    batch and time axes: the same outputs as Keras's own model, one MatMul, int8 smaller."""
    import keras

    from converters.inputs.model import load

    steps = 188
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    values = rng.normal(size=(400, steps, 32)).astype(np.float32)
    values[:, :, 0] += np.where(labels == 1, 0.5, -0.5)[:, None]  # the class shifts one feature
    keras.utils.set_random_seed(0)
    inputs = keras.Input((steps, 32), name="frames")
    x = keras.layers.TimeDistributed(keras.layers.Dense(128, activation="relu"), name="per_frame")(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="label")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(values, labels, epochs=5, batch_size=32, verbose=0)
    path = tmp_path / "frames.keras"
    model.save(path)
    np.savez(tmp_path / "frames.npz", frames=values[:80], labels=labels[:80])

    plain = keras.models.load_model(path).predict(values[:16], verbose=0)
    loaded = load(path)
    assert loaded.time_steps_merged == ("per_frame",)
    merged = loaded.predict({"frames": values[:16]})["label"]
    assert np.abs(merged - plain).max() < 1e-5

    report = convert(path, tmp_path / "frames.npz", tmp_path / "out", "--target", "tflite,onnx")
    assert report["model"]["time_distributed_merged"] == ["per_frame"]
    assert report["reference"]["accuracy"] > 0.9
    folder = tmp_path / "out" / "frames"
    onnx_fp32 = json.loads((folder / "onnx" / "frames_fp32.json").read_text())["op_counts"]
    assert onnx_fp32.get("MatMul", 0) + onnx_fp32.get("Gemm", 0) <= 2, onnx_fp32
    sizes = {path.name: path.stat().st_size for path in (folder / "onnx").glob("*.onnx")}
    assert sizes["frames_int8.onnx"] < sizes["frames_fp32.onnx"], sizes
    for target in ("tflite", "onnx"):
        fp32 = by_variant(report, target)["fp32"]["metrics"]
        assert fp32["top1_agreement"] == 1.0 and fp32["max_abs_error"] < 1e-4
        assert by_variant(report, target)["int8"]["metrics"]["accuracy"] > 0.85
