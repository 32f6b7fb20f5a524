"""The shared stage cache (``--cache-dir DIR``): stage outputs stored by stage key.

A stage key hashes everything a stage's outputs are a function of (see :mod:`converters.cache`),
so outputs stored under it can be restored into any build folder, on any machine or CI run that
plans the same key, instead of running the stage again.

Layout: ``DIR/<key[:2]>/<key>/entry.tar`` (the outputs and the stage's stamp, a deterministic
tar) and ``entry.tar.sha256`` beside it. An entry is assembled in a temporary folder and renamed
into place in one step; renaming onto an existing entry fails, so when two builds store the same
key at once the first rename wins and the other discards its copy: one valid entry. Reading
checks the archive's sha256 and then every output against the stamp: a corrupted entry is
removed with a warning and the stage runs. A restored entry's folder gets a new mtime, which is
what ``invoke cache-prune`` (least recently used first) goes by. Stages that could not run here
(stamped ``skipped``) are never stored, nor failed stages (they have no stamp), nor the report of
a build folder with failed stages (it lists them, and failures are not part of its key). A stage
whose work was not needed (an automatic int8-mixed) is stored with what it wrote: its outcome
follows from its key.
"""

from __future__ import annotations

import os
import re
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from converters import cache, console
from converters.errors import ConfigError, ConverterError, CorruptFileError
from converters.executor import STAGING
from converters.fsutil import read_json, remove, sha256_file, tree_size
from converters.plan import ModelPlan
from converters.stages.base import StageSpec
from converters.tree_archive import extract_tree_archive, write_tree_archive

ENTRY = "entry.tar"
DIGEST = "entry.tar.sha256"
TEMPORARY = ".tmp-"
STALE_TEMPORARY_SECONDS = 3600  # an unfinished entry this old belongs to a killed build
SIZE_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}


@dataclass(frozen=True)
class PruneResult:
    removed: int
    freed_bytes: int
    kept: int
    kept_bytes: int


@dataclass(frozen=True)
class SharedCache:
    root: Path

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
        """Place ``spec``'s stored outputs and stamp in the build folder; False on a miss."""
        key = plan.keys[spec.name]
        entry = self.entry(key)
        try:
            expected = (entry / DIGEST).read_text().strip()
            actual = sha256_file(entry / ENTRY)
        except OSError:
            return False  # not stored (or pruned meanwhile)
        if actual != expected:
            self.discard(key, f"its archive's sha256 {actual[:12]}… differs from the recorded "
                              f"{expected[:12]}…")
            return False
        staging = plan.build_dir / STAGING / f"restore-{spec.name}"
        remove(staging)
        try:
            extract_tree_archive(entry / ENTRY, staging)
            stamp = read_json(cache.stamp_path(staging, spec.name))
            if stamp.get("key") != key or not cache.outputs_match(stamp, spec):
                raise CorruptFileError("its stamp is for another stage key or other outputs")
            restored = {**stamp, "restored_from_cache": str(entry.resolve()),
                        "restored": cache.iso_time(time.time())}
            cache.place_stage(plan.build_dir, staging, restored, spec)
        except (OSError, tarfile.TarError, ConverterError) as problem:
            self.discard(key, str(problem))
            return False
        finally:
            remove(staging)
        os.utime(entry)  # recently used: the last to be pruned
        console.info(f"◆ {plan.stem}: {spec.name} restored from the shared cache (key {key[:12]})")
        return True

    def store_build(self, plan: ModelPlan) -> int:
        """Store every stage of ``plan`` whose outputs are intact and not yet stored; return how
        many were stored. A failed stage has no stamp, so is never stored; nor is the report of
        a build with failed stages: it lists them, and they are not part of its key."""
        failed = any(cache.read_failure(plan.build_dir, spec.name) for spec in plan.stages)
        return sum(self.store(plan.build_dir, spec, plan.keys[spec.name]) for spec in plan.stages
                   if not (failed and spec.kind == "report"))

    def store(self, build_dir: Path, spec: StageSpec, key: str) -> bool:
        entry = self.entry(key)
        if (entry / DIGEST).exists():
            return False
        stamp = cache.read_stamp(build_dir, spec.name)
        if (stamp is None or stamp.get("key") != key
                or (stamp.get("skipped") and not stamp.get("not_needed"))  # not run here
                or not cache.outputs_intact(build_dir, stamp)):
            return False
        entry.parent.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=f"{TEMPORARY}{key[:12]}-", dir=entry.parent))
        try:
            members = cache.stage_files(build_dir, spec.name, spec.outputs)
            with (temporary / ENTRY).open("wb") as handle:
                write_tree_archive(handle, build_dir, members)
                handle.flush()
                os.fsync(handle.fileno())
            (temporary / DIGEST).write_text(sha256_file(temporary / ENTRY) + "\n")
            try:
                temporary.rename(entry)  # fails when another build stored this key first
            except OSError:
                return False
            return True
        finally:
            remove(temporary)

    def discard(self, key: str, why: str) -> None:
        entry = self.entry(key)
        console.warn(f"shared cache entry {entry} is corrupted ({why}): removed; the stage runs")
        remove_entry(entry)

    def prune(self, max_bytes: int) -> PruneResult:
        """Remove least recently used entries until the cache holds at most ``max_bytes``, and
        unfinished entries of killed builds."""
        now = time.time()
        entries = []
        for shard in sorted(p for p in self.root.glob("??") if p.is_dir()):
            for path in shard.iterdir():
                if path.name.startswith(TEMPORARY):
                    if now - path.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                        remove(path)
                    continue
                entries.append((path.stat().st_mtime, tree_size(path), path))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        removed = freed = 0
        for _, size, path in entries:
            if total <= max_bytes:
                break
            remove_entry(path)
            total -= size
            freed += size
            removed += 1
        return PruneResult(removed, freed, len(entries) - removed, total)


def remove_entry(entry: Path) -> None:
    """Remove an entry, renamed away first so that no reader sees half of it."""
    doomed = entry.parent / f"{TEMPORARY}removed-{entry.name[:12]}-{os.getpid()}-{time.time_ns()}"
    try:
        entry.rename(doomed)
    except OSError:
        return  # another build removed it first
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
    pruned = SharedCache(root).prune(parse_size(max_size))
    return (f"cache-prune: removed {pruned.removed} entries ({pruned.freed_bytes / 2**20:.1f} MiB); "
            f"{pruned.kept} entries ({pruned.kept_bytes / 2**20:.1f} MiB) remain in {root}")
