"""``invoke verify`` and ``invoke clean``: check or remove what builds wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters import console
from converters.cache import stage_cache
from converters.errors import ConfigError, VerifyError
from converters.fsutil import read_json, remove, sha256_tree
from converters.reporting.report import REPORT_JSON


def verify_build(out: Path) -> None:
    """Re-hash every artifact of every model under ``out`` against its manifest, and check the
    sha256 report.json gives each artifact against the manifest and the file."""
    manifests = sorted(out.glob(f"*/{stage_cache.MANIFEST}"))
    if not manifests:
        raise ConfigError(f"no manifest.json under {out}/: run invoke convert first")
    problems: list[str] = []
    for manifest in manifests:
        count, found = stage_cache.verify_build_dir(manifest.parent)
        found += report_problems(manifest.parent)
        problems += found
        if not found:
            console.info(f"{manifest.parent}: {count} files match {manifest.name} and the "
                         "stages' stamps")
    if problems:
        raise VerifyError("the build folder does not verify:\n  " + "\n  ".join(problems))


def report_problems(build_dir: Path) -> list[str]:
    """One line per artifact whose sha256 in report.json (what a user reads and deploys by)
    differs from the manifest's or from the file's; none when there is no report."""
    report_path = build_dir / REPORT_JSON
    if not report_path.is_file():
        return []
    listed: dict[str, Any] = read_json(build_dir / stage_cache.MANIFEST).get("artifacts", {})
    artifacts = read_json(report_path).get("artifacts")
    problems = []
    for artifact in artifacts if isinstance(artifacts, list) else []:
        if not isinstance(artifact, dict) or "sha256" not in artifact:
            continue  # an artifact not built here has no file
        relative, reported = str(artifact.get("path")), artifact["sha256"]
        path = build_dir / relative
        record = listed.get(relative)
        if build_dir.resolve() not in path.resolve().parents:
            problems.append(f"{REPORT_JSON} of {build_dir} lists {relative!r}, which is not in "
                            "the build folder: rebuild (invoke convert --force)")
            continue
        if not isinstance(record, dict):
            problems.append(f"{path}: listed in {REPORT_JSON} but not in the manifest")
        elif record.get("sha256") != reported:
            problems.append(f"{path}: {REPORT_JSON} records sha256 {str(reported)[:12]}…, the "
                            f"manifest {str(record.get('sha256'))[:12]}…: rebuild (invoke convert "
                            "--force)")
        readable = not path.is_symlink() and (path.is_file() or path.is_dir())  # links: flagged
        if readable and (actual := sha256_tree(path)) != reported:
            problems.append(f"{path}: sha256 {actual[:12]}… differs from the {str(reported)[:12]}… "
                            f"{REPORT_JSON} records")
    return problems


def clean_build(out: Path, dry_run: bool) -> None:
    """Remove the model build folders under ``out`` (and the lock), or list them.

    Only folders a build wrote are removed (see :func:`stage_cache.is_model_build_dir`); anything else
    in ``out`` is left alone and named. A folder holding no build at all is refused untouched.
    """
    if not out.exists():
        console.info(f"{out}/ does not exist: nothing to clean")
        return
    if not out.is_dir() or out.is_symlink():
        raise ConfigError(f"--out {out} is not a build folder: nothing was removed")
    entries = sorted(p for p in out.iterdir() if p.name != stage_cache.LOCK_FILE)
    builds = [entry for entry in entries if stage_cache.is_model_build_dir(entry)]
    if entries and not builds:
        raise ConfigError(
            f"{out} is not a build output folder: none of its {len(entries)} entries is a model "
            f"build folder (one with {stage_cache.BUILD_MARKER}, or .stages/ and manifest.json). "
            "Nothing was removed; pass the --out of a build (default: build)")
    with stage_cache.build_lock(out, wait=False):
        for entry in builds:
            console.info(f"{'would remove' if dry_run else 'removing'} {entry}")
            if not dry_run:
                remove(entry)
        for entry in entries:
            if entry not in builds:
                console.info(f"leaving {entry}: not written by a build")
    if not dry_run and not any(p.name != stage_cache.LOCK_FILE for p in out.iterdir()):
        (out / stage_cache.LOCK_FILE).unlink(missing_ok=True)
        out.rmdir()
