#!/usr/bin/env python3
"""Check a deployment bundle with the standard library only: shipped in every bundle as ``verify.py``.

``python3 verify.py`` (inside an extracted bundle) checks every file against ``bundle.json``: each
listed file present with its sha256 and size, no other file or folder, no links, FIFOs or
devices. ``python3 verify.py
BUNDLE.tar.gz [--public-key KEY.pem]`` checks the archive itself, the way ``invoke
verify-bundle`` does on a build host (this file *is* that code): every member safe and matching
``bundle.json``, the limits below, the ``BUNDLE.tar.gz.sha256`` beside it when present and, with a
public key, the Ed25519 signature ``BUNDLE.tar.gz.sig`` (verified by the small RFC 8032
implementation at the end of this file, so no third-party package is needed).

The archive is read once, as a stream, from one open file: the members are hashed (and, when
extracting, written to a private folder) from the same bytes whose sha256 is compared with the
``.sha256`` file and the signature. Limits are checked on each header before its data is
read. Needs Python 3.9 or newer.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

BUNDLE_JSON = "bundle.json"
CHECKSUM_SUFFIX = ".sha256"
SIGNATURE_SUFFIX = ".sig"
CHUNK = 1 << 20
GIB = 1 << 30

# Limits against crafted archives. A real bundle has a few dozen members (wheels, one artifact,
# a few scripts) with names under 200 bytes and a bundle.json of a few KiB; its largest member is
# a `docker save` of a stage image (--with-images), NVIDIA's TensorRT image being the largest at
# roughly 10 GiB; wheels, models and image layers compress by less than 5:1.
MAX_HEADERS = 10_000  # tar headers, GNU long-name headers included
MAX_NAME_BYTES = 1024  # a member's path (Linux allows 4096, one file name 255)
MAX_LISTING_BYTES = 4 << 20  # bundle.json
MAX_MEMBER_BYTES = 16 * GIB
MAX_TOTAL_BYTES = 32 * GIB
MAX_RATIO = 50  # unpacked bytes per archive byte, once past RATIO_FLOOR
RATIO_FLOOR = 64 << 20
MAX_SIDECAR_BYTES = 4096  # BUNDLE.tar.gz.sha256 and .sig
MAX_KEY_BYTES = 16 << 10  # a PEM key (an Ed25519 one is under 200 bytes)

FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
LONG_NAME_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
# Headers the bundle writer never makes and whose payload tarfile reads without bound.
REFUSED_HEADER_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                        tarfile.GNUTYPE_SPARSE)

SignatureCheck = Callable[[bytes, bytes], bool]  # (message, signature) -> valid


class VerificationError(Exception):
    """The bundle is not trustworthy (or cannot be read); the message names what and why."""


@dataclass
class Verified:
    """What a check found: bundle.json, the archive's sha256 and which anchors were checked."""

    bundle: dict[str, Any]
    archive_sha256: str = ""
    checksum_file: Path | None = None  # the .sha256 that matched, if one was there
    signature_file: Path | None = None  # the .sig present beside the archive
    signature_checked: bool = False
    root: Path | None = None  # the extracted folder, when extracting


def fail(message: str) -> VerificationError:
    return VerificationError(f"{message}: refusing the bundle")


def size_text(size: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


# --- reading the archive --------------------------------------------------------------------

class HashingReader:
    """The archive file as gzip reads it: hashes and counts every byte, in order, once."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        raise io.UnsupportedOperation("a bundle is read once, as a stream")

    def drain(self) -> str:
        """Hash what the tar reader did not need (gzip trailer, padding); return the sha256."""
        while self.read(CHUNK):
            pass
        return self.digest.hexdigest()


class LimitedTarFile(tarfile.TarFile):
    """A stream reader that counts headers, so limits hold before tarfile reads a payload."""

    headers = 0
    chained = 0  # extended headers in a row (a long name, a long link name)


class LimitedTarInfo(tarfile.TarInfo):
    """Checks each header's type and extended-header size before tarfile reads its payload."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        assert isinstance(archive, LimitedTarFile)
        archive.headers += 1
        if archive.headers > MAX_HEADERS:
            raise fail(f"the archive has more than {MAX_HEADERS} tar headers (member-count limit)")
        if self.type in REFUSED_HEADER_TYPES:
            raise fail(f"tar header #{archive.headers} is a pax or sparse header (type "
                       f"{self.type!r}), which bundles never hold")
        if self.type in LONG_NAME_TYPES:
            if self.size > MAX_NAME_BYTES:
                raise fail(f"tar header #{archive.headers} holds a {size_text(self.size)} member "
                           f"name, over the {MAX_NAME_BYTES}-byte name-length limit")
            archive.chained += 1
            if archive.chained > len(LONG_NAME_TYPES):
                raise fail(f"tar header #{archive.headers} chains more than "
                           f"{len(LONG_NAME_TYPES)} long-name headers")
        else:
            archive.chained = 0
        processed: tarfile.TarInfo = super()._proc_member(archive)  # type: ignore[misc]
        return processed

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> LimitedTarInfo:
        """tarfile ends the archive silently at a damaged header, where GNU tar reads on: a
        damaged header is refused; only the end (zero blocks, or no more data) ends it."""
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as error:
            if len(buf) == 0 or buf.count(0) == tarfile.BLOCKSIZE:
                raise
            raise fail(f"damaged tar header ({error})") from None


def check_relative(name: str, what: str) -> str:
    """``name`` as a safe relative POSIX path, or a VerificationError naming it."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise fail(f"{what} '{name[:80]}…' is longer than {MAX_NAME_BYTES} bytes (name-length "
                   "limit)")
    path = PurePosixPath(name)
    if not name or path.as_posix() == ".":
        raise fail(f"a {what} has an empty name")
    if name.startswith("/") or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise fail(f"{what} '{name}' has an absolute path")
    if ".." in path.parts:
        raise fail(f"{what} '{name}' has a '..' component")
    return path.as_posix()


def check_member(member: tarfile.TarInfo) -> str:
    """The member's safe relative path, or a VerificationError naming it."""
    name = check_relative(member.name, "member")
    if member.issym() or member.islnk():
        raise fail(f"member '{name}' is a link (to '{member.linkname}')")
    if member.type not in FILE_TYPES and not member.isdir():
        raise fail(f"member '{name}' is a device, FIFO or other special file")
    return name


@dataclass
class Budget:
    """Sizes declared so far, checked against the limits at each header."""

    archive_bytes: int
    total: int = 0

    def admit(self, name: str, size: int, is_listing: bool) -> None:
        if is_listing and size > MAX_LISTING_BYTES:
            raise fail(f"member '{name}' is {size_text(size)}, over the "
                       f"{size_text(MAX_LISTING_BYTES)} limit for {BUNDLE_JSON}")
        if size > MAX_MEMBER_BYTES:
            raise fail(f"member '{name}' is {size_text(size)}, over the per-member limit of "
                       f"{size_text(MAX_MEMBER_BYTES)}")
        self.total += size
        if self.total > MAX_TOTAL_BYTES:
            raise fail(f"members up to '{name}' unpack to {size_text(self.total)}, over the total "
                       f"limit of {size_text(MAX_TOTAL_BYTES)}")
        if self.total > max(RATIO_FLOOR, MAX_RATIO * self.archive_bytes):
            raise fail(f"members up to '{name}' unpack to {size_text(self.total)} from a "
                       f"{size_text(self.archive_bytes)} archive, over the compression-ratio "
                       f"limit of {MAX_RATIO}:1")


@dataclass
class Contents:
    """Every file member's digest and size, bundle.json's bytes, and the single top folder."""

    root: str = ""
    listing: bytes | None = None
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)

    def place(self, name: str) -> str:
        """The member's path below the top folder; one top folder, no name twice."""
        top, _, relative = name.partition("/")
        self.root = self.root or top
        if top != self.root:
            raise fail(f"the archive must hold one top-level folder, found '{self.root}' and "
                       f"'{top}'")
        if name in self.names:
            raise fail(f"member '{name}' appears twice")
        self.names.add(name)
        return relative


class Extraction:
    """Writes members into a private folder; moved into place only once everything checked."""

    def __init__(self, destination: Path) -> None:
        self.created = not destination.exists()
        destination.mkdir(parents=True, exist_ok=True)
        self.destination = destination
        self.private = Path(tempfile.mkdtemp(prefix=".bundle-", dir=destination))

    def directory(self, name: str) -> None:
        (self.private / name).mkdir(parents=True, exist_ok=True)

    def open(self, name: str, size: int, executable: bool) -> IO[bytes]:
        path = self.private / name
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.private).free
        if size > free:
            raise VerificationError(f"not enough space to extract '{name}' ({size_text(size)}) "
                                    f"into {self.destination}: {size_text(free)} free")
        handle = path.open("xb")
        os.chmod(path, 0o755 if executable else 0o644)
        return handle

    def finish(self, root: str) -> Path:
        target = self.destination / root
        if target.exists():
            raise VerificationError(f"{target} already exists: extract into an empty folder")
        os.replace(self.private / root, target)
        self.discard()
        return target

    def discard(self) -> None:
        """Remove the private folder (and the destination, when this created it and it is empty)."""
        shutil.rmtree(self.private, ignore_errors=True)
        if self.created:
            with contextlib.suppress(OSError):
                self.destination.rmdir()


def copy_member(source: IO[bytes], sink: IO[bytes] | None) -> tuple[str, int]:
    """sha256 and size of a member's data, written to ``sink`` from the same bytes."""
    digest, size = hashlib.sha256(), 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return digest.hexdigest(), size


def read_members(archive: tarfile.TarFile, budget: Budget,
                 extraction: Extraction | None) -> Contents:
    """One pass over the stream: check, hash (and write) every member."""
    contents = Contents()
    for member in archive:
        name = check_member(member)
        relative = contents.place(name)
        if member.isdir():
            if extraction is not None:
                extraction.directory(name)
            continue
        is_listing = relative == BUNDLE_JSON
        budget.admit(name, member.size, is_listing)
        data = archive.extractfile(member)
        assert data is not None  # a regular file
        if is_listing:
            contents.listing = data.read()
            sink = extraction.open(name, member.size, False) if extraction else None
            if sink is not None:
                with sink:
                    sink.write(contents.listing)
            continue
        sink = extraction.open(name, member.size, bool(member.mode & 0o111)) if extraction else None
        if sink is None:
            contents.files[relative] = copy_member(data, None)
        else:
            with sink:
                contents.files[relative] = copy_member(data, sink)
    return contents


def parse_listing(data: bytes, where: str) -> dict[str, Any]:
    """bundle.json, checked for the shape the checks rely on."""
    try:
        bundle = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise fail(f"{where} is not valid JSON ({str(error)[:200]})") from None
    files = bundle.get("files") if isinstance(bundle, dict) else None
    if not isinstance(files, dict) or not isinstance(bundle.get("name"), str):
        raise fail(f"{where} lacks the 'name' and 'files' entries of a bundle listing")
    for name, record in files.items():
        check_relative(name, f"{BUNDLE_JSON} entry")
        if not (isinstance(record, dict) and isinstance(record.get("sha256"), str)
                and isinstance(record.get("size"), int)):
            raise fail(f"{where} entry '{name}' lacks its sha256 and size")
    return bundle


def compare(bundle: dict[str, Any], found: dict[str, tuple[str, int]], prefix: str) -> None:
    """Exactly the files bundle.json lists, each with its size and sha256."""
    expected: dict[str, dict[str, Any]] = bundle["files"]
    for relative, (digest, size) in sorted(found.items()):
        record = expected.get(relative)
        if record is None:
            raise fail(f"member '{prefix}{relative}' is not listed in {BUNDLE_JSON}")
        if size != record["size"]:
            raise fail(f"member '{prefix}{relative}' has {size} bytes, {BUNDLE_JSON} says "
                       f"{record['size']}")
        if digest != record["sha256"]:
            raise fail(f"member '{prefix}{relative}' has sha256 {digest[:16]}…, {BUNDLE_JSON} "
                       f"says {record['sha256'][:16]}…")
    missing = sorted(set(expected) - set(found))
    if missing:
        raise fail(f"member '{prefix}{missing[0]}' listed in {BUNDLE_JSON} is missing from the "
                   "archive")


def check_contents(contents: Contents, path: Path) -> dict[str, Any]:
    if not contents.root:
        raise fail(f"{path} holds no members")
    if contents.listing is None:
        raise fail(f"{path} has no {contents.root}/{BUNDLE_JSON}: not a bundle")
    bundle = parse_listing(contents.listing, f"{contents.root}/{BUNDLE_JSON}")
    if bundle["name"] != contents.root:
        raise fail(f"{path}: {BUNDLE_JSON} names the bundle '{bundle['name'][:80]}' but its "
                   f"folder is '{contents.root}'")
    compare(bundle, contents.files, f"{contents.root}/")
    return bundle


def open_archive(path: Path) -> IO[bytes]:
    """The archive's one open file handle, or a message saying what to pass instead."""
    if path.is_dir():
        raise VerificationError(f"{path} is a folder, not a bundle archive: pass the .tar.gz "
                                f"file (to check an extracted bundle, run python3 verify.py "
                                f"inside it)")
    if not path.exists():
        raise VerificationError(f"bundle {path} does not exist: build one with invoke bundle")
    if not path.is_file():  # a FIFO or a device: opening or reading it may never end
        raise VerificationError(f"bundle {path} is not a regular file: pass the .tar.gz file")
    return path.open("rb")


def check_archive(path: Path, destination: Path | None = None,
                  signature_check: SignatureCheck | None = None) -> Verified:
    """Check (and with ``destination``, extract) the bundle at ``path`` in one streaming pass.

    With ``signature_check``, ``path + ".sig"`` must exist and be a valid signature of the
    archive's sha256 line. Extraction writes to a private folder inside ``destination`` and moves
    the bundle's folder into place only when every check passed; otherwise nothing is left.
    """
    extraction: Extraction | None = None
    try:
        if destination is not None:
            extraction = Extraction(destination)
        with open_archive(path) as handle:
            reader = HashingReader(handle)
            budget = Budget(os.fstat(handle.fileno()).st_size)
            try:
                with gzip.GzipFile(fileobj=reader, mode="rb") as stream, \
                        LimitedTarFile.open(fileobj=stream, mode="r|",
                                            tarinfo=LimitedTarInfo) as archive:
                    contents = read_members(archive, budget, extraction)
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
                raise VerificationError(f"{path} is not a readable gzip-compressed tar archive: "
                                        f"{error}") from None
            verified = Verified(check_contents(contents, path), reader.drain())
        check_anchors(path, verified, signature_check)
        if extraction is not None:
            verified.root = extraction.finish(contents.root)
        return verified
    except OSError as error:
        raise VerificationError(f"cannot read or extract {path}: {error}") from None
    finally:
        if extraction is not None:
            extraction.discard()


# --- anchors outside the archive: BUNDLE.tar.gz.sha256 and BUNDLE.tar.gz.sig ------------------

def checksum_line(archive_sha256: str, bundle_name: str) -> str:
    """The ``sha256sum`` line of a bundle archive: the ``.sha256`` file and the signed message."""
    return f"{archive_sha256}  {bundle_name}.tar.gz\n"


def sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def read_sidecar(path: Path) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_SIDECAR_BYTES + 1)
    if len(data) > MAX_SIDECAR_BYTES:
        raise fail(f"{path} is larger than {MAX_SIDECAR_BYTES} bytes")
    return data


def check_anchors(path: Path, verified: Verified, signature_check: SignatureCheck | None) -> None:
    """The .sha256 beside the archive when there is one; the signature when a key is given."""
    checksum = sidecar(path, CHECKSUM_SUFFIX)
    if checksum.is_file():
        recorded = read_sidecar(checksum).decode("ascii", "replace").split(" ", 1)[0].strip()
        if len(recorded) != 64:
            raise fail(f"{checksum} is not a sha256sum line")
        if recorded != verified.archive_sha256:
            raise fail(f"{path} has sha256 {verified.archive_sha256[:16]}…, {checksum} says "
                       f"{recorded[:16]}…")
        verified.checksum_file = checksum
    signature = sidecar(path, SIGNATURE_SUFFIX)
    verified.signature_file = signature if signature.is_file() else None
    if signature_check is None:
        return
    if verified.signature_file is None:
        raise fail(f"{path} is not signed ({signature} does not exist) and a public key was given")
    message = checksum_line(verified.archive_sha256, verified.bundle["name"]).encode()
    if not signature_check(message, read_sidecar(signature)):
        raise fail(f"the signature {signature} does not match {path} with this public key (the "
                   "archive or its signature was changed, or another key signed it)")
    verified.signature_checked = True


# --- an extracted bundle on the device ------------------------------------------------------

def check_folder(folder: Path) -> dict[str, Any]:
    """Every file of an extracted bundle against its bundle.json (no links, no special files,
    no file or folder it does not list)."""
    listing = folder / BUNDLE_JSON
    if not listing.is_file():
        raise VerificationError(f"{folder} has no {BUNDLE_JSON}: run verify.py inside an "
                                "extracted bundle, or pass the bundle's .tar.gz")
    if listing.stat().st_size > MAX_LISTING_BYTES:
        raise fail(f"{listing} is over the {size_text(MAX_LISTING_BYTES)} limit for {BUNDLE_JSON}")
    bundle = parse_listing(listing.read_bytes(), str(listing))
    folders = {parent.as_posix() for name in bundle["files"]
               for parent in PurePosixPath(name).parents} - {"."}
    found: dict[str, tuple[str, int]] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise fail(f"'{relative}' is a symbolic link")
        if stat.S_ISDIR(mode):
            if relative not in folders:
                raise fail(f"'{relative}' is a folder that holds no file {BUNDLE_JSON} lists")
        elif not stat.S_ISREG(mode):  # reading a FIFO would block
            raise fail(f"'{relative}' is a FIFO, socket, device or other special file")
        elif relative != BUNDLE_JSON:
            with path.open("rb") as handle:
                found[relative] = copy_member(handle, None)
    compare(bundle, found, "")
    return bundle


# --- Ed25519 signature verification (RFC 8032, section 5.1.7), standard library only ----------
# Verification handles public data only, so plain Python integers are fine (no secret to leak
# through timing). Signing stays with the `cryptography` package on the build host.

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int, int, int]  # extended coordinates X, Y, Z, T with x = X/Z, y = Y/Z, xy = T/Z
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")  # DER SubjectPublicKeyInfo


def point_add(p: Point, q: Point) -> Point:
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * p[3] * q[3] * D % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def point_multiply(scalar: int, point: Point) -> Point:
    result: Point = (0, 1, 1, 0)
    while scalar > 0:
        if scalar & 1:
            result = point_add(result, point)
        point = point_add(point, point)
        scalar >>= 1
    return result


def point_equal(p: Point, q: Point) -> bool:
    return (p[0] * q[2] - q[0] * p[2]) % P == 0 and (p[1] * q[2] - q[1] * p[2]) % P == 0


def point_decompress(data: bytes) -> Point | None:
    """The curve point a 32-byte encoding names, or None when it names none."""
    y = int.from_bytes(data, "little")
    sign, y = y >> 255, y & ((1 << 255) - 1)
    if y >= P:
        return None
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    if x2 == 0:
        if sign:
            return None
        return 0, y, 1, 0
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P != 0:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P != 0:
        return None
    if x & 1 != sign:
        x = P - x
    return x, y, 1, x * y % P


BASE_Y = 4 * pow(5, P - 2, P) % P
BASE = point_decompress(BASE_Y.to_bytes(32, "little"))


def ed25519_verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    if len(public_key) != 32 or len(signature) != 64 or BASE is None:
        return False
    a = point_decompress(public_key)
    r = point_decompress(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little") % L
    return point_equal(point_multiply(s, BASE), point_add(r, point_multiply(k, a)))


def read_key_file(path: Path, what: str) -> bytes:
    """The bytes of the key file ``path`` (``what`` it is, for messages): a regular file of at
    most MAX_KEY_BYTES, checked before it is opened (a FIFO would block, /dev/zero never end)."""
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise VerificationError(f"the {what} {path} is not a regular file: pass the PEM file")
        with path.open("rb") as handle:
            data = handle.read(MAX_KEY_BYTES + 1)
    except OSError as error:
        raise VerificationError(f"cannot read the {what} {path}: {error.strerror or error}"
                                ) from None
    if len(data) > MAX_KEY_BYTES:
        raise VerificationError(f"the {what} {path} is larger than {size_text(MAX_KEY_BYTES)}, "
                                "which no PEM key is: pass the key file")
    return data


def read_public_key(path: Path) -> bytes:
    """The 32 raw bytes of an Ed25519 public key in PEM (``openssl pkey -pubout``) form."""
    try:
        text = read_key_file(path, "public key").decode("ascii")
    except UnicodeDecodeError as error:
        raise VerificationError(f"cannot read the public key {path}: {error}") from None
    body = [line.strip() for line in text.splitlines()
            if line.strip() and not line.startswith("-----")]
    try:
        der = base64.b64decode("".join(body), validate=True)
    except binascii.Error:
        der = b""
    if "BEGIN PUBLIC KEY" not in text or len(der) != 44 or not der.startswith(ED25519_SPKI_PREFIX):
        raise VerificationError(f"{path} is not an Ed25519 public key in PEM form: pass the "
                                "public half (invoke bundle-keygen writes it, or openssl pkey "
                                "-in KEY -pubout)")
    return der[len(ED25519_SPKI_PREFIX):]


def public_key_check(path: Path) -> SignatureCheck:
    """A signature check with the pure-Python verifier and the key at ``path``."""
    key = read_public_key(path)
    return lambda message, signature: ed25519_verify(key, message, signature)


# --- command line ---------------------------------------------------------------------------

def describe(verified: Verified, path: Path) -> str:
    bundle = verified.bundle
    anchors = [f"sha256 {verified.archive_sha256}"]
    if verified.checksum_file is not None:
        anchors.append(f"matches {verified.checksum_file.name}")
    if verified.signature_checked:
        anchors.append("signature valid")
    elif verified.signature_file is not None:
        anchors.append(f"{verified.signature_file.name} not checked (pass --public-key)")
    return (f"{path}: {len(bundle['files'])} files match {BUNDLE_JSON} ({bundle.get('target')} "
            f"{bundle.get('variant')}, {bundle.get('platform')}); {', '.join(anchors)}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("archive", nargs="?", type=Path,
                        help="a bundle .tar.gz (default: check the extracted bundle this file is in)")
    parser.add_argument("--public-key", type=Path,
                        help="Ed25519 public key (PEM): require BUNDLE.tar.gz.sig to be its signature")
    args = parser.parse_args(argv)
    try:
        if args.archive is None:
            if args.public_key is not None:
                raise VerificationError("--public-key checks an archive's signature: pass the "
                                        "bundle's .tar.gz (with its .sig beside it)")
            folder = Path(__file__).resolve().parent
            bundle = check_folder(folder)
            print(f"{folder}: {len(bundle['files'])} files match {BUNDLE_JSON}")
            return 0
        check = public_key_check(args.public_key) if args.public_key is not None else None
        print(describe(check_archive(args.archive, signature_check=check), args.archive))
        return 0
    except VerificationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
