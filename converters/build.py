"""Orchestrate a build: plan every model, skip fresh stages, run stale ones through a runner.

Stages of one model that run in the same image go to one job (one process, one TensorFlow
import); jobs of different models run in parallel up to ``-j``. Host stages (the report) run
in this process. The build directory is locked for the whole build.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from converters import cache, console
from converters.config import ConvertConfig, Runner
from converters.dataset import discover
from converters.errors import BuildError, error_class
from converters.executor import PARENT_SHOWS_ERRORS, STAGING, error_file, run_stage
from converters.fsutil import read_json, remove, remove_stale_temporaries
from converters.model import check_model_path
from converters.plan import HOST, ModelPlan, plan_model
from converters.runners import StageRunner, run_streaming
from converters.runners.local import LocalRunner
from converters.stages.base import StageSpec

JOBS_DIR = ".jobs"


@dataclass(frozen=True)
class BuildResult:
    plans: tuple[ModelPlan, ...]
    ran: dict[str, list[str]]  # model stem → stages that ran
    skipped: dict[str, list[str]]  # model stem → stages that were fresh


def make_runner(runner: Runner) -> StageRunner:
    return LocalRunner()


def check_inputs(config: ConvertConfig) -> None:
    """Fail on bad paths before anything is written or TensorFlow is imported."""
    for model_path in config.models:
        check_model_path(model_path)
    discover(config.dataset.path)


def convert(config: ConvertConfig, command_line: list[str]) -> BuildResult:
    check_inputs(config)
    runner = make_runner(config.runner)
    with cache.build_lock(config.out):
        plans = tuple(plan_model(config, path, runner) for path in config.models)
        started = time.time()
        jobs: list[tuple[ModelPlan, str, list[StageSpec]]] = []
        host_stages: dict[str, list[StageSpec]] = {}
        ran: dict[str, list[str]] = {}
        skipped: dict[str, list[str]] = {}
        for plan in plans:
            prepare_build_dir(plan, runner, command_line, started)
            stale = [s for s in plan.stages
                     if config.force or not cache.is_fresh(plan.build_dir, s, plan.keys[s.name])]
            ran[plan.stem] = [s.name for s in stale]
            skipped[plan.stem] = [s.name for s in plan.stages if s not in stale]
            for name in skipped[plan.stem]:
                console.info(f"· {plan.stem}: {name} is up to date (key {plan.keys[name][:12]})")
            by_image: dict[str, list[StageSpec]] = {}
            for spec in stale:
                by_image.setdefault(spec.image, []).append(spec)
            host_stages[plan.stem] = by_image.pop(HOST, [])
            jobs += [(plan, image, specs) for image, specs in by_image.items()]
        run_jobs(jobs, runner, config.jobs)
        for plan in plans:
            for spec in host_stages[plan.stem]:
                run_stage(spec, plan.keys[spec.name], plan.environments[spec.name],
                          job_document(plan, runner, []), plan.build_dir)
            finish_build_info(plan, time.time())
    return BuildResult(plans, ran, skipped)


def prepare_build_dir(plan: ModelPlan, runner: StageRunner, command_line: list[str],
                      started: float) -> None:
    """Clear what a killed build may have left, and record this build's provenance."""
    remove(plan.build_dir / STAGING)
    remove(plan.build_dir / JOBS_DIR)
    remove_stale_temporaries(plan.build_dir)
    cache.write_build_info(plan.build_dir, {
        "model": plan.stem,
        "command": command_line,
        "runner": runner.name,
        "started": cache.iso_time(started),
        "finished": None,
        "inputs": {
            "model": {"path": str(plan.model_path), "sha256": plan.input_hashes["model"]},
            "dataset": {"path": str(plan.dataset_dir), "sha256": plan.input_hashes["dataset"]},
        },
    })
    cache.write_manifest(plan.build_dir)


def finish_build_info(plan: ModelPlan, finished: float) -> None:
    remove(plan.build_dir / STAGING)
    info_path = plan.build_dir / cache.STAMP_DIR / cache.BUILD_INFO
    info = read_json(info_path)
    info["finished"] = cache.iso_time(finished)
    cache.write_build_info(plan.build_dir, info)
    cache.write_manifest(plan.build_dir)


def job_document(plan: ModelPlan, runner: StageRunner, specs: list[StageSpec]) -> dict[str, Any]:
    return {
        "model_name": plan.stem,
        "model_path": str(plan.model_path.resolve()),
        "dataset_dir": str(plan.dataset_dir.resolve()),
        "build_dir": str(plan.build_dir.resolve()),
        "runner": runner.name,
        "threads": plan.threads,
        "stages": [{"spec": s.to_dict(), "key": plan.keys[s.name],
                    "environment": plan.environments[s.name]} for s in specs],
    }


def run_jobs(jobs: list[tuple[ModelPlan, str, list[StageSpec]]], runner: StageRunner,
             parallel: int) -> None:
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(run_job, plan, image, specs, runner) for plan, image, specs in jobs]
        failures = [error for f in futures if (error := f.exception()) is not None]
    for failure in failures[1:]:
        console.error(str(failure))
    if failures:
        raise failures[0]


def run_job(plan: ModelPlan, image: str, specs: list[StageSpec], runner: StageRunner) -> None:
    job_dir = plan.build_dir / JOBS_DIR
    job_dir.mkdir(parents=True, exist_ok=True)
    job_path = job_dir / f"{image}.json"
    job_path.write_text(json.dumps(job_document(plan, runner, specs), indent=2))
    argv = runner.command(job_path)
    env = {**os.environ, PARENT_SHOWS_ERRORS: "1"}
    if console.console.is_terminal:
        env[console.FORCE_TERMINAL] = "1"
    exit_code, tail = run_streaming(argv, env=env)
    if exit_code == 0:
        remove(job_path)
        return
    failure = error_file(job_path)
    if failure.exists():
        detail = read_json(failure)
        if detail["type"] != "InternalError":
            raise error_class(detail["type"])(detail["message"])
    log = "\n".join(f"  | {line}" for line in tail)
    raise BuildError(
        f"the {image} stage process for {plan.stem} failed with exit code {exit_code}.\n"
        f"command: {' '.join(argv)}\nlast lines of its log:\n{log}"
    )
