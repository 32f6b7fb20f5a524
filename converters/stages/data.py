"""Stage ``data``: read the dataset (an image folder, or arrays), split it (seeded) and store
one array per model input for each split.

Image folders are stored as uint8 pixels at the model's size; consumers apply the configured
preprocessing, so the arrays are a quarter of the float size and ``infer`` uses the very same
preprocessing function. Array datasets (:mod:`converters.inputs.arrays`) are stored as given.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from converters import console
from converters.config import Preprocessing
from converters.errors import DatasetError, ModelError
from converters.fsutil import file_identity, read_json, write_json_atomic
from converters.inputs import arrays, dataset, imaging, preprocessing_choice
from converters.inputs.array_files import listed
from converters.inputs.host_memory import available_memory, check_fits
from converters.inputs.model import Arrays, TensorInfo
from converters.stages import export
from converters.stages.base import StageContext
from converters.stages.data_params import (
    ARRAYS,
    CALIBRATION,
    DATASET_INFO,
    IMAGES,
    VALIDATION,
    VALIDATION_LABELS,
    DataParams,
)
from converters.validation import metrics

# Images per call when scoring preprocessing candidates: activations of a batch of 32 at 224x224
# held +400 MiB more than batches of 8, which the stage process never gives back
# (benchmarks/memory_notes.md).
SCORING_BATCH = 8


def run(context: StageContext) -> None:
    inputs = export.model_inputs(context.build_dir)
    check_split_memory(context)
    if arrays.is_array_dataset(context.dataset_dir):
        info = store_arrays(context, inputs)
    else:
        info = store_images(context, inputs)
    write_json_atomic(context.write(DATASET_INFO), {
        "inputs": [{**tensor.as_dict(), "source": info["kind"]} for tensor in inputs], **info})


def check_split_memory(context: StageContext) -> None:
    """Refuse, before reading anything, splits whose arrays cannot fit in memory."""
    params = DataParams.of(context)
    info = read_json(context.build_dir / export.MODEL_INFO)
    check_fits(str(context.model_path), info["sample_bytes"], info["largest_activation_bytes"],
               samples=params.calibration_size + params.validation_size,
               available=available_memory())


def store_arrays(context: StageContext, inputs: tuple[TensorInfo, ...]) -> dict[str, Any]:
    """Split an array dataset by sample and store both splits as they are."""
    params = DataParams.of(context)
    found = arrays.read(context.dataset_dir, inputs, params.max_array_mb)
    chosen = dataset.split(tuple(range(found.count)), params.calibration_size,
                           params.validation_size, params.seed, what="sample")

    def subset(indices: tuple[int, ...]) -> Arrays:
        return {name: array[list(indices)] for name, array in found.arrays.items()}

    save_split(context, CALIBRATION, subset(chosen.calibration))
    save_split(context, VALIDATION, subset(chosen.validation))
    labels = (found.labels[list(chosen.validation)] if found.labels is not None
              else np.zeros(0, np.int64))
    np.save(context.write(VALIDATION_LABELS), labels, allow_pickle=False)
    console.info(f"dataset {context.dataset_dir}: {found.count} samples, used as given "
                 "(no preprocessing)")
    return {
        "kind": ARRAYS,
        "path": str(context.dataset_dir),
        "class_names": class_names(context, ()),
        "labelled": found.labels is not None,
        "images_found": found.count,
        "skipped_files": 0,
        "unreadable": [],
        "input_shape": list(inputs[0].shape),
        "preprocessing": None,
        "preprocessing_choice": None,
        "seed": params.seed,
        "calibration": {"count": len(chosen.calibration),
                        "files": [found.names[i] for i in chosen.calibration]},
        "validation": {"count": len(chosen.validation),
                       "files": [found.names[i] for i in chosen.validation]},
    }


def store_images(context: StageContext, inputs: tuple[TensorInfo, ...]) -> dict[str, Any]:
    """Discover, split and load an image folder for the model's one image input."""
    params = DataParams.of(context)
    if len(inputs) != 1 or not inputs[0].is_image:
        shapes = listed(f"'{t.name}' {t.shape}" for t in inputs)
        raise DatasetError(
            f"dataset {context.dataset_dir} is an image folder, which feeds a model with one "
            f"image input (height × width × 1, 3 or 4 channels); model {context.model_path} has "
            f"the input(s) {shapes}. Pass --dataset FILE.npz with one array per input name "
            f"(first axis = samples) or a folder of .npy/.npz samples (see docs/inputs.md)")
    [image_input] = inputs
    shape = export.input_shape(context.build_dir)
    Preprocessing.from_dict(params.preprocessing).check_channels(shape[-1])  # before any image
    listing = dataset.discover(context.dataset_dir)
    if not params.allow_class_mismatch:
        check_class_count(listing, context)
    chosen = dataset.split(listing.entries, params.calibration_size,
                           params.validation_size, params.seed)
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
    if (fold := DataParams.of(context).fold_normalization) is not None:
        choice = dataclasses.replace(choice, reason=(
            f"--mean {','.join(map(str, fold['mean']))} --std {','.join(map(str, fold['std']))} "
            "differ per channel: folded into the model, whose artifacts take pixels 0..255 "
            "(--keep-per-channel-normalization keeps them outside)"))
    console.info(f"preprocessing {choice.preprocessing.mode.value}: {choice.reason}")
    if choice.warning:
        console.warn(choice.warning)
    save_split(context, CALIBRATION, {image_input.name: calibration})
    save_split(context, VALIDATION, {image_input.name: validation})
    np.save(context.write(VALIDATION_LABELS), labels, allow_pickle=False)

    def relative_names(entries: tuple[dataset.ImageEntry, ...], unreadable: list[str]) -> list[str]:
        return [e.path.relative_to(context.dataset_dir).as_posix() for e in entries
                if str(e.path) not in unreadable]

    return {
        "kind": IMAGES,
        "path": str(context.dataset_dir),
        "class_names": class_names(context, listing.class_names),
        "labelled": bool(listing.class_names),
        "images_found": len(listing.entries),
        "skipped_files": listing.skipped_files,
        "unreadable": sorted(unreadable_calibration + unreadable_validation),
        "input_shape": list(shape),
        "preprocessing": choice.preprocessing.as_dict(),
        "preprocessing_choice": choice.as_dict(),
        "seed": params.seed,
        "calibration": {"count": int(len(calibration)),
                        "files": relative_names(chosen.calibration, unreadable_calibration)},
        "validation": {"count": int(len(validation)),
                       "files": relative_names(chosen.validation, unreadable_validation)},
    }


def save_split(context: StageContext, relative: str, split: Arrays) -> None:
    """One array per input name in a .npz file."""
    with context.write(relative).open("wb") as file:
        np.savez(file, **split)  # type: ignore[arg-type]


def decide_preprocessing(context: StageContext, calibration: np.ndarray,
                         labels: np.ndarray | None) -> preprocessing_choice.Choice:
    """Resolve ``auto`` (or check an explicit choice) from the model's input layer and, with
    labels and a classifier's output, Keras accuracy under each candidate."""
    requested = Preprocessing.from_dict(DataParams.of(context).preprocessing)
    model_info = read_json(context.build_dir / export.MODEL_INFO)
    subset = slice(0, preprocessing_choice.SUBSET)
    scores = (candidate_scores(context, calibration[subset], labels[subset],
                               preprocessing_choice.candidates(requested))
              if labels is not None else None)
    return preprocessing_choice.choose(requested, model_info.get("input_preprocessing"), scores,
                                       len(calibration[subset]))


def candidate_scores(context: StageContext, pixels: np.ndarray, labels: np.ndarray,
                     options: list[Preprocessing]) -> dict[str, float] | None:
    """Keras accuracy under each candidate on the output the labels belong to (the class scores
    of a model with several outputs, as validation scores them); None when no output is a
    classifier's. The model is loaded as export loaded it (the same process keeps it)."""
    params = DataParams.of(context)
    model = params.load_model(context)
    [tensor] = model.inputs  # an image folder feeds a model with one image input

    def predict(option: Preprocessing) -> Arrays:
        inputs = imaging.normalize(pixels, option.mode.value, option.mean, option.std)
        batches = [model.predict({tensor.name: inputs[i:i + SCORING_BATCH]})
                   for i in range(0, len(inputs), SCORING_BATCH)]
        return {output.name: np.concatenate([batch[output.name] for batch in batches])
                for output in model.outputs}

    outputs = {option.mode.value: predict(option) for option in options}
    first = next(iter(outputs.values()))
    shapes = {name: tuple(values.shape[1:]) for name, values in first.items()}
    tasks = metrics.output_tasks(shapes, params.task, first, model.output_hints)
    owner = metrics.label_owner(shapes, tasks, labels)
    if owner is None or tasks[owner].task != "classification":
        return None
    return {mode: metrics.labelled_accuracy(values[owner], labels)
            for mode, values in outputs.items()}


def class_names(context: StageContext, folders: tuple[str, ...]) -> list[str]:
    """The classes' names: --labels when given (one per class folder, and as many as an output
    of the model has classes), else the class folder names."""
    labels = DataParams.of(context).labels
    if labels is None:
        return list(folders)
    if folders and len(folders) != len(labels):
        raise DatasetError(f"--labels names {len(labels)} classes but dataset {context.dataset_dir} "
                           f"has {len(folders)} class folders: give one name per class folder, "
                           "in the folders' sorted order")
    widths = [tensor["shape"][-1] for tensor in read_json(context.build_dir / export.MODEL_INFO)["outputs"]
              if tensor["shape"]]
    if len(labels) not in widths:
        raise DatasetError(f"--labels names {len(labels)} classes but no output of model "
                           f"{context.model_path} has {len(labels)} classes (their last sizes: "
                           f"{', '.join(map(str, widths)) or 'none'}): give one name per output class")
    return list(labels)


def check_class_count(listing: dataset.Listing, context: StageContext) -> None:
    """A labelled dataset must have one class folder per model output class."""
    model_info = read_json(context.build_dir / export.MODEL_INFO)
    output_shape = model_info["output_shape"]
    if (not listing.class_names or len(model_info["outputs"]) != 1 or len(output_shape) != 2
            or output_shape[-1] is None):
        return
    classes, folders = int(output_shape[-1]), len(listing.class_names)
    if classes != folders:
        shown = ", ".join(listing.class_names[:6]) + (", …" if folders > 6 else "")
        raise DatasetError(
            f"dataset {context.dataset_dir} has {folders} class folders ({shown}) but model "
            f"{context.model_path} has {classes} output classes: accuracy would compare unrelated "
            "classes. Pass --dataset with one sub-folder per model class (sorted names in the "
            "model's output order), or --allow-class-mismatch if you know better")


def load_inputs(build_dir: Path, relative: str) -> Arrays:
    """Model inputs of one split, one array per input name in the model's input order: images
    preprocessed to float32, arrays cast to the input's dtype. Read-only arrays.

    The split's stored arrays are kept for the next stage in this process (the reference, each
    validation and each quantized mode read the same splits: reading one again took 0.5-0.8 s
    at 224x224), but not its float32 inputs: images stay uint8, a quarter of the floats, and are
    preprocessed again for each stage (0.02-0.08 s for 200 images at 224x224), so that the 120 MB
    of a 224x224 validation split is not resident under every conversion. The files' identity
    (inode, size, mtime) is part of the key, so a split written again is read again."""
    files = (build_dir / relative, build_dir / DATASET_INFO, build_dir / export.MODEL_INFO)
    stored = _read_split(build_dir, relative, tuple(file_identity(path) for path in files))
    info = read_json(build_dir / DATASET_INFO)
    if info.get("kind", IMAGES) == IMAGES:
        preprocessing = Preprocessing.from_dict(info["preprocessing"])
        loaded = {name: dataset.preprocess(pixels, preprocessing) for name, pixels in stored.items()}
    else:
        loaded = {tensor.name: stored[tensor.name].astype(tensor.dtype)
                  for tensor in export.model_inputs(build_dir)}
    for array in loaded.values():
        array.flags.writeable = False
    return loaded


def forget_splits() -> None:
    """Drop the splits kept for the next stage (a stage process moving on to another job)."""
    _read_split.cache_clear()


@functools.lru_cache(maxsize=2)  # the calibration and the validation split
def _read_split(build_dir: Path, relative: str, identities: tuple[Any, ...]) -> Arrays:
    """The split's arrays as stored (uint8 pixels for images), by model input name."""
    del identities  # part of the cache key only
    with np.load(build_dir / relative, allow_pickle=False) as stored:
        split = {tensor.name: stored[tensor.name] for tensor in export.model_inputs(build_dir)}
    for array in split.values():
        array.flags.writeable = False
    return split


def load_split(build_dir: Path, relative: str, needed_by: str = "this stage") -> np.ndarray:
    """Preprocessed inputs of one split, for a stage that handles models with one input."""
    split = load_inputs(build_dir, relative)
    if len(split) != 1:
        raise ModelError(f"{needed_by} handles models with one input; this model has "
                         f"{len(split)} ({listed(split)})")
    return next(iter(split.values()))


def sample_count(split: Arrays) -> int:
    return len(next(iter(split.values())))


def load_labels(build_dir: Path) -> np.ndarray | None:
    info = read_json(build_dir / DATASET_INFO)
    if not info["labelled"]:
        return None
    labels: np.ndarray = np.load(build_dir / VALIDATION_LABELS, allow_pickle=False)
    return labels
