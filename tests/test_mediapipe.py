"""The real-client check: every TFLite artifact through MediaPipe Tasks' ImageClassifier, and a
segmenter's through its ImageSegmenter (for real; skipped saying so without mediapipe, a failure
under REQUIRE_MEDIAPIPE=1)."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from converters.config import DatasetConfig, Preprocessing, PreprocessingMode, Quantization
from converters.fsutil import read_json
from converters.pipeline import build
from converters.targets.tflite import mediapipe_check
from converters.validation.side_by_side import run_side_by_side
from tests.conftest import ROOT, make_config, tiny_model

MODES = ("fp32", "fp16", "dynamic", "int8", "int8-mixed")


def require_mediapipe() -> None:
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        reason = "mediapipe is not installed (pip install '.[mediapipe]')"
        if os.environ.get("REQUIRE_MEDIAPIPE") == "1":
            pytest.fail(f"REQUIRE_MEDIAPIPE=1 but {reason}")
        pytest.skip(reason)


def test_every_artifact_classifies_in_mediapipe_with_names(tiny_h5: Path, tiny_dataset: Path,
                                                           tmp_path: Path) -> None:
    """Two validation threads: each check shares the images out between two classifiers."""
    require_mediapipe()
    config = make_config(tiny_h5, tiny_dataset, tmp_path, targets=("tflite",),
                         quantizations=tuple(Quantization(mode) for mode in MODES), threads=2)
    build.convert(config, ["test"])
    folder = tmp_path / "tiny"
    report = read_json(folder / "report.json")
    checked = {a["variant"]: a for a in report["artifacts"]}
    assert set(checked) == set(MODES)
    for mode, artifact in checked.items():
        entry = artifact["mediapipe"]
        assert entry["ran"] is True, (mode, entry)
        assert entry["samples"] == 12 and entry["source"] == "image files"
        assert entry["names_returned"] is True, mode
        assert artifact["metadata"]["written_for"] == "MediaPipe ImageClassifier"
        assert entry["agrees_with_litert"] is True, (mode, entry)
        assert abs(entry["top1_agreement"] - artifact["metrics"]["top1_agreement"]) <= 0.01
        assert entry["accuracy"] == pytest.approx(artifact["metrics"]["accuracy"], abs=0.01)
        assert read_json(folder / "validation" / f"tflite_{mode}.json")["mediapipe"] == entry
    assert "MediaPipe ImageClassifier (real client): fp32 top-1 agreement" in \
        (folder / "report.md").read_text()
    names = read_json(folder / "data" / "dataset.json")["validation"]["files"]
    _assert_side_by_side_gives_what_one_gives(folder / "tflite" / "tiny_fp32.tflite",
                                              [tiny_dataset / name for name in names])


def _assert_side_by_side_gives_what_one_gives(artifact: Path, files: list[Path]) -> None:
    """Every image gets from classifiers side by side the category and score one classifier
    alone gives it, in the images' order."""
    import time

    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    images = [mp.Image.create_from_file(str(path)) for path in files]
    options = vision.ImageClassifierOptions(
        base_options=BaseOptions(model_asset_path=str(artifact)), max_results=1)
    with vision.ImageClassifier.create_from_options(options) as alone:
        expected = [(top.index, top.score) for top in
                    (mediapipe_check._top(alone, image) for image in images)]
    assert len({score for _, score in expected}) > 1  # the comparison tells the images apart
    classifiers = [vision.ImageClassifier.create_from_options(options) for _ in range(3)]
    used: set[int] = set()

    def classify(classifier: object, image: object) -> tuple[int, float]:
        used.add(id(classifier))
        time.sleep(0.01)  # each classifier stays busy long enough for the others to start
        top = mediapipe_check._top(classifier, image)
        return top.index, top.score

    try:
        side_by_side = run_side_by_side(classifiers, images, classify, "test")
    finally:
        for classifier in classifiers:
            classifier.close()
    assert side_by_side == expected
    assert len(used) == 3


MEAN, STD = (120.0, 110.0, 100.0), (60.0, 50.0, 40.0)


def _images(dataset: Path) -> tuple[np.ndarray, np.ndarray]:
    """Every image of the class folders as float pixels 0..255, and its class index."""
    from PIL import Image

    folders = sorted(p for p in dataset.iterdir() if p.is_dir())
    images, labels = [], []
    for label, folder in enumerate(folders):
        for image in sorted(folder.glob("*.png")):
            images.append(np.asarray(Image.open(image).convert("RGB"), np.float32))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


def _trained_on_normalized_images(dataset: Path, path: Path) -> Path:
    """The tiny classifier trained a few epochs on the dataset's images normalized per channel."""
    images, labels = _images(dataset)
    normalized = (images - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    model = tiny_model()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])  # type: ignore[attr-defined]
    model.fit(normalized, labels, epochs=30, verbose=0)  # type: ignore[attr-defined]
    model.save(path)  # type: ignore[attr-defined]
    return path


def test_per_channel_normalization_is_folded_and_runs_in_mediapipe(tiny_dataset: Path,
                                                                    tmp_path: Path) -> None:
    """MediaPipe takes one mean/std for every channel: a per-channel --mean/--std goes into the
    model, whose artifacts take pixels (metadata mean 0, std 1), and MediaPipe runs every one."""
    import onnx

    require_mediapipe()
    model = _trained_on_normalized_images(tiny_dataset, tmp_path / "normalized.keras")
    config = make_config(model, tiny_dataset, tmp_path / "out", targets=("tflite", "onnx"),
                         quantizations=(Quantization.FP32, Quantization.INT8))
    config = dataclasses.replace(config, dataset=DatasetConfig(
        tiny_dataset, preprocessing=Preprocessing(PreprocessingMode.MEAN_STD, MEAN, STD),
        calibration_size=8, validation_size=12))
    build.convert(config, ["test"])
    folder = tmp_path / "out" / "normalized"
    fold = read_json(folder / "export" / "model.json")["folded_normalization"]
    assert fold["mean"] == list(MEAN) and fold["std"] == list(STD)
    assert fold["max_abs_difference"] < 1e-5
    dataset = read_json(folder / "data" / "dataset.json")
    assert dataset["preprocessing"]["mode"] == "0..255"
    assert "folded into the model" in dataset["preprocessing_choice"]["reason"]
    report = read_json(folder / "report.json")
    assert report["reference"]["accuracy"] >= 0.9  # trained: the numbers mean something
    tflite = [a for a in report["artifacts"] if a["target"] == "tflite"]
    assert {a["variant"] for a in tflite} == {"fp32", "int8"}
    for artifact in tflite:
        assert artifact["metadata"]["normalization"] in (None, {"mean": [0.0], "std": [1.0]})
        entry = artifact["mediapipe"]
        assert entry["ran"] is True and entry["names_returned"] is True, entry
        assert abs(entry["top1_agreement"] - artifact["metrics"]["top1_agreement"]) <= 0.01
        assert artifact["metrics"]["accuracy"] >= report["reference"]["accuracy"] - 0.1
    props = {p.key: p.value for p in onnx.load(str(folder / "onnx" / "normalized_fp32.onnx"))
             .metadata_props}
    described = json.loads(props["preprocessing"])
    assert (described["mean"], described["std"]) == ([0.0], [1.0])


def test_a_model_with_its_own_rescaling_layer_runs_in_mediapipe(tiny_dataset: Path,
                                                                 tmp_path: Path) -> None:
    """A model that scales pixels itself (a leading Rescaling layer) takes pixels: its
    metadata says mean 0 / std 1 and MediaPipe agrees with LiteRT."""
    import keras

    require_mediapipe()
    images, labels = _images(tiny_dataset)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(x))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(images, labels, epochs=40, verbose=0)
    model.save(tmp_path / "rescaling.keras")
    config = make_config(tmp_path / "rescaling.keras", tiny_dataset, tmp_path / "out",
                         targets=("tflite",), quantizations=(Quantization.FP32, Quantization.INT8))
    build.convert(config, ["test"])
    report = read_json(tmp_path / "out" / "rescaling" / "report.json")
    assert report["dataset"]["preprocessing"]["mode"] == "0..255"
    assert report["reference"]["accuracy"] >= 0.9
    for artifact in report["artifacts"]:
        entry = artifact["mediapipe"]
        assert entry["ran"] is True and entry["names_returned"] is True, entry
        assert abs(entry["top1_agreement"] - artifact["metrics"]["top1_agreement"]) <= 0.01
    fp32 = next(a for a in report["artifacts"] if a["variant"] == "fp32")
    assert fp32["metadata"]["normalization"] == {"mean": [0.0], "std": [1.0]}


def test_per_channel_normalization_kept_outside_is_not_checked_and_says_why(
        tiny_h5: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    preprocessing = Preprocessing(PreprocessingMode.MEAN_STD, MEAN, STD)
    config = make_config(tiny_h5, tiny_dataset, tmp_path, targets=("tflite",),
                         quantizations=(Quantization.FP32,), keep_per_channel_normalization=True)
    config = dataclasses.replace(config, dataset=DatasetConfig(
        tiny_dataset, preprocessing=preprocessing, calibration_size=8, validation_size=12))
    build.convert(config, ["test"])
    [artifact] = read_json(tmp_path / "tiny" / "report.json")["artifacts"]
    assert artifact["metadata"]["normalization"] == {"mean": [120.0, 110.0, 100.0],
                                                     "std": [60.0, 50.0, 40.0]}
    assert artifact["metadata"]["per_channel"] is True
    assert artifact["mediapipe"]["ran"] is False
    assert "per-channel mean/std" in artifact["mediapipe"]["reason"]


def test_mediapipe_loads_without_tensorflow_or_matplotlib_which_still_import_after() -> None:
    """MediaPipe Tasks imports TensorFlow, when installed, for a documentation decorator, and
    matplotlib.pyplot for landmark plots: a stage process that only validates (a rebuild after
    a LiteRT upgrade) must not pay TensorFlow's import (3 s) nor print its start-up lines, and
    no stage process pays pyplot's (0.26 s). Both import as usual afterwards."""
    require_mediapipe()
    probe = ("import sys\n"
             "from converters.targets.tflite import mediapipe_check\n"
             "BaseOptions, vision = mediapipe_check._import_tasks()\n"
             "print('tensorflow' in sys.modules, 'matplotlib' in sys.modules,\n"
             "      vision.ImageClassifier.__name__)\n"
             "import matplotlib\n"
             "matplotlib.use('Agg')\n"
             "import matplotlib.pyplot as plt\n"
             "print(type(plt.figure()).__name__)\n"
             "import tensorflow\n"
             "print(tensorflow.__name__)\n")
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"}, cwd=ROOT)
    assert ran.stdout.split() == ["False", "False", "ImageClassifier", "Figure", "tensorflow"]


def test_a_mediapipe_that_needs_matplotlib_at_import_is_imported_as_it_is() -> None:
    """Should a MediaPipe release use matplotlib while it imports (a stand-in has nothing),
    the check imports it again with matplotlib, rather than calling it not installed."""
    require_mediapipe()
    probe = ("import contextlib, sys\n"
             "from converters import imports\n"
             "plain = imports.stood_in\n"
             "@contextlib.contextmanager\n"
             "def breaking(*names):\n"
             "    with plain(*names):\n"  # and its drawing utilities fail half-way through
             "        sys.modules['mediapipe.tasks.python.vision.drawing_utils'] = None\n"
             "        try:\n"
             "            yield\n"
             "        finally:\n"
             "            del sys.modules['mediapipe.tasks.python.vision.drawing_utils']\n"
             "imports.stood_in = breaking\n"
             "from converters.targets.tflite import mediapipe_check\n"
             "BaseOptions, vision = mediapipe_check._import_tasks()\n"
             "print(vision.ImageClassifier.__name__, 'matplotlib.pyplot' in sys.modules)\n")
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert ran.stdout.split() == ["ImageClassifier", "True"]


def test_without_mediapipe_the_record_says_how_to_install(tiny_h5: Path, tiny_dataset: Path,
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A mediapipe package that cannot be imported, first on the stage processes' path
    blocker = tmp_path / "blocker" / "mediapipe"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(blocker.parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    config = make_config(tiny_h5, tiny_dataset, tmp_path / "out", targets=("tflite",),
                         quantizations=(Quantization.FP32,))
    build.convert(config, ["test"])
    [artifact] = read_json(tmp_path / "out" / "tiny" / "report.json")["artifacts"]
    assert artifact["mediapipe"] == {"ran": False, "reason": mediapipe_check.NOT_INSTALLED}
    assert f"MediaPipe ImageClassifier (real client): {mediapipe_check.NOT_INSTALLED}." in \
        (tmp_path / "out" / "tiny" / "report.md").read_text()


def test_a_missing_system_library_is_a_reason_not_a_failed_build(
        tiny_h5: Path, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MediaPipe links system libraries (OpenCV's X11/GL, EGL when its runtime starts) that a
    slim host may lack: the check says which and how to get it; validation still passes."""
    blocker = tmp_path / "blocker" / "mediapipe"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise OSError('libEGL.so.1: cannot open shared object file: No such file or directory')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(blocker.parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    config = make_config(tiny_h5, tiny_dataset, tmp_path / "out", targets=("tflite",),
                         quantizations=(Quantization.FP32,))
    assert not build.convert(config, ["test"]).problems
    [artifact] = read_json(tmp_path / "out" / "tiny" / "report.json")["artifacts"]
    assert artifact["mediapipe"]["ran"] is False and not artifact.get("failed")
    reason = artifact["mediapipe"]["reason"]
    assert reason.startswith("not run: MediaPipe's runtime cannot start on this machine")
    assert "libEGL.so.1" in reason and "libegl1" in reason


def _segmentation_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """32×32 RGB images: a dark background, a red and a blue rectangle (classes 0, 1, 2)."""
    from tests.multi_io_models import rectangle_maps

    labels = rectangle_maps(count, 32, seed)
    colours = np.array([[30, 30, 30], [200, 40, 40], [40, 40, 200]], np.float32)
    noise = np.random.default_rng(seed + 1000).normal(0, 10, (*labels.shape, 3))
    noisy = colours[labels] + noise
    return np.clip(noisy, 0, 255).astype(np.uint8), labels


def test_a_segmenter_loads_in_mediapipe_image_segmenter_with_its_labels(tmp_path: Path) -> None:
    """A segmenter trained 8 epochs, its images in a folder and its class names from --labels:
    each TFLite artifact is written for MediaPipe's ImageSegmenter, which loads it with no extra
    arguments, returns the labels, and gives category masks that agree with LiteRT's."""
    require_mediapipe()
    import keras
    import mediapipe as mp
    from ai_edge_litert.interpreter import Interpreter
    from mediapipe.tasks.python import BaseOptions, vision
    from PIL import Image

    from tests.conftest import run_invoke

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="softmax", name="mask")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    images, labels = _segmentation_images(600, seed=0)
    history = model.fit(images.astype(np.float32), labels, epochs=8, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > 0.95
    model.save(tmp_path / "segmenter.keras")
    folder = tmp_path / "images"
    folder.mkdir()
    for index, image in enumerate(_segmentation_images(20, seed=1)[0]):
        Image.fromarray(image).save(folder / f"{index:03d}.png")
    (tmp_path / "labels.txt").write_text("background\nred\nblue\n")
    out = tmp_path / "out"
    result = run_invoke("convert", "--model", str(tmp_path / "segmenter.keras"), "--dataset",
                        str(folder), "--labels", str(tmp_path / "labels.txt"), "--out", str(out),
                        "--quant", "fp32,int8", "--runner", "local", "--threads", "1",
                        "--latency-runs", "2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = read_json(out / "segmenter" / "report.json")
    for variant in ("fp32", "int8"):
        [artifact] = [a for a in report["artifacts"] if a["variant"] == variant]
        assert artifact["metadata"]["written_for"] == "MediaPipe ImageSegmenter"
        assert artifact["metadata"]["labels"] == 3
        path = out / "segmenter" / artifact["path"]
        options = vision.ImageSegmenterOptions(base_options=BaseOptions(model_asset_path=str(path)),
                                               output_category_mask=True)
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        [detail], [output] = interpreter.get_input_details(), interpreter.get_output_details()
        agreement = []
        with vision.ImageSegmenter.create_from_options(options) as segmenter:
            assert segmenter.labels == ["background", "red", "blue"]
            for file in sorted(folder.iterdir()):
                mask = segmenter.segment(mp.Image.create_from_file(str(file))).category_mask
                pixels = np.asarray(Image.open(file))[None]
                interpreter.set_tensor(detail["index"], pixels.astype(detail["dtype"]))
                interpreter.invoke()
                litert = interpreter.get_tensor(output["index"])[0].argmax(-1)
                agreement.append(np.mean(mask.numpy_view().reshape(litert.shape) == litert))
        assert np.mean(agreement) > 0.98, (variant, np.mean(agreement))

