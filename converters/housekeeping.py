"""``invoke verify`` and ``invoke clean``: check or remove what builds wrote."""

from __future__ import annotations

from pathlib import Path

from converters import cache, console
from converters.errors import ConfigError, VerifyError
from converters.fsutil import remove


def verify_build(out: Path) -> None:
    """Re-hash every artifact of every model under ``out`` against its manifest."""
    manifests = sorted(out.glob(f"*/{cache.MANIFEST}"))
    if not manifests:
        raise ConfigError(f"no manifest.json under {out}/: run invoke convert first")
    problems: list[str] = []
    for manifest in manifests:
        found = cache.verify_manifest(manifest.parent)
        problems += found
        count = len(cache.read_json(manifest).get("artifacts", {}))
        if not found:
            console.info(f"{manifest.parent}: {count} files match {manifest.name}")
    if problems:
        raise VerifyError("files differ from their manifest:\n  " + "\n  ".join(problems))


def clean_build(out: Path, dry_run: bool) -> None:
    """Remove every model build folder under ``out`` (and the lock), or list them."""
    if not out.exists():
        console.info(f"{out}/ does not exist: nothing to clean")
        return
    with cache.build_lock(out, wait=False):
        entries = sorted(p for p in out.iterdir() if p.name != ".lock")
        for entry in entries:
            console.info(f"{'would remove' if dry_run else 'removing'} {entry}")
            if not dry_run:
                remove(entry)
    if not dry_run:
        (out / ".lock").unlink(missing_ok=True)
        if not any(out.iterdir()):
            out.rmdir()
