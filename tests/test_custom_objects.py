"""--custom-objects: a model with the user's own registered layer, trained a few epochs, fails to
load with Keras' reason without the file and converts and validates with it; bad files are
refused by name."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from converters.errors import ConfigError, ModelError
from converters.inputs import custom_objects
from converters.inputs.model import load
from tests.conftest import run_invoke

LAYER_SOURCE = '''
import keras


@keras.saving.register_keras_serializable(package="tests")
class AttentionWeightedAverage(keras.layers.Layer):
    """Softmax attention over the time axis, then the weighted average of the steps."""

    def build(self, input_shape):
        self.score = self.add_weight(shape=(input_shape[-1], 1), name="score")

    def call(self, steps):
        weights = keras.ops.softmax(keras.ops.matmul(steps, self.score), axis=1)
        return keras.ops.sum(weights * steps, axis=1)
'''
STEPS, FEATURES = 12, 4


def samples(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sequences whose class is the feature with the largest mean over the steps (3 classes)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    sequences = rng.normal(0, 1, (count, STEPS, FEATURES)).astype(np.float32)
    sequences[np.arange(count), :, labels] += 1.5
    return sequences, labels


@pytest.fixture(scope="module")
def attention(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, float]:
    """The layer file, a model using it trained a few epochs, its .npz data and Keras' accuracy."""
    import keras

    root = tmp_path_factory.mktemp("attention")
    layer_file = root / "attention_layers.py"
    layer_file.write_text(LAYER_SOURCE)
    spec = importlib.util.spec_from_file_location("attention_layers", layer_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((STEPS, FEATURES), name="sequence")
    steps = keras.layers.Dense(8, activation="tanh")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="label")(
        module.AttentionWeightedAverage()(steps))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit(*samples(256, seed=0), epochs=8, batch_size=32, verbose=0)
    test, labels = samples(96, seed=1)
    accuracy = float(np.mean(model.predict(test, verbose=0).argmax(-1) == labels))
    model.save(root / "attention.keras")
    np.savez(root / "sequences.npz", sequence=test, labels=labels)
    return root / "attention.keras", root / "sequences.npz", layer_file, accuracy


def convert(model: Path, data: Path, out: Path, *extra: str) -> Any:
    return run_invoke("convert", "--model", str(model), "--dataset", str(data), "--out", str(out),
                      "--runner", "local", "--quant", "fp32,int8", "--io-dtype", "float32",
                      "--calibration-size", "32", "--validation-size", "64",
                      "--latency-runs", "2", "--threads", "1", *extra)


def test_a_custom_layer_needs_its_file_and_then_converts(
        attention: tuple[Path, Path, Path, float], tmp_path: Path) -> None:
    model, data, layer_file, keras_accuracy = attention
    assert keras_accuracy > 0.85  # the model has learnt its task
    refused = convert(model, data, tmp_path / "without")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "Could not locate class 'AttentionWeightedAverage'" in refused.stderr
    assert "--custom-objects" in refused.stderr
    built = convert(model, data, tmp_path / "with", "--custom-objects", str(layer_file))
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    report = json.loads((tmp_path / "with" / "attention" / "report.json").read_text())
    artifacts = {a["variant"]: a for a in report["artifacts"] if a["target"] == "tflite"}
    assert report["reference"]["accuracy"] == pytest.approx(keras_accuracy, abs=0.02)
    assert artifacts["fp32"]["metrics"]["max_abs_error"] < 1e-5
    assert artifacts["int8"]["metrics"]["top1_agreement"] > 0.9
    assert artifacts["int8"]["accuracy_drop"] < 0.05


def test_a_dict_of_custom_objects_is_passed_to_keras(attention: tuple[Path, Path, Path, float],
                                                     tmp_path: Path) -> None:
    model, _, _, _ = attention
    # The class under the name the model file uses, not registered: only the dict finds it.
    unregistered = LAYER_SOURCE.replace('@keras.saving.register_keras_serializable(package="tests")',
                                        "")
    source = unregistered + '\ncustom_objects = {"tests>AttentionWeightedAverage": ' \
                            'AttentionWeightedAverage}\n'
    layer_file = tmp_path / "by_dict.py"
    layer_file.write_text(source)
    loaded = load(model, custom_objects=custom_objects.read([str(layer_file)]))
    sequences, _ = samples(4, seed=2)
    assert loaded.predict({"sequence": sequences})["label"].shape == (4, 3)


@pytest.mark.parametrize(("content", "name", "expected"), [
    (None, "missing.py", "found nothing there"),
    ("def broken(:\n", "broken.py", "is not valid Python: invalid syntax (line 1)"),
    ("x = 1\n", "layers.txt", "expected a Python file named like a module"),
])
def test_a_file_that_cannot_be_read_is_refused_by_name(content: str | None, name: str,
                                                       expected: str, tmp_path: Path) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match="--custom-objects") as refused:
        custom_objects.read([str(path)])
    assert str(path) in str(refused.value) and expected in str(refused.value)


def test_a_file_that_raises_is_named_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "raising.py"
    path.write_text("import math\n\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(ModelError) as failed:
        custom_objects.imported(custom_objects.read([str(path)]))
    assert (f"--custom-objects {path} failed while being imported (line 3): RuntimeError: "
            "no GPU here") in str(failed.value)
    assert "raising" not in sys.modules


def test_two_files_with_one_module_name_are_refused(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "layers.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="several files named layers.py"):
        custom_objects.read([str(tmp_path / "a" / "layers.py"), str(tmp_path / "b" / "layers.py")])


def test_a_bad_file_fails_the_command_without_a_traceback(attention: tuple[Path, Path, Path, float],
                                                          tmp_path: Path) -> None:
    model, data, _, _ = attention
    path = tmp_path / "raising_layers.py"
    path.write_text("raise ImportError('needs a package that is not installed')\n")
    result = convert(model, data, tmp_path / "out", "--custom-objects", str(path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"--custom-objects {path} failed while being imported (line 1)" in result.stderr
