"""Deterministic, verifiable tar.gz archives for deployment bundles.

Writing: sorted members, fixed mtime, owner and modes, gzip without a timestamp or file name, so
the same inputs give the same sha256. Reading: every member is checked before anything is
trusted or extracted — no absolute paths, no ``..``, only regular files and directories (no
symlinks, hard links, devices, FIFOs), one top-level folder, and every file matching the
sha256 and size ``bundle.json`` lists, with nothing missing and nothing extra.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from pathlib import Path, PurePosixPath
from typing import IO, Any

from converters.errors import ConverterError
from converters.fsutil import atomic_path

BUNDLE_JSON = "bundle.json"
EXECUTABLES = frozenset({"run.py"})
CHUNK = 1 << 20


class BundleError(ConverterError):
    """A bundle cannot be built, or an archive is not a trustworthy bundle."""


def write_archive(source: Path, destination: Path, root: str) -> None:
    """Pack the folder ``source`` as ``root/...`` into ``destination`` (deterministically)."""
    paths = sorted(source.rglob("*"), key=lambda p: p.relative_to(source).as_posix())
    with atomic_path(destination) as temporary, temporary.open("wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed, \
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


def _member(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, mode
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def check_member(member: tarfile.TarInfo) -> str:
    """The member's safe relative path, or a BundleError naming it."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise BundleError(f"member '{name}' has an absolute path: refusing the bundle")
    if ".." in path.parts:
        raise BundleError(f"member '{name}' has a '..' component: refusing the bundle")
    if member.issym() or member.islnk():
        raise BundleError(f"member '{name}' is a link (to '{member.linkname}'): refusing the bundle")
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"member '{name}' is a device, FIFO or other special file: refusing "
                          "the bundle")
    return path.as_posix()


def _digest(handle: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def verify_archive(path: Path) -> dict[str, Any]:
    """Check every member of the bundle at ``path``; return its bundle.json."""
    if not path.is_file():
        raise BundleError(f"bundle {path} does not exist: build one with invoke bundle")
    try:
        with tarfile.open(path, mode="r:gz") as archive:
            return _verify_members(archive, path)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise BundleError(f"{path} is not a readable gzip-compressed tar archive: {error}") from None


def _verify_members(archive: tarfile.TarFile, path: Path) -> dict[str, Any]:
    """Each member safe, and exactly the files bundle.json lists, with their hashes."""
    members = archive.getmembers()
    names = [check_member(member) for member in members]
    roots = {name.split("/", 1)[0] for name in names}
    if len(roots) != 1:
        raise BundleError(f"{path} must hold one top-level folder, found: "
                          f"{', '.join(sorted(roots)) or 'nothing'}")
    [root] = roots
    listing_name = f"{root}/{BUNDLE_JSON}"
    listing = archive.extractfile(listing_name) if listing_name in names else None
    if listing is None:
        raise BundleError(f"{path} has no {root}/{BUNDLE_JSON}: not a bundle")
    bundle: dict[str, Any] = json.loads(listing.read())
    if bundle.get("name") != root:
        raise BundleError(f"{path}: {BUNDLE_JSON} names the bundle '{bundle.get('name')}' but "
                          f"its folder is '{root}': refusing the bundle")
    expected: dict[str, dict[str, Any]] = bundle["files"]
    seen: set[str] = set()
    for member, name in zip(members, names, strict=True):
        if not member.isfile() or name == f"{root}/{BUNDLE_JSON}":
            continue
        relative = name.removeprefix(f"{root}/")
        if relative not in expected:
            raise BundleError(f"member '{name}' is not listed in {BUNDLE_JSON}: refusing the bundle")
        handle = archive.extractfile(member)
        assert handle is not None
        digest, size = _digest(handle)
        record = expected[relative]
        if size != record["size"]:
            raise BundleError(f"member '{name}' has {size} bytes, {BUNDLE_JSON} says "
                              f"{record['size']}: refusing the bundle")
        if digest != record["sha256"]:
            raise BundleError(f"member '{name}' has sha256 {digest[:16]}…, {BUNDLE_JSON} says "
                              f"{record['sha256'][:16]}…: refusing the bundle")
        seen.add(relative)
    missing = sorted(set(expected) - seen)
    if missing:
        raise BundleError(f"member '{root}/{missing[0]}' listed in {BUNDLE_JSON} is missing "
                          "from the archive: refusing the bundle")
    return bundle


def extract_archive(path: Path, destination: Path) -> Path:
    """Verify, then extract into ``destination``; return the bundle's folder."""
    bundle = verify_archive(path)
    with tarfile.open(path, mode="r:gz") as archive:
        for member in archive.getmembers():
            check_member(member)  # the same checks, again, on what is extracted
        archive.extractall(destination, filter="data")
    return destination / bundle["name"]


def file_record(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        digest, size = _digest(handle)
    return {"sha256": digest, "size": size}
