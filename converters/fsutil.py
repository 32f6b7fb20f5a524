"""File helpers: content hashes and atomic writes (temporary file, then rename)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from converters.errors import CorruptFileError

_CHUNK = 1 << 20


def file_identity(path: Path) -> tuple[int, int, int]:
    """Inode, size and modification time: changes whenever the file is written again (atomic
    writes make a new inode), without reading it. A key for what a process keeps in memory."""
    status = path.stat()
    return status.st_ino, status.st_size, status.st_mtime_ns


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return sha256_handle(handle)


def sha256_handle(handle: IO[bytes]) -> str:
    """The sha256 of what ``handle`` holds from where it is, read in chunks (bounded memory)."""
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def open_regular_file(path: Path, max_bytes: int | None = None) -> IO[bytes]:
    """``path`` opened for reading when it is a regular file (not a link, FIFO, device or folder)
    of at most ``max_bytes``; else a CorruptFileError naming it. For files someone else may have
    planted: opening never follows a link nor waits for a FIFO's writer, and a size limit keeps
    a small file small. A missing file is FileNotFoundError."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise CorruptFileError(f"{path} is a symbolic link, not a file") from None
        raise
    status = os.fstat(descriptor)
    problem = ("is not a regular file (a FIFO, device or folder)" if not stat.S_ISREG(status.st_mode)
               else f"holds {status.st_size} bytes, more than {max_bytes}"
               if max_bytes is not None and status.st_size > max_bytes else None)
    if problem is not None:
        os.close(descriptor)
        raise CorruptFileError(f"{path} {problem}")
    return os.fdopen(descriptor, "rb")


def read_small_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular_file`), at most
    ``max_bytes`` of them even when it grows while read."""
    with open_regular_file(path, max_bytes) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise CorruptFileError(f"{path} holds more than {max_bytes} bytes")
    return data


def sha256_tree(path: Path) -> str:
    """Hash of a file, or of a directory's relative paths and file contents (sorted)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(os.fsencode(file.relative_to(path).as_posix()))  # any file name's bytes
        digest.update(b"\0")
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success.

    Works for files and directories. A crash leaves the old ``target`` (or nothing) and a
    ``.tmp-*`` sibling that :func:`remove_stale_temporaries` clears on the next run.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    temporary = Path(name)
    temporary.unlink()
    try:
        yield temporary
        replace(temporary, target)
    finally:
        remove(temporary)


def replace(source: Path, target: Path) -> None:
    """Move ``source`` onto ``target``; a directory target is removed first."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(source, target)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_bytes_atomic(target: Path, data: bytes) -> None:
    with atomic_path(target) as temporary:
        temporary.write_bytes(data)


def write_text_atomic(target: Path, text: str) -> None:
    write_bytes_atomic(target, text.encode())


def write_json_atomic(target: Path, data: object) -> None:
    """Strict JSON (no NaN or Infinity: they are not JSON), written atomically."""
    write_text_atomic(target, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a truncated or malformed file is a CorruptFileError naming it."""
    try:
        with path.open("rb") as handle:
            data = json.loads(handle.read())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CorruptFileError(f"{path} is not valid JSON ({error}): it is truncated or was "
                               "changed by hand. Delete it and rebuild (invoke convert --force)"
                               ) from None
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path} does not hold a JSON object: delete it and rebuild "
                               "(invoke convert --force)")
    return data


def remove_stale_temporaries(root: Path) -> int:
    """Delete ``.*.tmp-*`` leftovers of killed builds below ``root``; return how many."""
    if not root.exists():
        return 0
    stale = [p for p in root.rglob(".*.tmp-*")]
    for path in stale:
        remove(path)
    return len(stale)
