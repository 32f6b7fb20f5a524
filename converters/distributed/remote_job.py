"""A job run away from the build folder (on a Ray worker): from archives of its inputs, in a
temporary folder, returning an archive of its outputs and stamps.

No shared filesystem is assumed: the model, the dataset and the upstream stages' outputs arrive
as archives (:mod:`converters.cache.tree_archive`), are unpacked into a temporary build folder laid out
as on the driver, and the job runs there exactly as a local job does
(:func:`converters.pipeline.stage_jobs.run_job_document`: a stage process, local or in a toolchain image).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from converters import console
from converters.cache import stage_cache
from converters.cache.tree_archive import extract_tree_archive, tree_archive_bytes
from converters.errors import ConfigError, ConverterError
from converters.fsutil import write_json_atomic
from converters.pipeline.stage_jobs import JOBS_DIR, run_job_document
from converters.runners import StageRunner
from converters.runners.docker import DockerRunner
from converters.runners.local import LocalRunner
from converters.stages.base import StageSpec


def path_archive(path: Path) -> bytes:
    """A model file or folder as an archive holding it under its own name."""
    return tree_archive_bytes(path.parent, [path.name])


def folder_archive(folder: Path) -> bytes:
    """Everything in ``folder`` (the dataset), without the folder's own name."""
    return tree_archive_bytes(folder, [p.name for p in folder.iterdir()])


def job_outputs(document: dict[str, Any], build_dir: Path) -> list[str]:
    """The files a finished job hands back from ``build_dir``: each stage's outputs and stamp,
    or, for a stage that failed or did not run because one failed, its failure record."""
    return [relative for entry in document["stages"]
            for relative in stage_cache.stage_files(build_dir, entry["spec"]["name"],
                                              entry["spec"]["outputs"])]


def run_job_from_archives(document: dict[str, Any], code: str, model_archive: bytes,
                          dataset_archive: bytes, upstream_archive: bytes) -> bytes:
    """Run the job ``document`` (written for the driver's paths) here; return the archive of
    :func:`job_outputs`. ``code`` is the driver's converters fingerprint: its stage keys hold it.
    A contained stage failure is part of that archive (a result, not an error for Ray to retry);
    ``upstream_archive`` carries the failure records of upstream stages that failed, so the
    stages that need them are recorded as not run, as in a local job."""
    if code != stage_cache.code_fingerprint():
        raise ConfigError("this Ray node runs other converters code than the build's driver: "
                          "install the same checkout or version on every node")
    with tempfile.TemporaryDirectory(prefix="tec-job-") as temporary:
        root = Path(temporary)
        model_path = root / "model" / Path(document["model_path"]).name
        extract_tree_archive(model_archive, model_path.parent)
        dataset_dir = root / "dataset"
        extract_tree_archive(dataset_archive, dataset_dir)
        build_dir = root / "build" / document["model_name"]
        extract_tree_archive(upstream_archive, build_dir)
        here = {**document, "model_path": str(model_path), "dataset_dir": str(dataset_dir),
                "build_dir": str(build_dir)}
        runner = worker_runner(document["runner"], build_dir.parent)
        for line in environment_differences(runner, document):
            console.warn(line)
        try:
            run_job_document(here, build_dir / JOBS_DIR / "job.json", runner)
        except ConverterError as error:
            raise type(error)(driver_paths(str(error), here, document)) from None
        for entry in document["stages"]:
            failure = stage_cache.read_failure(build_dir, entry["spec"]["name"])
            if failure is not None:
                write_json_atomic(stage_cache.failure_path(build_dir, failure["stage"]), {
                    **failure, "reason": driver_paths(failure["reason"], here, document)})
        return tree_archive_bytes(build_dir, job_outputs(document, build_dir))


def driver_paths(message: str, here: dict[str, Any], document: dict[str, Any]) -> str:
    """``message``, written here, naming the driver's model, dataset and build folder where it
    names their temporary copies on this node (a user finds the files it names)."""
    for name in ("build_dir", "model_path", "dataset_dir"):
        message = message.replace(here[name], document[name])
    return message


def worker_runner(name: str, out_dir: Path) -> StageRunner:
    """The runner the driver chose for the job's image, on this node."""
    return LocalRunner() if name == LocalRunner.name else DockerRunner(out_dir)


def environment_differences(runner: StageRunner, document: dict[str, Any]) -> list[str]:
    """Where this node's toolchain differs from the driver's, whose versions are in the keys."""
    lines = []
    for entry in document["stages"]:
        spec = StageSpec.from_dict(entry["spec"])
        here = runner.environment(spec)
        if here != entry["environment"]:
            lines.append(f"{spec.name}: this Ray node's toolchain {here} differs from the "
                         f"driver's {entry['environment']} (the stage key records the driver's)")
    return lines
