"""Stage keys, stamps, the provenance manifest and the build-directory lock.

A stage's key hashes everything its outputs are a function of: its kind and parameters, the
content hashes of its external inputs, its upstream stages' keys, the versions of the tools it
uses (or the image ID when it runs in a container) and this package's own source. Keys are
computed on the host before anything runs, so a no-op build needs no TensorFlow.

After a stage succeeds, ``<build>/<model>/.stages/<stage>.json`` (its stamp) records the key
and its outputs' hashes; ``manifest.json`` is assembled from the stamps.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from converters import console
from converters.errors import BuildError, LockError
from converters.fsutil import (
    read_json,
    remove,
    replace,
    sha256_text,
    sha256_tree,
    tree_size,
    write_json_atomic,
)
from converters.stages.base import StageSpec

STAMP_DIR = ".stages"
FAILED_SUFFIX = ".failure"  # beside the stamps (not *.json): a stage that failed, and why
BUILD_INFO = "_build.json"
MANIFEST = "manifest.json"
LOCK_FILE = ".lock"
# Written into every model build folder a build creates: what `invoke clean` may remove.
BUILD_MARKER = ".tensor-edge-converter-build"
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # converters/

# A stage's tools are named by what they are; the first installed distribution gives the version.
TOOL_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow-cpu", "tensorflow"),
    "keras": ("keras",),
    "ai-edge-litert": ("ai-edge-litert",),
    "numpy": ("numpy",),
    "pillow": ("pillow",),
}


def tool_version(tool: str) -> str:
    """A Python distribution's version, else an executable's (what ``TOOL --version`` prints first)."""
    for distribution in TOOL_DISTRIBUTIONS.get(tool, (tool,)):
        try:
            return f"{distribution}=={metadata.version(distribution)}"
        except metadata.PackageNotFoundError:
            continue
    return command_version((tool, "--version"))


@functools.cache
def command_version(argv: tuple[str, ...]) -> str:
    """The first line ``argv`` prints, or that the command is not installed."""
    if shutil.which(argv[0]) is None:
        return f"{argv[0]}: not installed"
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{argv[0]}: {error}"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0] if lines else f"{argv[0]}: printed no version"


@functools.cache
def code_fingerprint() -> str:
    """Hash of this package's Python source: changing the converter code invalidates stages."""
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    return sha256_text("".join(f"{p.relative_to(PACKAGE_DIR)}:{sha256_tree(p)}\n" for p in files))


def stage_key(spec: StageSpec, input_hashes: dict[str, str], dep_keys: dict[str, str],
              environment: dict[str, str]) -> str:
    """The content-addressed key of one stage (see the module docstring)."""
    material = {
        "kind": spec.kind,
        "params": spec.params.as_dict(),
        "outputs": list(spec.outputs),
        "inputs": {name: input_hashes[name] for name in spec.inputs},
        "deps": {name: dep_keys[name] for name in spec.deps},
        "environment": environment,
        "code": code_fingerprint(),
    }
    return sha256_text(json.dumps(material, sort_keys=True))


def stamp_path(build_dir: Path, stage: str) -> Path:
    return build_dir / STAMP_DIR / f"{stage}.json"


def read_stamp(build_dir: Path, stage: str) -> dict[str, Any] | None:
    path = stamp_path(build_dir, stage)
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def output_record(build_dir: Path, relative: str) -> dict[str, Any]:
    path = build_dir / relative
    return {"sha256": sha256_tree(path), "size_bytes": tree_size(path)}


def is_fresh(build_dir: Path, spec: StageSpec, key: str) -> bool:
    """True when the stamp has ``key`` and every output still has its recorded hash."""
    stamp = read_stamp(build_dir, spec.name)
    if stamp is None or stamp.get("key") != key:
        return False
    return outputs_match(stamp, spec) and outputs_intact(build_dir, stamp)


def outputs_match(stamp: dict[str, Any], spec: StageSpec) -> bool:
    """The stamp records every output ``spec`` declares (some, when its work was not needed)."""
    recorded = set(stamp.get("outputs", {}))
    return recorded <= set(spec.outputs) if stamp.get("not_needed") else recorded == set(spec.outputs)


def outputs_intact(build_dir: Path, stamp: dict[str, Any]) -> bool:
    """True when every output a stamp records is there with its recorded hash."""
    return all((build_dir / relative).exists()
               and sha256_tree(build_dir / relative) == record["sha256"]
               for relative, record in stamp.get("outputs", {}).items())


def still_valid(build_dir: Path, stage: str, reference_key: str) -> dict[str, Any] | None:
    """The stamp of a stage an earlier build ran, when its outputs still hold: its outputs and
    its upstream stages' outputs are intact, those stages still have the keys it was built
    from, and its chain leads to the current ``reference`` stage (same model, data, timing)."""
    stamp = read_stamp(build_dir, stage)
    if stamp is None or not outputs_intact(build_dir, stamp):
        return None
    deps: dict[str, str] = stamp.get("deps") or {}
    if deps.get("reference") != reference_key:
        return None
    for name, key in deps.items():
        upstream = read_stamp(build_dir, name)
        if upstream is None or upstream.get("key") != key or not outputs_intact(build_dir, upstream):
            return None
    return stamp


def failure_path(build_dir: Path, stage: str) -> Path:
    return build_dir / STAMP_DIR / f"{stage}{FAILED_SUFFIX}"


def write_failure(build_dir: Path, spec: StageSpec, reason: str, upstream: str | None) -> None:
    """Record that ``spec`` failed (or did not run because ``upstream`` failed): never a stamp,
    so the next build runs it again."""
    write_json_atomic(failure_path(build_dir, spec.name), {
        "stage": spec.name, "kind": spec.kind, "reason": reason, "upstream": upstream,
        "outputs": list(spec.outputs), "params": spec.params.as_dict()})


def read_failure(build_dir: Path, stage: str) -> dict[str, Any] | None:
    path = failure_path(build_dir, stage)
    return read_json(path) if path.exists() else None


def read_failures(build_dir: Path) -> dict[str, dict[str, Any]]:
    """Every stage failure recorded in the build folder, by stage name."""
    return {path.name.removesuffix(FAILED_SUFFIX): read_json(path)
            for path in sorted((build_dir / STAMP_DIR).glob(f"*{FAILED_SUFFIX}"))}


def stage_files(build_dir: Path, stage: str, outputs: Iterable[str]) -> list[str]:
    """What a run of ``stage`` left in ``build_dir`` (paths relative to it): its failure record
    when it failed (or did not run because one failed), else its outputs (those its stamp
    records, when its work was not needed) and its stamp."""
    if failure_path(build_dir, stage).exists():
        return [f"{STAMP_DIR}/{stage}{FAILED_SUFFIX}"]
    stamp = read_stamp(build_dir, stage) or {}
    if stamp.get("not_needed"):
        outputs = [relative for relative in outputs if relative in stamp.get("outputs", {})]
    return [*outputs, f"{STAMP_DIR}/{stage}.json"]


def remove_failure(build_dir: Path, stage: str) -> None:
    failure_path(build_dir, stage).unlink(missing_ok=True)


def remove_stamp(build_dir: Path, stage: str) -> None:
    stamp_path(build_dir, stage).unlink(missing_ok=True)
    write_manifest(build_dir)


def write_stamp(build_dir: Path, spec: StageSpec, key: str, started: float,
                environment: dict[str, str], runner: str, dep_keys: dict[str, str],
                skipped: str | None = None, not_needed: bool = False) -> None:
    """Record a finished stage: its key, its upstream stages' keys and its outputs' hashes, and
    ``skipped`` with the reason when it could not run here (its outputs then say so) or,
    ``not_needed``, when this build did not need its work (it may have no outputs then)."""
    stamp = {
        "stage": spec.name,
        "kind": spec.kind,
        "image": spec.image,
        "key": key,
        "deps": dep_keys,
        "environment": environment,
        "runner": runner,
        "started": iso_time(started),
        "finished": iso_time(time.time()),
        "outputs": {relative: output_record(build_dir, relative) for relative in spec.outputs
                    if not not_needed or (build_dir / relative).exists()},
        "skipped": skipped,
        "not_needed": not_needed,
    }
    write_json_atomic(stamp_path(build_dir, spec.name), stamp)
    write_manifest(build_dir)


def place_stage(build_dir: Path, staging: Path, stamp: dict[str, Any], spec: StageSpec) -> None:
    """Move a stage's outputs, made elsewhere (a Ray worker, the shared cache) and unpacked into
    ``staging``, into ``build_dir`` and write ``stamp`` (and drop an earlier build's record of
    its failure, and the declared outputs it did not write: a stage whose work was not needed);
    every output must first match the hash the stamp records (else BuildError, and the build
    folder is left as it was)."""
    for relative, record in stamp["outputs"].items():
        path = staging / relative
        if not path.exists() or sha256_tree(path) != record["sha256"]:
            raise BuildError(f"stage {stamp['stage']}: {relative} does not match the sha256 its "
                             "stamp records")
    remove_stamp(build_dir, stamp["stage"])
    for relative in stamp["outputs"]:
        target = build_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        replace(staging / relative, target)
    remove_unwritten(build_dir, spec, stamp["outputs"])
    write_json_atomic(stamp_path(build_dir, stamp["stage"]), stamp)
    remove_failure(build_dir, stamp["stage"])
    write_manifest(build_dir)


def remove_unwritten(build_dir: Path, spec: StageSpec, written: Iterable[str]) -> None:
    """Remove ``spec``'s declared outputs this run did not write (an earlier run's artifact of
    a stage whose work is not needed now): no file in the folder without a stage behind it."""
    for relative in set(spec.outputs) - set(written):
        remove(build_dir / relative)


def write_build_info(build_dir: Path, info: dict[str, Any]) -> None:
    write_json_atomic(build_dir / STAMP_DIR / BUILD_INFO, info)


def write_manifest(build_dir: Path) -> None:
    """Assemble manifest.json from the build info and every stamp (serialised by a lock)."""
    stamp_dir = build_dir / STAMP_DIR
    stamp_dir.mkdir(parents=True, exist_ok=True)
    with _flock(stamp_dir / ".manifest.lock", blocking=True):
        try:
            info = read_json(stamp_dir / BUILD_INFO)
        except (OSError, ValueError):
            info = {}
        stages: dict[str, Any] = {}
        artifacts: dict[str, Any] = {}
        for path in sorted(stamp_dir.glob("*.json")):
            if path.name == BUILD_INFO:
                continue
            try:
                stamp = read_json(path)
            except (OSError, ValueError):
                continue
            stages[stamp["stage"]] = stamp
            for relative, record in stamp["outputs"].items():
                artifacts[relative] = {**record, "stage": stamp["stage"], "key": stamp["key"]}
        manifest = {**info, "stages": stages, "artifacts": artifacts}
        write_json_atomic(build_dir / MANIFEST, manifest)


def verify_build_dir(build_dir: Path) -> tuple[int, list[str]]:
    """Check a model build folder; return (files checked, one problem line per issue).

    Every stage output is re-hashed against its stamp (``.stages/``) and the manifest, which
    must agree; a file in the build folder that no stage recorded is a problem too, and so is a
    symbolic link anywhere in it (a restored or hand-made link would pass the hashes as its
    target), a build the manifest marks incomplete or a folder without a single artifact.
    """
    manifest = read_json(build_dir / MANIFEST)
    problems = []
    if manifest.get("complete") is False:
        stale = ", ".join(manifest.get("stale_stages") or []) or "unknown"
        problems.append(f"{build_dir}: the last build did not finish; these stages are stale "
                        f"(their artifacts were built from other inputs): {stale}. Run invoke "
                        "convert again")
    stamped: dict[str, dict[str, Any]] = {}
    for path in sorted((build_dir / STAMP_DIR).glob("*.json")):
        if path.name != BUILD_INFO:
            stamped |= read_json(path).get("outputs", {})
    listed = manifest.get("artifacts", {})
    for relative in sorted(set(stamped) | set(listed)):
        problems += _check_output(build_dir, relative, stamped.get(relative), listed.get(relative))
    for path in sorted(_unrecorded_files(build_dir, stamped)):
        problems.append(f"{path}: not written by any stage of the build (no stamp records it)")
    for path in sorted(p for p in build_dir.rglob("*") if p.is_symlink()):
        problems.append(f"{path}: a symbolic link (to {os.readlink(path)}); a build writes only "
                        "files and folders: remove it and rebuild (invoke convert --force)")
    if not stamped and not listed:
        problems.append(f"{build_dir}: holds no artifact: run invoke convert first")
    return len(stamped), problems


def _check_output(build_dir: Path, relative: str, stamp: dict[str, Any] | None,
                  listed: dict[str, Any] | None) -> list[str]:
    path = build_dir / relative
    problems = []
    if stamp is None or listed is None:
        where = "the manifest but no stamp" if stamp is None else "a stamp but not the manifest"
        problems.append(f"{path}: recorded in {where}: the build folder was changed by hand")
    elif stamp["sha256"] != listed["sha256"]:
        problems.append(f"{path}: the manifest's sha256 differs from its stage's stamp")
    expected = (stamp or listed or {})["sha256"]
    if not path.exists():
        problems.append(f"{path}: missing (expected sha256 {expected[:12]}…)")
    elif (actual := sha256_tree(path)) != expected:
        problems.append(f"{path}: sha256 {actual[:12]}… differs from the recorded {expected[:12]}…")
    return problems


# What a build writes besides stage outputs: bookkeeping, not artifacts.
BOOKKEEPING = frozenset({MANIFEST, BUILD_MARKER, STAMP_DIR, ".jobs", ".staging"})


def _unrecorded_files(build_dir: Path, stamped: dict[str, Any]) -> list[Path]:
    covered = [build_dir / relative for relative in stamped]
    found = []
    for path in build_dir.rglob("*"):
        relative = path.relative_to(build_dir)
        if relative.parts[0] in BOOKKEEPING or path.is_dir():
            continue
        if not any(path == c or c in path.parents for c in covered):
            found.append(path)
    return found


def is_model_build_dir(path: Path) -> bool:
    """True for a model build folder a build wrote (its marker, or stamps and a manifest)."""
    if path.is_symlink() or not path.is_dir():
        return False
    return (path / BUILD_MARKER).is_file() or (
        (path / STAMP_DIR).is_dir() and (path / MANIFEST).is_file())


def iso_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


@contextmanager
def _flock(path: Path, blocking: bool) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        flags = fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB)
        try:
            fcntl.flock(handle, flags)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def build_lock(out_dir: Path, wait: bool = True) -> Iterator[None]:
    """Hold ``<out>/.lock`` for a whole build: a second build waits (saying so) or fails."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lock_file = out_dir / LOCK_FILE
    with lock_file.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_file.read_text().strip() or "another process"
            if not wait:
                raise LockError(
                    f"{out_dir} is locked by a running build ({holder}); wait for it to finish "
                    "or use another --out directory"
                ) from None
            console.info(f"waiting for the build that holds {lock_file} ({holder}) to finish…")
            fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)
