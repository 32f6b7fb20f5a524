"""The shared stage cache (``--cache-dir DIR``): stage outputs stored by stage key.

A stage key hashes everything a stage's outputs are a function of (see :mod:`converters.cache.stage_cache`),
so outputs stored under it can be restored into any build folder, on any machine or CI run that
plans the same key, instead of running the stage again.

Layout: ``DIR/.tensor-edge-converter-cache`` (the marker, written when a build creates the
cache) and ``DIR/<key[:2]>/<key>/entry.tar`` (the outputs and the stage's stamp, a deterministic
tar of regular files and folders only) with ``entry.tar.sha256`` beside it, and
``entry.tar.sig`` when the writer signed it. An entry is assembled in a temporary folder and
renamed into place in one step; renaming onto an existing entry fails, so when two builds store
the same key at once the first rename wins and the other discards its copy: one valid entry.

Only a cache is used or pruned: a folder with the marker, or (a cache written before the marker
existed) one whose every item has exactly the layout above; such a folder is adopted (the marker
is written). Anything else is refused, naming the folder, and nothing in it is touched. Pruning
removes only what it proves is an entry (or an unfinished one); links are never followed, and
an item the cache did not write is left and counted.

Reading opens every file without following links, only when it is a regular file of a bounded
size, then checks the archive's sha256, the signature (with a public key), then every output
against the stamp: a corrupted entry is removed with a warning (left, when it cannot be) and the
stage runs. The cache is a trust boundary: whoever can write it decides what later builds
restore. A writer with a signing key signs each entry's key and archive sha256 with Ed25519; a
reader with the public key restores only entries so signed (any other is skipped with a warning
and the stage runs). A restored entry's folder gets a new mtime, which is what ``invoke
cache-prune`` (least recently used first) goes by. Storing is best effort: a read-only, full or
otherwise unwritable cache gives one warning and the build's result is its own.

Stages that could not run here (stamped ``skipped``) are never stored, nor failed stages (they
have no stamp), nor the report of a build folder with failed stages (it lists them, and failures
are not part of its key), nor outputs that hold a link. A stage whose work was not needed (an
automatic int8-mixed) is stored with what it wrote: its outcome follows from its key.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from converters import console
from converters.cache import stage_cache
from converters.cache.tree_archive import extract_tree_archive, links_below, write_tree_archive
from converters.errors import ConfigError, ConverterError, CorruptFileError
from converters.fsutil import (
    open_regular_file,
    read_json,
    read_small_file,
    remove,
    sha256_handle,
)
from converters.pipeline.executor import STAGING
from converters.pipeline.plan import ModelPlan
from converters.stages.base import StageSpec

MARKER = ".tensor-edge-converter-cache"
MARKER_TEXT = "A Tensor Edge Converter shared stage cache (invoke convert --cache-dir).\n"
ENTRY = "entry.tar"
DIGEST = "entry.tar.sha256"
SIGNATURE = "entry.tar.sig"
ENTRY_FILES = frozenset({ENTRY, DIGEST, SIGNATURE})
DIGEST_BYTES = 256  # a sha256 in hex and a newline; more is not a digest file
SIGNATURE_BYTES = 64  # a raw Ed25519 signature
KEY_NAME = re.compile(r"[0-9a-f]{64}")  # a stage key: a sha256 in hex
SHARD_NAME = re.compile(r"[0-9a-f]{2}")
TEMPORARY = ".tmp-"
STALE_TEMPORARY_SECONDS = 3600  # an unfinished entry this old belongs to a killed build
SIZE_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
SHOWN_FOREIGN = 5  # items named when a folder is refused as a cache

Signer = Callable[[bytes], bytes]  # message -> signature
SignatureCheck = Callable[[bytes, bytes], bool]  # (message, signature) -> valid


@dataclass(frozen=True)
class PruneResult:
    removed: int
    freed_bytes: int
    kept: int
    kept_bytes: int
    foreign: int  # items the cache did not write (links among them): left alone


@dataclass(frozen=True)
class Survey:
    """What a folder holds, sorted by whether the cache wrote it (nothing is followed)."""

    marked: bool
    entries: tuple[Path, ...]
    temporaries: tuple[Path, ...]  # unfinished entries, and removed ones not yet deleted
    foreign: tuple[Path, ...]  # anything else: the cache never touches it


def signed_message(key: str, digest: str) -> bytes:
    """What an entry's signature signs: its stage key and its archive's sha256, so neither an
    archive under another key nor another archive under this key passes as signed."""
    return f"tensor-edge-converter shared cache entry\nkey {key}\nentry.tar sha256 {digest}\n".encode()


@dataclass(eq=False)
class SharedCache:
    """A cache checked by :func:`open_shared_cache`. ``sign`` signs stored entries; with
    ``check``, only entries it accepts are restored. ``writable`` turns False (with one warning)
    the first time writing to the cache fails."""

    root: Path
    sign: Signer | None = None
    check: SignatureCheck | None = None
    writable: bool = True
    warned: set[str] = field(default_factory=set)

    def entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    def restore_stages(self, plan: ModelPlan, stale: list[StageSpec]) -> list[str]:
        """Restore every stale stage of ``plan`` whose key the cache holds, unless one of its
        upstream stages runs here; return their names.

        A stage that runs here may fail (a transient out-of-memory) with the key of one that
        succeeded elsewhere: what depends on it, the validation and the report above all, must
        say what happened here, not what happened to the stored build."""
        runs_here: set[str] = set()
        restored: list[str] = []
        for spec in stale:  # in dependency order
            if not runs_here.intersection(spec.deps) and self.restore(plan, spec):
                restored.append(spec.name)
            else:
                runs_here.add(spec.name)
        return restored

    def restore(self, plan: ModelPlan, spec: StageSpec) -> bool:
        """Place ``spec``'s stored outputs and stamp in the build folder; False on a miss, or on
        an entry that is corrupted (then removed) or not signed by the reader's key."""
        key = plan.keys[spec.name]
        entry = self.entry(key)
        for path in (entry.parent, entry):
            if not _is_real_folder(path):
                if os.path.lexists(path):
                    console.warn(f"{path} in the shared cache is a link or not a folder: ignored "
                                 "(never followed); the stage runs")
                return False
        staging = plan.build_dir / STAGING / f"restore-{spec.name}"
        remove(staging)
        try:
            expected = _recorded_digest(entry / DIGEST)
            with open_regular_file(entry / ENTRY) as archive:
                actual = sha256_handle(archive)
                if actual != expected:
                    raise CorruptFileError(f"its archive's sha256 {actual[:12]}… differs from the "
                                           f"recorded {expected[:12]}…")
                if (untrusted := self._untrusted(entry, key, actual)) is not None:
                    console.warn(f"shared cache entry {entry} {untrusted}: not restored; the stage "
                                 "runs here")
                    return False
                archive.seek(0)
                extract_tree_archive(archive, staging)
            stamp = read_json(stage_cache.stamp_path(staging, spec.name))
            if stamp.get("key") != key or not stage_cache.outputs_match(stamp, spec):
                raise CorruptFileError("its stamp is for another stage key or other outputs")
            restored = {**stamp, "restored_from_cache": str(entry.resolve()),
                        "restored": stage_cache.iso_time(time.time())}
            stage_cache.place_stage(plan.build_dir, staging, restored, spec)
        except FileNotFoundError as missing:
            if os.path.lexists(entry):  # else pruned meanwhile
                self.discard(key, f"{Path(missing.filename or ENTRY).name} is missing")
            return False
        except (OSError, tarfile.TarError, ConverterError) as problem:
            self.discard(key, str(problem))
            return False
        finally:
            remove(staging)
        if self.writable:
            try:
                os.utime(entry)  # recently used: the last to be pruned
            except OSError as error:
                self.stop_writing(error)
        console.info(f"◆ {plan.stem}: {spec.name} restored from the shared cache (key {key[:12]})")
        return True

    def _untrusted(self, entry: Path, key: str, digest: str) -> str | None:
        """Why the entry is not signed by the reader's key; None when it is (or no key is set)."""
        if self.check is None:
            return None
        try:
            signature = read_small_file(entry / SIGNATURE, SIGNATURE_BYTES)
        except FileNotFoundError:
            return "is not signed (--cache-public-key requires a signature)"
        except (OSError, CorruptFileError) as error:
            return f"has an unreadable signature ({error})"
        if not self.check(signed_message(key, digest), signature):
            return "is not signed by the --cache-public-key key"
        return None

    def store_build(self, plan: ModelPlan) -> int:
        """Store every stage of ``plan`` whose outputs are intact and not yet stored; return how
        many were stored. A failed stage has no stamp, so is never stored; nor is the report of
        a build with failed stages: it lists them, and they are not part of its key."""
        failed = any(stage_cache.read_failure(plan.build_dir, spec.name) for spec in plan.stages)
        return sum(self.store(plan.build_dir, spec, plan.keys[spec.name]) for spec in plan.stages
                   if not (failed and spec.kind == "report"))

    def store(self, build_dir: Path, spec: StageSpec, key: str) -> bool:
        """Store one stage's outputs and stamp under ``key``; False when it is not stored (see the
        module docstring). A failure to write is a warning, never the build's failure."""
        entry = self.entry(key)
        if not self.writable or os.path.lexists(entry):
            return False
        stamp = stage_cache.read_stamp(build_dir, spec.name)
        if (stamp is None or stamp.get("key") != key
                or (stamp.get("skipped") and not stamp.get("not_needed"))  # not run here
                or not stage_cache.outputs_intact(build_dir, stamp)):
            return False
        members = stage_cache.stage_files(build_dir, spec.name, spec.outputs)
        if links := links_below(build_dir, members):
            console.warn(f"{spec.name} is not stored in the shared cache: {links[0]} is a link "
                         "(entries hold only files and folders)")
            return False
        try:
            if not os.path.lexists(entry.parent):
                entry.parent.mkdir(exist_ok=True)
            if not _is_real_folder(entry.parent):
                console.warn(f"{spec.name} is not stored: {entry.parent} in the shared cache is a "
                             "link or not a folder")
                return False
            return self._write_entry(build_dir, members, key)
        except OSError as error:
            self.stop_writing(error)
            return False

    def _write_entry(self, build_dir: Path, members: list[str], key: str) -> bool:
        entry = self.entry(key)
        temporary = Path(tempfile.mkdtemp(prefix=f"{TEMPORARY}{key[:12]}-", dir=entry.parent))
        try:
            with (temporary / ENTRY).open("w+b") as handle:
                write_tree_archive(handle, build_dir, members)
                handle.flush()
                os.fsync(handle.fileno())
                handle.seek(0)
                digest = sha256_handle(handle)
            (temporary / DIGEST).write_text(digest + "\n")
            if self.sign is not None:
                (temporary / SIGNATURE).write_bytes(self.sign(signed_message(key, digest)))
            try:
                temporary.rename(entry)  # fails when another build stored this key first
            except OSError:
                if os.path.lexists(entry):
                    return False
                raise
            return True
        finally:
            remove(temporary)

    def stop_writing(self, error: OSError) -> None:
        """Store nothing more in this cache; say so once (the build goes on, and its exit status
        is its own)."""
        self.writable = False
        console.warn(f"cannot write to the shared cache {self.root}: "
                     f"{error.strerror or error} ({error.filename or self.root}); this build "
                     "stores nothing in it, and its own result is unaffected")

    def discard(self, key: str, why: str) -> None:
        """Remove the corrupted entry of ``key``, or leave it when it cannot be removed."""
        entry = self.entry(key)
        try:
            remove_entry(entry)
            outcome = "removed"
        except OSError as error:
            outcome = f"left in place (cannot remove it: {error.strerror or error})"
        console.warn(f"shared cache entry {entry} is corrupted ({why}): {outcome}; the stage runs")

    def prune(self, max_bytes: int) -> PruneResult:
        """Remove least recently used entries until the cache holds at most ``max_bytes``, and
        unfinished entries of killed builds; leave what the cache did not write."""
        listing = survey(self.root)
        now = time.time()
        for path in listing.temporaries:
            if now - path.lstat().st_mtime > STALE_TEMPORARY_SECONDS:
                remove(path)
        entries = sorted((path.lstat().st_mtime, _entry_size(path), path)
                         for path in listing.entries)
        total = sum(size for _, size, _ in entries)
        removed = freed = 0
        for _, size, path in entries:
            if total <= max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):  # another prune removed it first
                remove_entry(path)
            total -= size
            freed += size
            removed += 1
        return PruneResult(removed, freed, len(entries) - removed, total, len(listing.foreign))


def _is_real_folder(path: Path) -> bool:
    """A folder, not a link to one (nothing the cache reads or removes is reached via a link)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _holds_entry_files(path: Path, complete: bool) -> bool:
    """``path`` is a real folder of regular files named as an entry's (both the archive and its
    digest when ``complete``)."""
    if not _is_real_folder(path):
        return False
    names = set()
    for item in path.iterdir():
        if item.name not in ENTRY_FILES or not stat.S_ISREG(item.lstat().st_mode):
            return False
        names.add(item.name)
    return not complete or {ENTRY, DIGEST} <= names


def _entry_size(entry: Path) -> int:
    return sum(item.lstat().st_size for item in entry.iterdir())


def _recorded_digest(path: Path) -> str:
    """The sha256 an entry's digest file records (a regular file of 64 hex digits)."""
    text = read_small_file(path, DIGEST_BYTES).decode("ascii", "replace").strip()
    if KEY_NAME.fullmatch(text) is None:
        raise CorruptFileError(f"{path.name} does not hold a sha256 in hex")
    return text


def survey(root: Path) -> Survey:
    """Sort what ``root`` holds into entries, unfinished entries and foreign items, looking at
    links without following them."""
    marked = False
    entries: list[Path] = []
    temporaries: list[Path] = []
    foreign: list[Path] = []
    for child in sorted(root.iterdir()):
        if child.name == MARKER and stat.S_ISREG(child.lstat().st_mode):
            marked = True
        elif SHARD_NAME.fullmatch(child.name) and _is_real_folder(child):
            for item in sorted(child.iterdir()):
                if KEY_NAME.fullmatch(item.name) and item.name[:2] == child.name and \
                        _holds_entry_files(item, complete=True):
                    entries.append(item)
                elif item.name.startswith(TEMPORARY) and _holds_entry_files(item, complete=False):
                    temporaries.append(item)
                else:
                    foreign.append(item)
        else:
            foreign.append(child)
    return Survey(marked, tuple(entries), tuple(temporaries), tuple(foreign))


def recognise(root: Path, flag: str) -> Survey | None:
    """Check that the folder ``root`` is a shared cache (see the module docstring) before
    anything in it is read or removed; adopt a cache written before the marker (write the
    marker, when the folder is writable). None when the marker is there (nothing more is
    looked at); ConfigError naming the folder when it is not a cache."""
    if (root / MARKER).is_file() and not (root / MARKER).is_symlink():
        return None
    listing = survey(root)
    if listing.foreign:
        shown = ", ".join(str(path.relative_to(root)) for path in listing.foreign[:SHOWN_FOREIGN])
        more = len(listing.foreign) - SHOWN_FOREIGN
        raise ConfigError(
            f"{flag} {root} is not a shared stage cache: it has no {MARKER} marker and holds "
            f"{len(listing.foreign)} item(s) a cache does not write ({shown}"
            f"{f' and {more} more' if more > 0 else ''}). Nothing was changed. Pass the folder "
            "of a cache, or a new or empty folder (a build makes it a cache)")
    with contextlib.suppress(OSError):  # a read-only cache of the old layout is read as it is
        mark(root)
    return listing


def mark(root: Path) -> None:
    """Write the marker that makes ``root`` a cache (another build may be writing it too)."""
    with contextlib.suppress(FileExistsError), (root / MARKER).open("x") as handle:
        handle.write(MARKER_TEXT)


def open_shared_cache(root: Path, sign: Signer | None = None,
                      check: SignatureCheck | None = None) -> SharedCache:
    """The cache ``--cache-dir`` names, checked before any stage runs: a file, or a folder that
    is not a cache, is a ConfigError; a missing folder is created as a cache. A cache this
    process cannot write is read only, with one warning."""
    if os.path.lexists(root) and not root.is_dir():
        raise ConfigError(f"--cache-dir {root} is a file, not a folder: pass a folder for the "
                          "shared stage cache (a missing one is created)")
    shared = SharedCache(root, sign, check)
    if root.is_dir():
        recognise(root, "--cache-dir")
    try:
        if not root.exists():
            root.mkdir(parents=True, exist_ok=True)  # another build may make it at once
            mark(root)
        descriptor, probe = tempfile.mkstemp(prefix=TEMPORARY, dir=root)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        shared.writable = False
        console.warn(f"the shared cache {root} is not writable here ({error.strerror or error}): "
                     "entries are restored from it, none are stored")
    return shared


def remove_entry(entry: Path) -> None:
    """Remove an entry, renamed away first so that no reader sees half of it. FileNotFoundError
    when another build removed it first; another OSError when it cannot be removed."""
    doomed = entry.parent / f"{TEMPORARY}removed-{entry.name[:12]}-{os.getpid()}-{time.time_ns()}"
    entry.rename(doomed)
    remove(doomed)


def parse_size(text: str) -> int:
    """``500M``, ``2G``, ``1.5G``, ``100000`` (bytes; K, M, G, T are powers of 1024), at most
    1048576T (1 EiB). Computed exactly (a float turns 400 digits into infinity)."""
    from decimal import Decimal

    largest = 1 << 60
    shown = text if len(text) <= 40 else text[:40] + "…"
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ConfigError(f"--max-size must be a size such as 500M or 2G, got {shown!r}")
    size = Decimal(match.group(1)) * SIZE_UNITS[match.group(2).upper()]
    if size > largest:
        raise ConfigError(f"--max-size must be at most {largest >> 40}T (1 EiB), got {shown!r}")
    return int(size)


def prune_cache(cache_dir: str | None, max_size: str) -> str:
    """``invoke cache-prune``: prune the cache at ``cache_dir`` to ``max_size``; say what went."""
    if not cache_dir:
        raise ConfigError("no shared cache to prune: pass --cache-dir DIR or set cache_dir in "
                          "invoke.yaml")
    root = Path(cache_dir)
    if not root.is_dir():
        raise ConfigError(f"--cache-dir {root} is not a folder: nothing to prune")
    max_bytes = parse_size(max_size)
    adopted = recognise(root, "--cache-dir")
    pruned = SharedCache(root).prune(max_bytes)
    lines = [f"cache-prune: removed {pruned.removed} entries ({pruned.freed_bytes / 2**20:.1f} MiB); "
             f"{pruned.kept} entries ({pruned.kept_bytes / 2**20:.1f} MiB) remain in {root}"]
    if adopted is not None:
        lines.append(f"{root} holds only cache entries but had no {MARKER}: adopted as a cache")
    if pruned.foreign:
        lines.append(f"left {pruned.foreign} item(s) the cache did not write (links among them "
                     "are never followed)")
    return "\n".join(lines)
