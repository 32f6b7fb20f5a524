"""Deterministic, verifiable tar.gz archives for deployment bundles.

Writing: sorted members, fixed mtime, owner and modes, gzip without a timestamp or file name, so
the same inputs give the same sha256. Reading is :mod:`converters.bundles.verify` (standard
library only, shipped in the bundle as ``verify.py``): every member is checked before anything is
trusted — no absolute paths, no ``..``, only regular files and directories (no symlinks, hard
links, devices, FIFOs), one top-level folder, limits against crafted archives, and every file
matching the sha256 and size ``bundle.json`` lists, with nothing missing and nothing extra.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from converters.bundles.verify import (
    SignatureCheck,
    VerificationError,
    Verified,
    check_archive,
    copy_member,
)
from converters.errors import BundleError
from converters.fsutil import atomic_path

EXECUTABLES = frozenset({"run.py", "verify.py"})


class HashingWriter:
    """The archive file as gzip writes it, hashed on the way (no second read to hash it)."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def write_archive(source: Path, destination: Path, root: str) -> str:
    """Pack the folder ``source`` as ``root/...`` into ``destination`` (deterministically);
    return the archive's sha256."""
    paths = sorted(source.rglob("*"), key=lambda p: p.relative_to(source).as_posix())
    with atomic_path(destination) as temporary, temporary.open("wb") as raw:
        hashed = HashingWriter(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=hashed, mtime=0) as compressed, \
                tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as archive:
            archive.addfile(_member(root, tarfile.DIRTYPE, 0, 0o755))
            for path in paths:
                relative = path.relative_to(source).as_posix()
                name = f"{root}/{relative}"
                if path.is_dir():
                    archive.addfile(_member(name, tarfile.DIRTYPE, 0, 0o755))
                else:
                    mode = 0o755 if relative in EXECUTABLES else 0o644
                    with path.open("rb") as handle:
                        archive.addfile(_member(name, tarfile.REGTYPE, path.stat().st_size, mode),
                                        handle)
    return hashed.digest.hexdigest()


def _member(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, mode
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


@contextmanager
def refusals() -> Iterator[None]:
    """A VerificationError of the standard-library checker becomes a BundleError (a user error)."""
    try:
        yield
    except VerificationError as error:
        raise BundleError(str(error)) from None


def verify_archive(path: Path, public_key: Path | None = None) -> Verified:
    """Check every member of the bundle at ``path`` (and its .sha256, and with ``public_key``
    its signature) without extracting anything."""
    with refusals():
        return check_archive(path, signature_check=signature_check(public_key))


def extract_archive(path: Path, destination: Path, public_key: Path | None = None) -> Path:
    """Verify and extract in one pass over one open file; return the bundle's folder."""
    with refusals():
        root = check_archive(path, destination, signature_check(public_key)).root
    assert root is not None
    return root


def signature_check(public_key: Path | None) -> SignatureCheck | None:
    if public_key is None:
        return None
    from converters.bundles.signing import public_key_check

    return public_key_check(public_key)


def file_record(path: Path) -> dict[str, Any]:
    """bundle.json's record of one file: its sha256 and size."""
    with path.open("rb") as handle:
        digest, size = copy_member(handle, None)
    return {"sha256": digest, "size": size}
