"""Image discovery, preprocessing and the seeded calibration/validation split.

Needs only Pillow and numpy. Labels follow Keras' ``image_dataset_from_directory``
convention: one sub-folder per class, class index = position of the folder name in sorted order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from converters import console
from converters.config import Preprocessing
from converters.errors import DatasetError
from converters.inputs.dataset_files import IMAGE_SUFFIXES, check_inside, is_image_file

if TYPE_CHECKING:  # finding and checking the images needs neither: reading them does
    import numpy as np

NO_LABEL = -1


@dataclass(frozen=True)
class ImageEntry:
    path: Path
    label: int  # NO_LABEL for a flat folder


@dataclass(frozen=True)
class Listing:
    entries: tuple[ImageEntry, ...]
    class_names: tuple[str, ...]
    skipped_files: int  # files that are not images by their extension


Sample = TypeVar("Sample")


@dataclass(frozen=True)
class Split(Generic[Sample]):
    calibration: tuple[Sample, ...]
    validation: tuple[Sample, ...]


def check_source(path: Path, max_array_mb: int) -> None:
    """Fail early on a dataset that is neither an image folder nor an array dataset (whose
    files may declare at most ``max_array_mb``)."""
    from converters.inputs import arrays

    if arrays.is_array_dataset(path):
        arrays.check(path, max_array_mb)
    else:
        discover(path)


def discover(root: Path) -> Listing:
    """List the images below ``root``: flat, or one sub-folder per class."""
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist: pass --dataset DIR with images")
    if not root.is_dir():
        raise DatasetError(f"dataset {root} is not a folder nor a .npz file: pass --dataset "
                           "DIR with images, or a .npz file / folder of .npy or .npz samples")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    skipped = 0
    entries: list[ImageEntry] = []
    class_names: list[str] = []
    labelled_dirs = [d for d in class_dirs if any(is_image_file(f) for f in d.rglob("*"))]
    if labelled_dirs:
        for label, class_dir in enumerate(labelled_dirs):
            class_names.append(class_dir.name)
            for file in sorted(p for p in class_dir.rglob("*") if p.is_file()):
                if is_image_file(file):
                    entries.append(ImageEntry(file, label))
                else:
                    skipped += 1
        top_level = [p for p in root.iterdir() if p.is_file()]
        skipped += len(top_level)
        if any(is_image_file(p) for p in top_level):
            console.warn(
                f"{root}: images directly in the folder are ignored because class sub-folders exist"
            )
    else:
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            if is_image_file(file):
                entries.append(ImageEntry(file, NO_LABEL))
            else:
                skipped += 1
    check_inside(root, [entry.path for entry in entries])
    if skipped:
        console.info(f"dataset {root}: skipped {skipped} file(s) that are not images")
    if not entries:
        raise DatasetError(
            f"dataset folder {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): "
            "add images, flat or one sub-folder per class"
        )
    return Listing(tuple(entries), tuple(class_names), skipped)


def split(entries: tuple[Sample, ...], calibration_size: int, validation_size: int,
          seed: int, what: str = "image") -> Split[Sample]:
    """Disjoint, seeded calibration and validation sets of images (or other samples, ``what``).

    With fewer samples than asked for, both shrink in proportion (each keeps at least one).
    """
    total = len(entries)
    if total < 2:
        raise DatasetError(
            f"the dataset has {total} usable {what}(s); at least 2 are needed "
            "(one to calibrate, one to validate)"
        )
    if total < calibration_size + validation_size:
        wanted = calibration_size + validation_size
        validation_size = min(total - 1, max(1, round(total * validation_size / wanted)))
        calibration_size = total - validation_size
        console.warn(
            f"the dataset has {total} usable {what}s, fewer than the {wanted} asked for: "
            f"using {calibration_size} to calibrate and {validation_size} to validate"
        )
    import numpy as np

    order = np.random.default_rng(seed).permutation(total)
    validation = tuple(entries[i] for i in order[:validation_size])
    calibration = tuple(entries[i] for i in order[validation_size:validation_size + calibration_size])
    return Split(calibration, validation)


def load_image(path: Path, height: int, width: int, channels: int) -> np.ndarray:
    """Read one image as uint8 HxWxC, resized (bilinear) and converted to ``channels``."""
    from converters.inputs import imaging

    if channels not in imaging.CHANNEL_MODES:
        raise DatasetError(
            f"the model expects {channels} input channels; images can be read as 1, 3 or 4 channels"
        )
    return imaging.read_pixels(path, height, width, channels)


def load_images(entries: tuple[ImageEntry, ...], shape: tuple[int, int, int],
                description: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load entries into (uint8 N×H×W×C, labels, unreadable paths). Unreadable ones are skipped."""
    import numpy as np

    height, width, channels = shape
    images: list[np.ndarray] = []
    labels: list[int] = []
    unreadable: list[str] = []
    for entry in console.progress(entries, description, total=len(entries)):
        try:
            images.append(load_image(entry.path, height, width, channels))
        except (OSError, ValueError, SyntaxError) as error:
            console.warn(f"cannot read image {entry.path}: {error}; skipping it")
            unreadable.append(str(entry.path))
            continue
        labels.append(entry.label)
    if images:
        batch = np.stack(images)
    else:
        batch = np.zeros((0, height, width, channels), np.uint8)
    return batch, np.asarray(labels, dtype=np.int64), unreadable


def preprocess(pixels: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """uint8 pixels (…×C) → float32 model inputs."""
    from converters.inputs import imaging

    try:
        return imaging.normalize(pixels, preprocessing.mode.value, preprocessing.mean,
                                 preprocessing.std)
    except ValueError as error:
        raise DatasetError(str(error)) from None
