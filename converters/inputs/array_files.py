"""Reading ``.npy`` / ``.npz`` files within a memory bound, and refusing values a model input
would silently change: one rule for array datasets, ``invoke infer --arrays`` and bundles'
``run.py``.

Needs only numpy and the standard library and imports nothing else of this package, so
deployment bundles ship this very file beside their ``run.py`` (as ``array_files.py``).

A ``.npz`` file is a zip archive: a 1 MB file can unpack to gigabytes, and a ``.npy`` header can
declare any shape. Every array's size (its declared shape times its item size) is read from its
header, without reading the array, and counted against a :class:`Budget` before anything is read.
"""

from __future__ import annotations

import math
import stat
import zipfile
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where arrays are read: the helpers above it need none
    import numpy as np

MIB = 1 << 20
DEFAULT_MAX_ARRAY_MB = 2048  # a dataset of 3,000 float32 224x224x3 images is 1.7 GiB
SHOWN = 10  # names a message lists before "... and N more"
SHOWN_NAME_CHARS = 60  # a name longer than this is cut in messages
NPY_SUFFIX = ".npy"
ZIP_MAGIC = b"PK\x03\x04"
HEADER_READERS = {(1, 0): "read_array_header_1_0", (2, 0): "read_array_header_2_0"}  # numpy.lib.format
# What numpy and zipfile raise for a file that is not a readable archive of plain arrays (a
# truncated or foreign zip, object arrays that would need pickle, a header that lies)
UNREADABLE = (OSError, ValueError, EOFError, zipfile.BadZipFile)


class ArrayFileError(ValueError):
    """An array file that cannot be used as it is; the message names the file and what to do."""


class UnreadableArrayFile(ArrayFileError):
    """A file that is not a readable .npy / .npz file of plain arrays."""


def listed(names: Iterable[str], limit: int = SHOWN) -> str:
    """``a, b, c``: at most ``limit`` names (each cut to a readable length), then
    ``... and N more``; ``none`` for no name. Messages never list an unbounded collection."""
    items = list(names)
    shown = [name if len(name) <= SHOWN_NAME_CHARS else name[:SHOWN_NAME_CHARS] + "…"
             for name in items[:limit]]
    rest = len(items) - len(shown)
    return (", ".join(shown) or "none") + (f", ... and {rest} more" if rest > 0 else "")


def size_text(size: int) -> str:
    """``586.0 MiB``: a byte count as a message shows it."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


@dataclass
class Budget:
    """Bytes the arrays read so far declare, against a limit; ``raise_hint`` says how a user
    raises it (a flag, an invoke.yaml key)."""

    limit_mb: int
    raise_hint: str
    used: int = 0

    def admit(self, where: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Count an array of ``shape`` and ``dtype`` (``where``: which file and member), or
        refuse it when the total would pass the limit."""
        size = math.prod(shape) * dtype.itemsize
        self.used += size
        if self.used > self.limit_mb * MIB:
            total = "" if self.used == size else f" (with the arrays before it, {size_text(self.used)})"
            raise ArrayFileError(
                f"{where} declares shape {tuple(shape)} of {dtype}: {size_text(size)} once "
                f"read{total}, over the limit of {self.limit_mb} MiB for array files. If the "
                f"file is what you meant, raise the limit with {self.raise_hint}")


@dataclass(frozen=True)
class Member:
    """One array of a file, as its header declares it (``name``: "" for a .npy file)."""

    name: str
    entry: str  # the zip entry (a .npz member) or "" for a .npy file
    shape: tuple[int, ...]
    dtype: np.dtype


def load(path: Path, budget: Budget, what: str = "", skip: Collection[str] = ()
         ) -> dict[str, np.ndarray]:
    """Every array of the ``.npy`` (named "") or ``.npz`` file ``path`` (by member name, without
    ``skip``), each admitted to ``budget`` from its header before any is read. ``what`` (e.g.
    "dataset") prefixes the file's name in messages."""
    import numpy as np

    members = scan(path, budget, what, skip)
    named = f"{what} {path}" if what else str(path)
    try:
        if members and not members[0].entry:
            with path.open("rb") as handle:
                return {"": np.lib.format.read_array(handle, allow_pickle=False)}
        with zipfile.ZipFile(path) as archive:
            found = {}
            for member in members:
                with archive.open(member.entry) as handle:
                    found[member.name] = np.lib.format.read_array(handle, allow_pickle=False)
            return found
    except UNREADABLE as error:
        raise _unreadable(named, path, error) from None


def scan(path: Path, budget: Budget, what: str = "", skip: Collection[str] = ()) -> list[Member]:
    """The arrays ``path`` declares (see :func:`load`), admitted to ``budget``; nothing read
    but the headers. A regular file only (a FIFO or a device would block or never end)."""
    named = f"{what} {path}" if what else str(path)
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise ArrayFileError(f"cannot read {named}: {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise ArrayFileError(f"{named} is not a regular file: pass a .npz or .npy file")
    try:
        with path.open("rb") as handle:
            is_zip = handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC
            if not is_zip:
                handle.seek(0)
                shape, dtype = _header(handle)
                budget.admit(f"the array in {named}", shape, dtype)
                return [Member("", "", shape, dtype)]
        members = []
        with zipfile.ZipFile(path) as archive:
            for entry in archive.infolist():
                name = entry.filename.removesuffix(NPY_SUFFIX)
                if name in skip or entry.is_dir():
                    continue
                with archive.open(entry) as handle:
                    shape, dtype = _header(handle)
                budget.admit(f"member '{name}' of {named}", shape, dtype)
                members.append(Member(name, entry.filename, shape, dtype))
        return members
    except ArrayFileError:
        raise  # the budget's refusal (a ValueError too)
    except UNREADABLE as error:
        raise _unreadable(named, path, error) from None


def _unreadable(named: str, path: Path, error: Exception) -> UnreadableArrayFile:
    return UnreadableArrayFile(f"cannot read {named} as a {kind(path)} file of arrays: {error}")


def _header(handle: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a .npy header declares (ValueError when it is not one numpy reads)."""
    import numpy as np

    version = np.lib.format.read_magic(handle)
    reader_name = HEADER_READERS.get(version)
    if reader_name is None:
        raise ValueError(f".npy format version {version[0]}.{version[1]} (only 1.0 and 2.0 "
                         "hold plain arrays)")
    shape, _, dtype = getattr(np.lib.format, reader_name)(handle)
    return tuple(shape), dtype


def kind(path: Path) -> str:
    """``.npz`` or ``.npy``: the file's kind by its name, for messages."""
    return ".npy" if path.suffix.lower() == NPY_SUFFIX else ".npz"


def check_values(array: np.ndarray, dtype: str | np.dtype, where: str) -> None:
    """Refuse values that casting to a model input's ``dtype`` would silently change: complex
    numbers, NaN and infinities, values outside the dtype's range, fractions for an integer
    input. ``where``: what the array is (e.g. "array 'x' in data.npz")."""
    import numpy as np

    target = np.dtype(dtype)
    if array.dtype.kind == "c":
        raise ArrayFileError(f"{where} holds complex numbers ({array.dtype}); the model input "
                             f"takes real {target} values: save the real part (array.real) or "
                             "the magnitude (numpy.abs(array))")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ArrayFileError(
                f"{where} holds {int(bad.sum())} non-finite value(s) (NaN or Inf; the first, "
                f"{array[first]}, at index {first}); the model input takes finite {target} "
                "values: replace them (numpy.nan_to_num) or drop those samples")
    if target.kind not in "fiu" or array.dtype.kind not in "fiu" or not array.size:
        return
    low, high = array.min(), array.max()
    limits = np.finfo(target) if target.kind == "f" else np.iinfo(target)
    if (low < limits.min) or (high > limits.max):  # numpy compares mixed kinds exactly
        raise ArrayFileError(f"{where} holds values from {low} to {high}, outside the range of "
                             f"the model input's {target} ({limits.min} to {limits.max}): scale "
                             "or clip them to what the model was trained on")
    if target.kind in "iu" and array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise ArrayFileError(f"{where} holds fractional values; the model input takes whole "
                             f"numbers ({target}): round them, or save integers")
