"""Shared fixtures: tiny real Keras models and image folders, and the real invoke command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def run_invoke(*args: str, cwd: Path = ROOT, timeout: float = 600, check: bool = False,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``invoke ARGS`` as a user would (tasks.py from the repository root); ``env`` adds
    to or overrides the environment (output is 200 columns wide unless COLUMNS is given)."""
    command = [sys.executable, "-m", "invoke", "--search-root", str(ROOT), *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"invoke {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


# What TensorFlow's, LiteRT's and the converters' own code print that is not the user's to act
# on: no build shows any of it.
INFO_NOISE = ("oneDNN custom operations", "absl::InitializeLog", "XNNPACK delegate",
              "fully_quantize", "tf.lite.Interpreter is deprecated",
              "convert_variables_to_constants", "is deprecated and will be removed",
              "experimental_preserve_all_tensors")


def terminal_ctrl_c() -> None:
    """preexec_fn for a build a test presses Ctrl-C on: SIGINT as a terminal user has it. A shell
    that starts a command in the background (``cmd &``) makes it ignore SIGINT, and every process
    it starts inherits that, so a test run started that way would press a dead key."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def skip_or_fail(reason: str) -> None:
    """A docker-marked test without its engine or image: skip saying why, or fail under
    REQUIRE_DOCKER=1 (set by CI)."""
    if os.environ.get("REQUIRE_DOCKER") == "1":
        pytest.fail(f"REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


def write_images(root: Path, classes: dict[str, int], size: int = 16, seed: int = 0) -> None:
    """Class folders of PNG images; each class has its own mean colour so models can tell them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for label, (name, count) in enumerate(classes.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            base = np.full((size, size, 3), 40 + 80 * label, np.float64)
            pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{index:03d}.png")


def tiny_model(size: int = 16, classes: int = 3, seed: int = 0) -> object:
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)  # enough weights for fp16/int8 to be visibly smaller
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    write_images(root, {"a": 8, "b": 8, "c": 8})
    return root


@pytest.fixture(scope="session")
def tiny_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.h5"
    tiny_model().save(path)  # type: ignore[attr-defined]
    return path


@pytest.fixture(scope="session")
def tiny_keras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_model().save(path)  # type: ignore[attr-defined]
    return path


def quick_flags(dataset: Path, out: Path) -> list[str]:
    """Flags that keep a test build small: few images, few latency runs, one thread, and the
    local runner (tests of the docker runner say so)."""
    return ["--dataset", str(dataset), "--out", str(out), "--calibration-size", "8",
            "--validation-size", "12", "--latency-runs", "3", "--threads", "1", "--runner", "local"]


def make_config(model: Path | list[Path], dataset: Path, out: Path, **overrides: object) -> object:
    """A small ConvertConfig (few images, few latency runs) for API-level builds."""
    from converters.config import ConvertConfig, DatasetConfig

    models = tuple(model) if isinstance(model, list) else (model,)
    settings: dict[str, object] = {"threads": 1, "latency_runs": 3, "out": out}
    settings.update(overrides)
    return ConvertConfig(models=models,
                         dataset=DatasetConfig(dataset, calibration_size=8, validation_size=12),
                         **settings)  # type: ignore[arg-type]


def save_function_model(directory: Path, function: object, size: int = 8) -> Path:
    """A SavedModel whose serving signature applies ``function`` then averages over H and W."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, size, size, 3), tf.float32)
    graph = tf.function(lambda x: tf.reduce_mean(function(x), axis=[1, 2]),  # type: ignore[operator]
                        input_signature=[spec])
    module = tf.Module()
    module.graph = graph
    tf.saved_model.save(module, str(directory),
                        signatures={"serving_default": graph.get_concrete_function()})
    return directory
