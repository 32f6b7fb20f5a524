"""The bundled sample: procedurally drawn shape images and a small trained Conv2D + Dense model.

Deterministic: images come from seeded numpy generators, training uses Keras' global seed and
TensorFlow's op determinism. The model is trained on images that are *not* shipped (seed 1);
dataset/ holds a separate held-out set (seed 2), so accuracy in the report is honest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from converters import console
from converters.errors import ConfigError
from converters.fsutil import atomic_path

if TYPE_CHECKING:  # settings read the sample's paths: numpy loads when images are drawn
    import numpy as np

# The bundled sample in a checkout: model/sample.h5 and dataset/ beside this package.
CHECKOUT = Path(__file__).resolve().parents[2]
SAMPLE_MODEL = CHECKOUT / "model" / "sample.h5"
SAMPLE_DATASET = CHECKOUT / "dataset"
CLASSES = ("circle", "square", "stripes", "triangle")  # sorted: folder order = class index
IMAGE_SIZE = 32
TRAIN_SEED = 1
DATASET_SEED = 2
MAX_PER_CLASS = 10_000  # held-out images per class: 40,000 PNGs at most


def draw(kind: str, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """One RGB uint8 image of ``kind`` with random colours, placement and noise."""
    import numpy as np

    background = rng.integers(0, 256, 3)
    foreground = (background + rng.integers(80, 176, 3)) % 256
    image = np.empty((size, size, 3), np.float64)
    image[:] = background
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    centre_y, centre_x = rng.uniform(size * 0.35, size * 0.65, 2)
    radius = rng.uniform(size * 0.18, size * 0.32)
    if kind == "circle":
        mask = (yy - centre_y) ** 2 + (xx - centre_x) ** 2 <= radius**2
    elif kind == "square":
        mask = (np.abs(yy - centre_y) <= radius * 0.85) & (np.abs(xx - centre_x) <= radius * 0.85)
    elif kind == "triangle":
        top = centre_y - radius
        height = 2 * radius
        half_width = (yy - top) / height * radius
        mask = (yy >= top) & (yy <= top + height) & (np.abs(xx - centre_x) <= half_width)
    elif kind == "stripes":
        period = rng.uniform(5, 9)
        angle = rng.uniform(0, np.pi)
        phase = xx * np.cos(angle) + yy * np.sin(angle)
        mask = (phase % period) < period / 2
    else:
        raise ValueError(f"unknown sample class {kind}")
    image[mask] = foreground
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def generate(count_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(count_per_class):
        for label, kind in enumerate(CLASSES):
            images.append(draw(kind, rng))
            labels.append(label)
    return np.stack(images), np.asarray(labels)


# What write_dataset writes, relative to its folder: the only files the sample may replace.
SAMPLE_FILE = re.compile(rf"^({'|'.join(CLASSES)})/\d{{4}}\.png$")


def sample_file_name(label: int, index: int) -> str:
    return f"{CLASSES[label]}/{index:04d}.png"


def check_request(model: Path, per_class: int, force: bool) -> None:
    """Refuse an ``invoke sample`` that would make no images, or overwrite a model the sample
    did not write: an existing ``model`` is replaced only with ``force``, or when it is this
    checkout's own bundled ``model/sample.h5`` (what ``invoke sample`` regenerates)."""
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise ConfigError(f"--per-class must be between 1 and {MAX_PER_CLASS} (held-out images "
                          f"per class), got {per_class}")
    exists = model.exists() or model.is_symlink()
    if exists and not force and model.resolve() != SAMPLE_MODEL:
        raise ConfigError(f"{model} already exists: refusing to overwrite it with the sample "
                          "model. Pass another --model-dir, or --force to replace it")


def clear_for_dataset(root: Path, force: bool) -> None:
    """Make ``root`` ready for :func:`write_dataset` without deleting anything not the sample's.

    A folder holding only the sample's own files is cleared of them (a regenerated sample is
    exactly the new one). A folder holding anything else is refused, or with ``force`` kept:
    then only the files the sample writes are overwritten.
    """
    if not root.exists():
        return
    if not root.is_dir() or root.is_symlink():
        raise ConfigError(f"--dataset {root} is not a folder: pass a new or empty folder")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir())
    foreign = [name for name in files if not SAMPLE_FILE.match(name)]
    if foreign and not force:
        raise ConfigError(
            f"--dataset {root} holds {len(foreign)} file(s) the sample did not write (first: "
            f"{foreign[0]}): refusing to write the sample there. Pass a new or empty folder, or "
            "--force to write the sample's files beside them (nothing else is touched)")
    if not foreign:
        for name in files:
            (root / name).unlink()


def write_dataset(root: Path, count_per_class: int = 80, seed: int = DATASET_SEED) -> int:
    """Write PNGs into ``root/<class>/NNNN.png``; return how many."""
    from PIL import Image

    images, labels = generate(count_per_class, seed)
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = root / sample_file_name(int(label), index)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as temporary:
            Image.fromarray(image).save(temporary, format="PNG", optimize=False)
    return len(images)


def build_model(width: float = 1.0) -> object:
    """The sample's architecture; ``width`` scales every layer's units (benchmarks' matrices)."""
    import keras

    def units(count: int) -> int:
        return max(1, round(count * width))

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = keras.layers.Conv2D(units(16), 3, activation="relu", padding="same")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(units(32), 3, activation="relu", padding="same")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(units(64), activation="relu")(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="sample_shapes")


def train_model(path: Path, count_per_class: int = 400, epochs: int = 8) -> float:
    """Train the sample model on fresh (unshipped) images; save it as .h5; return train accuracy."""
    import keras
    import numpy as np
    import tensorflow as tf

    keras.utils.set_random_seed(TRAIN_SEED)
    tf.config.experimental.enable_op_determinism()
    images, labels = generate(count_per_class, TRAIN_SEED)
    model = build_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),  # type: ignore[attr-defined]
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(images.astype(np.float32) / 255.0, labels, epochs=epochs,  # type: ignore[attr-defined]
                        batch_size=32, shuffle=True, verbose=0)
    accuracy = float(history.history["accuracy"][-1])
    with atomic_path(path) as temporary:
        model.save(temporary.with_suffix(".h5"))  # type: ignore[attr-defined]
        temporary.with_suffix(".h5").rename(temporary)
    console.info(f"trained {path} (training accuracy {accuracy:.3f})")
    return accuracy


def default_models(model_dir: Path) -> list[Path]:
    """Every model file (.h5, .keras) and SavedModel folder in ``model_dir``."""
    from converters.config import MODEL_SUFFIXES

    if not model_dir.is_dir():
        raise ConfigError(f"model folder {model_dir} does not exist: pass --model PATH")
    found = sorted(p for p in model_dir.iterdir()
                   if (p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)
                   or (p.is_dir() and (p / "saved_model.pb").exists()))
    if not found:
        raise ConfigError(
            f"no model in {model_dir}: put name.h5 (or .keras, or a SavedModel folder) there, "
            "pass --model PATH, or run invoke sample"
        )
    return found


def paired_with_sample(models: list[Path], dataset: Path, listed: bool,
                       dataset_given: bool) -> list[Path]:
    """The bundled sample model goes with the bundled images, and only with them.

    A model found in model/ (not ``listed``) is skipped when it is the sample and ``dataset``
    is not the sample's; any other model on the bundled images without ``--dataset`` is an
    error (it would be calibrated and validated on shapes it was never trained for).
    """
    on_sample_images = dataset.resolve() == SAMPLE_DATASET
    if not listed and not on_sample_images:
        kept = [m for m in models if m.resolve() != SAMPLE_MODEL]
        if len(kept) < len(models):
            console.info(f"skipping the bundled sample {SAMPLE_MODEL.name}: it goes with the "
                         f"bundled images, not {dataset} (pass --model to convert it anyway)")
        if not kept:
            raise ConfigError(f"no model to convert against {dataset}: put yours in model/ or "
                              "pass --model PATH")
        models = kept
    others = [m for m in models if m.resolve() != SAMPLE_MODEL]
    if on_sample_images and not dataset_given and others:
        raise ConfigError(
            f"no --dataset given for {others[0]}: the default dataset/ holds the bundled sample's "
            "shape images, which only fit model/sample.h5. Pass --dataset DIR with your own images "
            "(one sub-folder per class, for accuracy), or --dataset dataset to use the sample "
            "images anyway")
    return models
