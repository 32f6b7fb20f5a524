"""Run a job file: the stages one runner process executes, in order, each atomically.

Used identically by the local runner (a child Python process) and inside containers. A stage
writes into a staging folder; only when it succeeds are its outputs moved into the build
directory and its stamp written. A user error is written to ``<job>.error.json`` so the parent
can show it as it is, and the process exits non-zero.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from converters import console, imports
from converters.cache import stage_cache
from converters.errors import (
    BuildError,
    ConverterError,
    filesystem_error,
    wrapped_filesystem_error,
)
from converters.fsutil import remove, replace, write_json_atomic
from converters.stages import StageContext, StageSpec, stage_function
from converters.stages.base import StageNotNeeded, StageSkipped

STAGING = ".staging"
# Set by a parent build that reads the error file and shows the message itself.
PARENT_SHOWS_ERRORS = "CONVERTERS_PARENT_SHOWS_ERRORS"


def error_file(job_path: Path) -> Path:
    return job_path.with_suffix(".error.json")


def run_job_files(job_paths: list[Path]) -> int:
    """Run job files one after the other in this process (TensorFlow is imported once for all
    of them); stop at the first that fails and return its exit code."""
    for index, job_path in enumerate(job_paths):
        if index:
            forget_previous_job()
        if (exit_code := run_job_file(job_path)) != 0:
            return exit_code
    return 0


def forget_previous_job() -> None:
    """Let go of what the previous job's stages kept for the next stage (its loaded model and
    splits), so that the process holds one model's data at a time."""
    import gc

    from converters.inputs import model
    from converters.stages import data

    model.forget_loaded()
    data.forget_splits()
    gc.collect()


def run_job_file(job_path: Path) -> int:
    job = json.loads(job_path.read_text())
    try:
        try:
            run_job(job)
        except OSError as error:  # disk full, read-only: a message, not a traceback
            raise filesystem_error(error) from None
        except Exception as error:  # a library's error wrapping a full or read-only disk
            if (problem := wrapped_filesystem_error(error)) is None:
                raise
            raise problem from None
    except ConverterError as error:
        shown_by_parent = _write_error(job_path, type(error).__name__, str(error))
        if not (shown_by_parent and os.environ.get(PARENT_SHOWS_ERRORS)):
            console.error(str(error))
        return error.exit_code
    except Exception:
        _write_error(job_path, "InternalError", traceback.format_exc())
        raise
    return 0


def _write_error(job_path: Path, kind: str, message: str) -> bool:
    """Leave the error for the parent; False when even that cannot be written (disk full)."""
    try:
        write_json_atomic(error_file(job_path), {"type": kind, "message": message})
    except OSError:
        return False
    return True


def run_job(job: dict[str, Any]) -> None:
    build_dir = Path(job["build_dir"])
    # TensorFlow reads its thread pools' sizes once, when it starts: set them before any stage.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(job["threads"]))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(job["threads"]))
    specs = [StageSpec.from_dict(entry["spec"]) for entry in job["stages"]]
    if any("tensorflow" in spec.tools for spec in specs):
        import_tensorflow_quietly()
    contain = bool(job.get("contain_failures"))
    for spec, entry in zip(specs, job["stages"], strict=True):
        upstream = next((dep for dep in spec.deps if dep not in spec.optional_deps
                         and stage_cache.read_failure(build_dir, dep)), None) if contain else None
        if upstream is not None:
            record_failure(build_dir, spec, f"not run: stage {root_failure(build_dir, upstream)} "
                                            "failed", upstream)
            continue
        try:
            run_stage(spec, entry["key"], entry["environment"], entry["deps"], job, build_dir)
        except ConverterError as error:
            if not (contain and spec.group):  # a model-wide stage: its failure stops the build
                raise
            console.error(f"{job['model_name']}: {spec.name} failed: {error}")  # one variant
            record_failure(build_dir, spec, str(error), None)
        release_freed_memory()


def release_freed_memory() -> None:
    """Hand the heap memory the last stage freed back to the system (glibc's ``malloc_trim``).
    glibc keeps freed memory for the process's later allocations, so each stage's transient
    arrays, graphs and interpreters would stay in the stage process's resident memory for the
    rest of the job, and the next stage's own peak would come on top (with the job's other
    memory measures, a default build of MobileNetV2 224x224 peaks at 1339 MiB instead of 1549:
    ``benchmarks/default_vs_converter_runs.out.md``). Nothing happens on a C library without
    ``malloc_trim`` (musl, macOS)."""
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def root_failure(build_dir: Path, stage: str) -> str:
    """The stage whose own failure ``stage``'s failure comes from (itself when it failed)."""
    failure = stage_cache.read_failure(build_dir, stage)
    while failure is not None and failure.get("upstream"):
        stage = failure["upstream"]
        failure = stage_cache.read_failure(build_dir, stage)
    return stage


def record_failure(build_dir: Path, spec: StageSpec, reason: str, upstream: str | None) -> None:
    """Leave no output of ``spec`` (nor its stamp, so the next build runs it again) and say why
    it has none; the report lists its artifact as failed and the build exits non-zero."""
    remove(build_dir / STAGING / spec.name)
    for relative in spec.outputs:
        remove(build_dir / relative)
    stage_cache.remove_stamp(build_dir, spec.name)
    stage_cache.write_failure(build_dir, spec, reason, upstream)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow once, without the informational lines its C++ code prints on import,
    and silence the deprecation of ``tf.lite.Interpreter``, which TF's own int8 calibration
    still uses internally (this package runs LiteRT's interpreter): not the user's to act on.

    Keras imports matplotlib.pyplot when TensorFlow loads, for its plotting utilities, and goes
    on without them when it cannot (0.55 s of the 3.3 s import on a 2-core EPYC). No stage plots
    through Keras, so matplotlib stays hidden during the import; a later ``import matplotlib``
    works as usual."""
    warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated",
                            category=UserWarning)
    with imports.refused("matplotlib"), console.native_noise_filtered():
        import tensorflow  # noqa: F401


def upstream_skip(build_dir: Path, spec: StageSpec) -> tuple[str | None, bool]:
    """Why one of ``spec``'s upstream stages did not run here (None when all ran), and whether
    that was because its work was not needed."""
    for dep in spec.deps:
        stamp = stage_cache.read_stamp(build_dir, dep)
        if stamp is not None and stamp.get("skipped"):
            return str(stamp["skipped"]), bool(stamp.get("not_needed"))
    return None, False


def run_stage(spec: StageSpec, key: str, environment: dict[str, str], dep_keys: dict[str, str],
              job: dict[str, Any], build_dir: Path) -> None:
    console.info(f"▶ {job['model_name']}: {spec.name}")
    started = time.time()
    stage_cache.remove_stamp(build_dir, spec.name)
    stage_cache.remove_failure(build_dir, spec.name)
    staging = build_dir / STAGING / spec.name
    remove(staging)
    staging.mkdir(parents=True)
    context = StageContext(spec, Path(job["model_path"]), Path(job["dataset_dir"]), build_dir,
                           staging, *upstream_skip(build_dir, spec))
    skipped = None
    not_needed = False
    try:
        stage_function(spec.kind, spec.function)(context)
    except StageSkipped as cannot_run:
        skipped = cannot_run.reason
        not_needed = isinstance(cannot_run, StageNotNeeded)
    written = [relative for relative in spec.outputs if (staging / relative).exists()]
    missing = [relative for relative in spec.outputs if relative not in written]
    if missing and not not_needed:
        raise BuildError(f"stage {spec.name} finished without writing {', '.join(missing)}")
    for relative in written:
        target = build_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        replace(staging / relative, target)
    stage_cache.remove_unwritten(build_dir, spec, written)
    remove(staging)
    stage_cache.write_stamp(build_dir, spec, key, started, environment, job["runner"], dep_keys,
                      skipped, not_needed)
    took = (f"not needed: {skipped}" if not_needed else "skipped: it cannot run here" if skipped
            else f"{time.time() - started:.1f} s")
    console.info(f"✔ {job['model_name']}: {spec.name} ({took})")
