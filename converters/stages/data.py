"""Stage ``data``: discover the images, split them (seeded) and store them at the model's size.

Stored as uint8 pixels; consumers apply the configured preprocessing, so the arrays are a
quarter of the float size and ``infer`` uses the very same preprocessing function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from converters import console, dataset, preprocessing_choice
from converters.config import Preprocessing
from converters.errors import DatasetError
from converters.fsutil import read_json, write_json_atomic
from converters.stages import export
from converters.stages.base import StageContext

CALIBRATION = "data/calibration.npy"
VALIDATION = "data/validation.npy"
VALIDATION_LABELS = "data/validation_labels.npy"
DATASET_INFO = "data/dataset.json"
OUTPUTS = (CALIBRATION, VALIDATION, VALIDATION_LABELS, DATASET_INFO)
# Images per call when scoring preprocessing candidates: activations of a batch of 32 at 224x224
# held +400 MiB more than batches of 8, which the stage process never gives back
# (benchmarks/memory_notes.md).
SCORING_BATCH = 8


def run(context: StageContext) -> None:
    params = context.params
    shape = export.input_shape(context.build_dir)
    listing = dataset.discover(context.dataset_dir)
    if not params["allow_class_mismatch"]:
        check_class_count(listing, context)
    chosen = dataset.split(listing.entries, params["calibration_size"],
                           params["validation_size"], params["seed"])
    calibration, calibration_labels, unreadable_calibration = dataset.load_images(
        chosen.calibration, shape, "loading calibration images")
    validation, labels, unreadable_validation = dataset.load_images(
        chosen.validation, shape, "loading validation images")
    if len(calibration) == 0 or len(validation) == 0:
        raise DatasetError(
            f"no usable image in {context.dataset_dir}: every image in the "
            f"{'calibration' if len(calibration) == 0 else 'validation'} split was unreadable"
        )
    choice = decide_preprocessing(context, calibration,
                                  calibration_labels if listing.class_names else None)
    console.info(f"preprocessing {choice.preprocessing.mode.value}: {choice.reason}")
    if choice.warning:
        console.warn(choice.warning)
    for relative, array in ((CALIBRATION, calibration), (VALIDATION, validation),
                            (VALIDATION_LABELS, labels)):
        np.save(context.write(relative), array, allow_pickle=False)

    def relative_names(entries: tuple[dataset.ImageEntry, ...], unreadable: list[str]) -> list[str]:
        return [e.path.relative_to(context.dataset_dir).as_posix() for e in entries
                if str(e.path) not in unreadable]

    info: dict[str, Any] = {
        "path": str(context.dataset_dir),
        "class_names": list(listing.class_names),
        "labelled": bool(listing.class_names),
        "images_found": len(listing.entries),
        "skipped_files": listing.skipped_files,
        "unreadable": sorted(unreadable_calibration + unreadable_validation),
        "input_shape": list(shape),
        "preprocessing": choice.preprocessing.as_dict(),
        "preprocessing_choice": choice.as_dict(),
        "seed": params["seed"],
        "calibration": {"count": int(len(calibration)),
                        "files": relative_names(chosen.calibration, unreadable_calibration)},
        "validation": {"count": int(len(validation)),
                       "files": relative_names(chosen.validation, unreadable_validation)},
    }
    write_json_atomic(context.write(DATASET_INFO), info)


def decide_preprocessing(context: StageContext, calibration: np.ndarray,
                         labels: np.ndarray | None) -> preprocessing_choice.Choice:
    """Resolve ``auto`` (or check an explicit choice) from the model's input layer and, with
    labels and a classifier's output, Keras accuracy under each candidate."""
    requested = Preprocessing.from_dict(context.params["preprocessing"])
    model_info = read_json(context.build_dir / export.MODEL_INFO)
    scores = None
    subset = slice(0, preprocessing_choice.SUBSET)
    if labels is not None and len(model_info["output_shape"]) == 2:
        predict = saved_model_predict(context.build_dir / export.SAVED_MODEL)
        scores = preprocessing_choice.score(predict, calibration[subset], labels[subset],
                                            preprocessing_choice.candidates(requested))
    return preprocessing_choice.choose(requested, model_info.get("input_preprocessing"), scores,
                                       len(calibration[subset]))


def saved_model_predict(path: Path) -> preprocessing_choice.Predict:
    """Batched float32 outputs of the exported SavedModel's serving signature."""
    import tensorflow as tf

    signature = tf.saved_model.load(str(path)).signatures["serving_default"]
    [input_name] = signature.structured_input_signature[1]

    def predict(inputs: np.ndarray) -> np.ndarray:
        batches = [next(iter(signature(**{input_name: tf.constant(inputs[i:i + SCORING_BATCH])}
                                       ).values()))
                   for i in range(0, len(inputs), SCORING_BATCH)]
        return np.concatenate([np.asarray(b, dtype=np.float32) for b in batches])

    return predict


def check_class_count(listing: dataset.Listing, context: StageContext) -> None:
    """A labelled dataset must have one class folder per model output class."""
    output_shape = read_json(context.build_dir / export.MODEL_INFO)["output_shape"]
    if not listing.class_names or len(output_shape) != 2 or output_shape[-1] is None:
        return
    classes, folders = int(output_shape[-1]), len(listing.class_names)
    if classes != folders:
        shown = ", ".join(listing.class_names[:6]) + (", …" if folders > 6 else "")
        raise DatasetError(
            f"dataset {context.dataset_dir} has {folders} class folders ({shown}) but model "
            f"{context.model_path} has {classes} output classes: accuracy would compare unrelated "
            "classes. Pass --dataset with one sub-folder per model class (sorted names in the "
            "model's output order), or --allow-class-mismatch if you know better")


def load_split(build_dir: Path, relative: str) -> np.ndarray:
    """Preprocessed float32 inputs of one split."""
    info = read_json(build_dir / DATASET_INFO)
    pixels = np.load(build_dir / relative, allow_pickle=False)
    return dataset.preprocess(pixels, Preprocessing.from_dict(info["preprocessing"]))


def load_labels(build_dir: Path) -> np.ndarray | None:
    info = read_json(build_dir / DATASET_INFO)
    if not info["labelled"]:
        return None
    labels: np.ndarray = np.load(build_dir / VALIDATION_LABELS, allow_pickle=False)
    return labels
