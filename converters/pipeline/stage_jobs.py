"""A job: stages one stage process runs in order, and its job file.

The build (converters/pipeline/build.py) groups stale stages into jobs and runs them here or hands them
to an executor (converters/distributed/): both write the same job document and run it in a
stage process (local or in a toolchain image) through :func:`run_job_document`. One job at a
time on the local runner, consecutive jobs share one stage process
(:func:`run_jobs_in_one_process`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from converters import console
from converters.errors import BuildError, error_class
from converters.fsutil import read_json, remove
from converters.pipeline.executor import PARENT_SHOWS_ERRORS, error_file
from converters.pipeline.plan import ModelPlan
from converters.processes import run_streaming
from converters.runners import StageRunner
from converters.runners.local import LocalRunner
from converters.stages.base import StageSpec

JOBS_DIR = ".jobs"


@dataclass(eq=False)  # identity semantics: a job is one scheduled process
class Job:
    """Stages one process runs, in order; it starts once the jobs in ``needs`` succeeded."""

    plan: ModelPlan
    name: str
    image: str
    specs: list[StageSpec]
    needs: list[Job] = field(default_factory=list)


def job_document(plan: ModelPlan, image: str, runner: StageRunner,
                 specs: list[StageSpec]) -> dict[str, Any]:
    """The job file's content (run here or on a Ray worker). ``contain_failures``: a failed
    stage of one target's variant (a grouped stage) is recorded and the job goes on with the
    stages that do not need it."""
    return {
        "model_name": plan.stem,
        "image": image,
        "model_path": str(plan.model_path.resolve()),
        "dataset_dir": str(plan.dataset_dir.resolve()),
        "build_dir": str(plan.build_dir.resolve()),
        "runner": runner.name,
        "threads": plan.threads,
        "contain_failures": True,
        "stages": [{"spec": s.to_dict(), "key": plan.keys[s.name], "deps": plan.dep_keys(s),
                    "environment": plan.environments[s.name]} for s in specs],
    }


def run_job_process(job: Job, runner: StageRunner) -> None:
    """Run ``job`` in its stage process (local or docker) from its job file in the build folder."""
    document = job_document(job.plan, job.image, runner, job.specs)
    run_job_document(document, job_file(job), runner)


def run_jobs_in_one_process(jobs: list[Job], runner: LocalRunner) -> None:
    """Run ``jobs`` one after the other in one local stage process (TensorFlow imported once),
    as one-at-a-time separate processes would: it stops at the first that fails, whose error
    is raised."""
    documents = [job_document(job.plan, job.image, runner, job.specs) for job in jobs]
    paths = [job_file(job) for job in jobs]
    run_job_documents(documents, paths, runner.command_for_jobs(paths), runner)


def job_file(job: Job) -> Path:
    return job.plan.build_dir / JOBS_DIR / f"{job.name}.json"


def run_job_document(document: dict[str, Any], job_path: Path, runner: StageRunner) -> None:
    """Write the job file, run it in its stage process, raise its error."""
    run_job_documents([document], [job_path], runner.command(job_path, document), runner)


def run_job_documents(documents: list[dict[str, Any]], job_paths: list[Path], argv: list[str],
                      runner: StageRunner) -> None:
    """Write the job files, run the stage process ``argv`` that runs them in order, raise the
    error of the one that failed (after a failure the build drops every job file)."""
    for document, job_path in zip(documents, job_paths, strict=True):
        job_path.parent.mkdir(parents=True, exist_ok=True)
        job_path.write_text(json.dumps(document, indent=2))
    env = {**os.environ, PARENT_SHOWS_ERRORS: "1"}
    if console.standard().is_terminal:
        env[console.FORCE_TERMINAL] = "1"
    try:
        exit_code, tail = run_streaming(argv, env=env)
    finally:
        for document, job_path in zip(documents, job_paths, strict=True):
            runner.finish(job_path, document)
    if exit_code == 0:
        for job_path in job_paths:
            remove(job_path)
        return
    failed = next((index for index, job_path in enumerate(job_paths)
                   if error_file(job_path).exists()), None)
    if failed is not None:
        raise_job_error(documents[failed], job_paths[failed], exit_code, argv, tail)
    models = ", ".join(dict.fromkeys(str(document["model_name"]) for document in documents))
    raise_job_error({**documents[0], "model_name": models}, job_paths[0], exit_code, argv, tail)


def raise_job_error(document: dict[str, Any], job_path: Path, exit_code: int, argv: list[str],
                    tail: list[str]) -> None:
    """The error of the job that failed: the user error its stage process left, else what the
    process printed last."""
    failure = error_file(job_path)
    if failure.exists():
        detail = read_json(failure)
        if detail["type"] != "InternalError":
            raise error_class(detail["type"])(detail["message"])
    log = "\n".join(f"  | {line}" for line in tail)
    raise BuildError(
        f"the {document['image']} stage process for {document['model_name']} failed with exit "
        f"code {exit_code}.\n"
        f"command: {' '.join(argv)}\nlast lines of its log:\n{log}"
    )
