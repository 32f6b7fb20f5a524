"""Array datasets: a ``.npz`` file (one array per model input name, first axis = samples, an
optional ``labels`` array) or a folder of ``.npy`` / ``.npz`` samples (one sample per file); and
the arrays ``invoke infer`` runs (a ``.npz``, or a ``.npy`` for a one-input model).

Needs only numpy. Arrays are used as given (cast to the input's dtype): no pixel preprocessing.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.errors import DatasetError
from converters.model import Arrays, TensorInfo

LABELS = "labels"
SAMPLE_LABEL_KEYS = (LABELS, "label")  # a sample file's label, under either name
ARRAY_SUFFIXES = frozenset({".npy", ".npz"})
FORMAT_HINT = ("save one array per model input name, first axis = samples, and optionally the "
               "labels: numpy.savez('data.npz', <input name>=array, ..., labels=labels)")


@dataclass(frozen=True)
class ArrayData:
    """The samples of an array dataset, matched to the model's inputs by name."""

    arrays: dict[str, np.ndarray]  # input name → N × input shape, in the model's input order
    labels: np.ndarray | None  # N (classes) or N × H × W (segmentation), integers
    names: tuple[str, ...]  # what each sample is called (file name, or "file.npz[i]")

    @property
    def count(self) -> int:
        return len(self.names)


def sample_files(root: Path) -> list[Path]:
    """The ``.npy`` / ``.npz`` files below ``root``, sorted (hidden files ignored)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in ARRAY_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def is_array_dataset(path: Path) -> bool:
    """A ``.npz`` file, or a folder holding ``.npy`` / ``.npz`` files (and no images)."""
    from converters.dataset import is_image_file

    if path.is_file():
        return path.suffix.lower() == ".npz"
    if not path.is_dir() or not sample_files(path):
        return False
    return not any(is_image_file(p) for p in path.rglob("*"))


def check(path: Path) -> None:
    """Fail early (before TensorFlow is imported) on an unreadable or empty array dataset."""
    if path.is_file():
        with _open_npz(path, "dataset") as archive:
            if not archive.files:
                raise DatasetError(f"dataset {path} holds no arrays: {FORMAT_HINT}")
    elif not sample_files(path):
        raise DatasetError(f"dataset folder {path} holds no .npy or .npz samples")


def read(path: Path, inputs: tuple[TensorInfo, ...]) -> ArrayData:
    """Every sample of the dataset at ``path``, one array per input, checked against the shapes."""
    if path.is_file():
        found = _read_npz(path, "dataset")
        labels = found.pop(LABELS, None)
        arrays = _match(found, inputs, f"dataset {path}", batched=True)
        count = len(next(iter(arrays.values())))
        names = tuple(f"{path.name}[{index}]" for index in range(count))
    else:
        arrays, labels, names = _read_samples(path, inputs)
    if labels is not None:
        labels = _check_labels(labels, len(names), str(path))
    return ArrayData(arrays, labels, names)


def read_inputs(path: Path, inputs: tuple[TensorInfo, ...]) -> Arrays:
    """The arrays of one inference file, one per input with samples on the first axis: a
    ``.npz`` (one array per input name, each one sample or a first axis of samples; a
    ``labels`` array is ignored) or a ``.npy`` (the input of a one-input model)."""
    if path.suffix.lower() == ".npy":
        if len(inputs) != 1:
            raise DatasetError(
                f"{path} is a .npy file, which holds one array; the model has {len(inputs)} "
                f"inputs ({_listed(inputs)}): save one array per input name in a .npz, e.g. "
                f"numpy.savez('inputs.npz', {', '.join(f'{t.name}=...' for t in inputs)})")
        found = {inputs[0].name: _load_npy(path, "input file")}
    else:
        found = {key: array for key, array in _read_npz(path, "input file").items()
                 if key != LABELS}
    matched = _match(found, inputs, str(path), batched=None)
    if not len(next(iter(matched.values()))):
        raise DatasetError(f"{path} holds no samples: its arrays' first axis is 0")
    return matched


def _read_samples(root: Path, inputs: tuple[TensorInfo, ...]
                  ) -> tuple[dict[str, np.ndarray], np.ndarray | None, tuple[str, ...]]:
    per_input: dict[str, list[np.ndarray]] = {tensor.name: [] for tensor in inputs}
    labels: list[np.ndarray] = []
    files = sample_files(root)
    for file in files:
        where = f"sample {file}"
        if file.suffix.lower() == ".npy":
            found = {file.stem: _load_npy(file, "sample")}
        else:
            found = _read_npz(file, "sample")
        label = next((found.pop(key) for key in SAMPLE_LABEL_KEYS if key in found), None)
        if label is not None:
            labels.append(np.asarray(label))
        elif labels:
            raise DatasetError(f"sample {file} has no label while earlier samples have one: "
                               "label every sample or none")
        for name, array in _match(found, inputs, where, batched=False).items():
            per_input[name].append(array)
    if labels and len(labels) != len(files):
        raise DatasetError(f"dataset {root}: {len(labels)} of {len(files)} samples have a "
                           "label: label every sample or none")
    arrays = {name: np.stack(items) for name, items in per_input.items()}
    names = tuple(file.relative_to(root).as_posix() for file in files)
    return arrays, (np.stack(labels) if labels else None), names


# What numpy raises for a file that is not a readable archive of plain arrays (a truncated or
# foreign zip, object arrays that would need pickle)
UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def _read_npz(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of the .npz archive ``path`` (members are read lazily: their errors too are
    reported naming the file)."""
    with _open_npz(path, what) as archive:
        try:
            return {key: archive[key] for key in archive.files}
        except UNREADABLE as error:
            raise DatasetError(f"cannot read {what} {path} as a .npz file of arrays: {error}. "
                               f"{FORMAT_HINT}") from None


def _open_npz(path: Path, what: str) -> np.lib.npyio.NpzFile:
    """``path`` as a .npz archive (``what`` it is, for the message)."""
    try:
        archive = np.load(path, allow_pickle=False)
    except UNREADABLE as error:
        raise DatasetError(f"cannot read {what} {path} as a .npz file: {error}. {FORMAT_HINT}"
                           ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetError(f"cannot read {what} {path} as a .npz file: it holds one .npy array. "
                           f"{FORMAT_HINT}")
    return archive


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except UNREADABLE as error:
        raise DatasetError(f"cannot read {what} {path} as a .npy file: {error}") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise DatasetError(f"cannot read {what} {path} as a .npy file: it is a .npz archive")
    return array


def _match(found: dict[str, np.ndarray], inputs: tuple[TensorInfo, ...], where: str,
           batched: bool | None) -> dict[str, np.ndarray]:
    """One array per input, by name (a single-input model also takes a file's only array).
    ``batched``: every array has samples on its first axis (True), is one sample (False), or
    either, array by array (None: an inference file; the result has a first axis of samples)."""
    matched: dict[str, np.ndarray] = {}
    for tensor in inputs:
        key = tensor.name
        if key not in found and len(inputs) == 1 and len(found) == 1:
            [key] = found
        expected = _shape_text(tensor.shape, batched)
        if key not in found:
            listed = ", ".join(sorted(found)) or "none"
            raise DatasetError(
                f"{where} has no array '{tensor.name}' for the model input '{tensor.name}' "
                f"(expected shape {expected}); arrays found: {listed}. {FORMAT_HINT}")
        array = np.asarray(found[key])
        if batched is None and _fits(array.shape, tensor.shape):
            array = array[None]  # one sample
        per_sample = array.shape if batched is False else array.shape[1:]
        if batched is False and per_sample[:1] == (1,) and _fits(per_sample[1:], tensor.shape):
            per_sample = per_sample[1:]  # a sample saved as a batch of one
            array = array[0]
        if not _fits(per_sample, tensor.shape) or (batched is not False and array.ndim == 0):
            raise DatasetError(
                f"array '{key}' in {where} has shape {array.shape}; the model input "
                f"'{tensor.name}' expects {expected}")
        if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
            raise DatasetError(f"array '{key}' in {where} holds {array.dtype} values; the model "
                               f"input '{tensor.name}' takes numbers ({tensor.dtype})")
        matched[tensor.name] = array.astype(tensor.dtype)
    counts = {} if batched is False else {name: len(array) for name, array in matched.items()}
    if len(set(counts.values())) > 1:
        raise DatasetError(f"{where}: the input arrays have different sample counts "
                           f"({', '.join(f'{n}: {c}' for n, c in counts.items())})")
    return matched


def _check_labels(labels: np.ndarray, count: int, where: str) -> np.ndarray:
    if len(labels) != count or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(
            f"the labels in {where} ({labels.dtype}, shape {labels.shape}) must be integers "
            f"with one entry per sample ({count}): class indices (N,) or class maps (N, H, W)")
    return labels.astype(np.int64)


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    """``shape`` is ``expected``, where a None size takes any."""
    return len(shape) == len(expected) and all(
        size is None or size == found for found, size in zip(shape, expected, strict=True))


def _listed(inputs: tuple[TensorInfo, ...]) -> str:
    return ", ".join(f"'{tensor.name}' {_sizes(tensor.shape)}" for tensor in inputs)


def _sizes(shape: tuple[int | None, ...]) -> str:
    """``(256, 1)``; ``?`` for a size that takes any."""
    return "(" + ", ".join("?" if size is None else str(size) for size in shape) + (
        ",)" if len(shape) == 1 else ")")


def _shape_text(shape: tuple[int | None, ...], batched: bool | None) -> str:
    sizes = _sizes(shape)[1:-1].rstrip(",")
    if batched is None:
        return f"{_sizes(shape)} for one sample or (N, {sizes}) for N samples"
    return f"(N, {sizes}) for N samples" if batched else f"({sizes}) per sample file"
