"""Array datasets: a ``.npz`` file (one array per model input name, first axis = samples, an
optional ``labels`` array) or a folder of ``.npy`` / ``.npz`` samples (one sample per file); and
the arrays ``invoke infer`` runs (a ``.npz``, or a ``.npy`` for a one-input model).

Needs only numpy. Arrays are used as given (cast to the input's dtype): no pixel preprocessing.
They are read by :mod:`converters.inputs.array_files`, the rule bundles' ``run.py`` follows too: what
a file declares is bounded (``--max-array-mb``) before it is read, and values a cast would
silently change (NaN, Inf, complex, out of the dtype's range) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from converters.errors import DatasetError
from converters.inputs import array_files
from converters.inputs.array_files import DEFAULT_MAX_ARRAY_MB, listed
from converters.inputs.dataset_files import check_inside, is_image_file
from converters.inputs.tensor_info import TensorInfo

if TYPE_CHECKING:  # checking a dataset reads headers only: numpy is imported to read arrays
    import numpy as np

    from converters.inputs.model import Arrays

LABELS = "labels"
SAMPLE_LABEL_KEYS = (LABELS, "label")  # a sample file's label, under either name
ARRAY_SUFFIXES = frozenset({".npy", ".npz"})
MAX_ARRAY_FLAG = "--max-array-mb"  # the setting that bounds what array files may declare
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


def inside_sample_files(root: Path) -> list[Path]:
    """:func:`sample_files`, refusing symlinks to files outside ``root`` as image folders do."""

    files = sample_files(root)
    check_inside(root, files, "sample")
    return files


def is_array_dataset(path: Path) -> bool:
    """A ``.npz`` file, or a folder holding ``.npy`` / ``.npz`` files (and no images)."""

    if path.is_file():
        return path.suffix.lower() == ".npz"
    if not path.is_dir() or not sample_files(path):
        return False
    return not any(is_image_file(p) for p in path.rglob("*"))


def check(path: Path, max_array_mb: int = DEFAULT_MAX_ARRAY_MB) -> None:
    """Fail early (before TensorFlow is imported) on an unreadable, empty or too large array
    dataset, or a sample folder with symlinks out of it: only the arrays' headers are read."""
    budget = _budget(max_array_mb)
    if path.is_file():
        if not _scan(path, "dataset", budget, batched=True):
            raise DatasetError(f"dataset {path} holds no arrays: {FORMAT_HINT}")
        return
    files = inside_sample_files(path)
    if not files:
        raise DatasetError(f"dataset folder {path} holds no .npy or .npz samples")
    for file in files:
        _scan(file, "sample", budget, batched=False)


def sample_shapes(path: Path, max_array_mb: int = DEFAULT_MAX_ARRAY_MB
                  ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Each array's per-sample shape, by name, from the headers of the array dataset at
    ``path`` (a ``.npz``'s arrays without their first axis; a sample folder's first file, a
    ``.npy`` named by its file): the sizes a model input declared without one takes."""
    budget = _budget(max_array_mb)
    try:
        if path.is_file():
            members = array_files.scan(path, budget, "dataset", skip=(LABELS,))
            return tuple((member.name, member.shape[1:]) for member in members if member.shape)
        files = inside_sample_files(path)
        if not files:
            return ()
        members = array_files.scan(files[0], budget, "sample", skip=SAMPLE_LABEL_KEYS)
    except array_files.ArrayFileError as error:
        raise _refused(error, path.is_file()) from None
    return tuple((member.name or files[0].stem, member.shape) for member in members)


def read(path: Path, inputs: tuple[TensorInfo, ...],
         max_array_mb: int = DEFAULT_MAX_ARRAY_MB) -> ArrayData:
    """Every sample of the dataset at ``path``, one array per input, checked against the shapes
    and the input dtypes' ranges; the arrays together may declare at most ``max_array_mb``."""
    budget = _budget(max_array_mb)
    if path.is_file():
        found = _load(path, "dataset", budget, batched=True)
        labels = found.pop(LABELS, None)
        arrays = _match(found, inputs, f"dataset {path}", batched=True)
        count = len(next(iter(arrays.values())))
        names = tuple(f"{path.name}[{index}]" for index in range(count))
    else:
        arrays, labels, names = _read_samples(path, inputs, budget)
    if labels is not None:
        labels = _check_labels(labels, len(names), str(path))
    return ArrayData(arrays, labels, names)


def read_inputs(path: Path, inputs: tuple[TensorInfo, ...],
                max_array_mb: int = DEFAULT_MAX_ARRAY_MB) -> Arrays:
    """The arrays of one inference file, one per input with samples on the first axis: a
    ``.npz`` (one array per input name, each one sample or a first axis of samples; a
    ``labels`` array is ignored, and not read) or a ``.npy`` (the input of a one-input model).
    The arrays may declare at most ``max_array_mb``."""
    budget = _budget(max_array_mb)
    if path.suffix.lower() == ".npy":
        if len(inputs) != 1:
            raise DatasetError(
                f"{path} is a .npy file, which holds one array; the model has {len(inputs)} "
                f"inputs ({_listed(inputs)}): save one array per input name in a .npz, e.g. "
                f"numpy.savez('inputs.npz', {', '.join(f'{t.name}=...' for t in inputs[:3])})")
        found = {inputs[0].name: _load(path, "input file", budget, batched=None)[""]}
    else:
        found = _load(path, "input file", budget, batched=None, skip=(LABELS,))
    matched = _match(found, inputs, str(path), batched=None)
    if not len(next(iter(matched.values()))):
        raise DatasetError(f"{path} holds no samples: its arrays' first axis is 0")
    return matched


def _read_samples(root: Path, inputs: tuple[TensorInfo, ...], budget: array_files.Budget
                  ) -> tuple[dict[str, np.ndarray], np.ndarray | None, tuple[str, ...]]:
    import numpy as np

    per_input: dict[str, list[np.ndarray]] = {tensor.name: [] for tensor in inputs}
    labels: list[np.ndarray] = []
    files = inside_sample_files(root)
    for file in files:
        where = f"sample {file}"
        found = _load(file, "sample", budget, batched=False)
        if "" in found:  # a .npy sample: named by its file
            found = {file.stem: found.pop("")}
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


def _budget(max_array_mb: int) -> array_files.Budget:
    return array_files.Budget(max_array_mb, f"{MAX_ARRAY_FLAG} N (invoke.yaml: max_array_mb)")


def _scan(path: Path, what: str, budget: array_files.Budget, batched: bool) -> bool:
    """Whether ``path`` declares any array: its headers admitted to ``budget``, nothing else
    read (a .npz for a dataset file, ``batched``; a .npy or .npz sample otherwise)."""
    try:
        members = array_files.scan(path, budget, what)
    except array_files.ArrayFileError as error:
        raise _refused(error, batched) from None
    _check_kind(path, what, any(not member.entry for member in members))
    return bool(members)


def _load(path: Path, what: str, budget: array_files.Budget, batched: bool | None,
          skip: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every array of ``path`` but ``skip``, by name ("" for a .npy file), each admitted to
    ``budget`` from its header before any is read (``batched``: see :func:`_match`)."""
    try:
        found = array_files.load(path, budget, what, skip)
    except array_files.ArrayFileError as error:
        raise _refused(error, batched) from None
    _check_kind(path, what, "" in found)
    return found


def _refused(error: array_files.ArrayFileError, batched: bool | None) -> DatasetError:
    """A dataset file that cannot be read gets a reminder of how a dataset .npz is made; a
    sample or an input file does not (it is one sample, or the model's inputs)."""
    unreadable = isinstance(error, array_files.UnreadableArrayFile)
    return DatasetError(f"{error}. {FORMAT_HINT}" if batched and unreadable else str(error))


def _check_kind(path: Path, what: str, holds_npy: bool) -> None:
    """A .npy file holds one array and a .npz file an archive of them, whatever their content."""
    is_npy = path.suffix.lower() == ".npy"
    if holds_npy and not is_npy:
        raise DatasetError(f"cannot read {what} {path} as a .npz file: it holds one .npy array. "
                           f"{FORMAT_HINT}")
    if is_npy and not holds_npy:
        raise DatasetError(f"cannot read {what} {path} as a .npy file: it is a .npz archive")


def _match(found: dict[str, np.ndarray], inputs: tuple[TensorInfo, ...], where: str,
           batched: bool | None) -> dict[str, np.ndarray]:
    """One array per input, by name (a single-input model also takes a file's only array).
    ``batched``: every array has samples on its first axis (True), is one sample (False), or
    either, array by array (None: an inference file; the result has a first axis of samples)."""
    import numpy as np

    matched: dict[str, np.ndarray] = {}
    for tensor in inputs:
        key = tensor.name
        if key not in found and len(inputs) == 1 and len(found) == 1:
            [key] = found
        expected = _shape_text(tensor.shape, batched)
        if key not in found:
            raise DatasetError(
                f"{where} has no array '{tensor.name}' for the model input '{tensor.name}' "
                f"(expected shape {expected}); arrays found: {listed(sorted(found))}. "
                f"{FORMAT_HINT}")
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
        try:
            array_files.check_values(array, tensor.dtype, f"array '{key}' in {where}")
        except array_files.ArrayFileError as error:
            raise DatasetError(str(error)) from None
        matched[tensor.name] = array.astype(tensor.dtype)
    counts = {} if batched is False else {name: len(array) for name, array in matched.items()}
    if len(set(counts.values())) > 1:
        raise DatasetError(f"{where}: the input arrays have different sample counts "
                           f"({listed(f'{n}: {c}' for n, c in counts.items())})")
    return matched


def _check_labels(labels: np.ndarray, count: int, where: str) -> np.ndarray:
    import numpy as np

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
    return listed(f"'{tensor.name}' {_sizes(tensor.shape)}" for tensor in inputs)


def _sizes(shape: tuple[int | None, ...]) -> str:
    """``(256, 1)``; ``?`` for a size that takes any."""
    return "(" + ", ".join("?" if size is None else str(size) for size in shape) + (
        ",)" if len(shape) == 1 else ")")


def _shape_text(shape: tuple[int | None, ...], batched: bool | None) -> str:
    sizes = _sizes(shape)[1:-1].rstrip(",")
    if batched is None:
        return f"{_sizes(shape)} for one sample or (N, {sizes}) for N samples"
    return f"(N, {sizes}) for N samples" if batched else f"({sizes}) per sample file"
