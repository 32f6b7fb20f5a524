"""Deterministic tar archives of files and folders below one root, and their safe extraction.

Used where stage outputs leave this machine's build folder: the shared stage cache stores them
as archives, and Ray tasks receive their inputs and return their outputs as archives. Members
are sorted and carry no time, owner or mode beyond "executable or not", so the same files give
the same bytes. Writing follows a link to a file (a dataset may hold one) but refuses what is
neither a file nor a folder (a FIFO would block the writer); :func:`links_below` finds links for a
caller that must not store them. Extraction uses tarfile's ``data`` filter (no absolute paths,
no ``..``) and accepts only regular files and folders: no links, devices, FIFOs or sparse files.
"""

from __future__ import annotations

import io
import stat
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from converters.errors import CorruptFileError


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


def links_below(root: Path, relatives: Iterable[str]) -> list[Path]:
    """The symbolic links among ``root/relative`` and everything below them, sorted."""
    found = []
    for relative in sorted(set(relatives)):
        path = root / relative
        if path.is_symlink():
            found.append(path)
        elif path.is_dir():  # rglob lists links but does not descend into them
            found += [below for below in sorted(path.rglob("*")) if below.is_symlink()]
    return found


def _add(archive: tarfile.TarFile, path: Path, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    status = path.stat()
    if stat.S_ISDIR(status.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        archive.addfile(info)
        return
    if not stat.S_ISREG(status.st_mode):
        raise CorruptFileError(f"{path} is neither a file nor a folder (a FIFO, socket or device): "
                               "it cannot be archived; remove it")
    info.size = status.st_size
    info.mode = 0o755 if status.st_mode & 0o100 else 0o644
    with path.open("rb") as data:
        archive.addfile(info, data)


def extract_tree_archive(source: bytes | IO[bytes], destination: Path) -> None:
    """Unpack an archive (its bytes, or an open file read from its start) into ``destination``;
    a member that is not a regular file or folder is a CorruptFileError naming it, and nothing
    of the archive is extracted then."""
    destination.mkdir(parents=True, exist_ok=True)
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    with tarfile.open(fileobj=handle, mode="r:") as archive:
        members = archive.getmembers()
        for member in members:
            if not (member.isdir() or (member.isreg() and not member.issparse())):
                kind = "a link" if member.issym() or member.islnk() else "not a regular file"
                raise CorruptFileError(f"archive member {member.name!r} is {kind}: only files and "
                                       "folders are accepted")
        archive.extractall(destination, members=members, filter="data")
