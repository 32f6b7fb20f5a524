"""Deterministic tar archives of files and folders below one root, and their safe extraction.

Used where stage outputs leave this machine's build folder: the shared stage cache stores them
as archives, and Ray tasks receive their inputs and return their outputs as archives. Members
are sorted and carry no time, owner or mode beyond "executable or not", so the same files give
the same bytes. Extraction uses tarfile's ``data`` filter: no absolute paths, no ``..``, no
links leaving the destination, no devices.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO


def write_tree_archive(handle: IO[bytes], root: Path, relatives: Iterable[str]) -> None:
    """Write an uncompressed tar of ``root/relative`` (files or folders) to ``handle``."""
    with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for relative in sorted(set(relatives)):
            path = root / relative
            members = [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]
            for member in members:
                _add(archive, member, member.relative_to(root).as_posix())


def tree_archive_bytes(root: Path, relatives: Iterable[str]) -> bytes:
    buffer = io.BytesIO()
    write_tree_archive(buffer, root, relatives)
    return buffer.getvalue()


def _add(archive: tarfile.TarFile, path: Path, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if path.is_dir():
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        archive.addfile(info)
        return
    info.size = path.stat().st_size
    info.mode = 0o755 if path.stat().st_mode & 0o100 else 0o644
    with path.open("rb") as data:
        archive.addfile(info, data)


def extract_tree_archive(source: bytes | Path, destination: Path) -> None:
    """Unpack an archive (its bytes, or a file) into ``destination``, refusing unsafe members."""
    destination.mkdir(parents=True, exist_ok=True)
    handle: IO[bytes] = io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")
    with handle, tarfile.open(fileobj=handle, mode="r:") as archive:
        archive.extractall(destination, filter="data")
