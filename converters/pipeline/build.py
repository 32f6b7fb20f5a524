"""Orchestrate a build: plan every model, skip fresh stages, run stale ones through a runner.

Stages of one model that run in the same image go to one job (one process, one TensorFlow
import); jobs of different models run in parallel up to ``-j``. Host stages (the report) run
in this process. The build directory is locked for the whole build.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from converters import console
from converters.cache import stage_cache
from converters.config import ConvertConfig, Executor
from converters.errors import ConfigError, ConverterError
from converters.fsutil import read_json, remove, remove_stale_temporaries, sha256_tree
from converters.inputs.dataset import check_source
from converters.inputs.model_files import check_model_path
from converters.pipeline.executor import STAGING, record_failure, run_stage
from converters.pipeline.plan import HOST, ModelPlan, plan_model, stage_images
from converters.pipeline.shared_cache import SharedCache, open_shared_cache
from converters.pipeline.stage_jobs import (
    JOBS_DIR,
    Job,
    job_document,
    run_job_process,
    run_jobs_in_one_process,
)
from converters.processes import stop_running_processes
from converters.reporting import report
from converters.runners import StageRunner
from converters.runners.local import LocalRunner
from converters.runners.select import select_runners
from converters.stages.base import StageSpec
from converters.targets import check_config, planned

if TYPE_CHECKING:
    from converters.devices.probe import ProbeOutcome


@dataclass(frozen=True)
class BuildResult:
    plans: tuple[ModelPlan, ...]
    ran: dict[str, list[str]]  # model stem → stages that ran
    skipped: dict[str, list[str]]  # model stem → stages that were fresh
    # Why the build, although finished and reported, must exit non-zero (a compiler that did
    # not run, too few ops on the Edge TPU).
    problems: tuple[str, ...] = ()
    restored: dict[str, list[str]] = field(default_factory=dict)  # from the shared cache (--cache-dir)


def make_runners(config: ConvertConfig) -> dict[str, StageRunner]:
    """Image → runner; host stages always run in this process's environment."""
    runners = select_runners(config.runner, stage_images(config) - {HOST}, config.out, config.volume)
    return {**runners, HOST: LocalRunner()}


def check_inputs(config: ConvertConfig) -> None:
    """Fail on bad paths, or a configuration a target refuses, before anything is written or
    TensorFlow is imported."""
    check_config(config)
    for model_path in config.models:
        check_model_path(model_path)
    check_source(config.dataset.path, config.dataset.max_array_mb)
    out, dataset = config.out.resolve(), config.dataset.path.resolve()
    if out == dataset or dataset in out.parents:
        raise ConfigError(f"--out {config.out} is inside --dataset {config.dataset.path}: every "
                          "build would change the dataset it hashes. Pick a build folder outside it")


def shared_cache(config: ConvertConfig) -> SharedCache | None:
    """The ``--cache-dir`` cache with its signing and checking keys, checked (and the keys
    read) before anything runs; None without a cache."""
    if config.cache_dir is None:
        return None
    from converters.bundles.signing import load_signing_key, public_key_check, sign

    signer = check = None
    if config.cache_sign_key is not None:
        private_key = load_signing_key(config.cache_sign_key)
        signer = functools.partial(sign, private_key)
    if config.cache_public_key is not None:
        check = public_key_check(config.cache_public_key)
    return open_shared_cache(config.cache_dir, signer, check)


def probe_devices(config: ConvertConfig) -> tuple[ProbeOutcome, ...]:
    """The --device devices, probed in parallel (their identity enters the device stages' keys);
    one that cannot be reached is reported by its stages, and the build goes on."""
    if not config.devices:
        return ()
    from converters.devices import require_paramiko
    from converters.devices.probe import probe_devices as probe

    require_paramiko()  # before anything is built
    outcomes = probe(config.devices, config.device_timeout, config.accept_new_host_key,
                     config.device_cache)
    for outcome in outcomes:
        if outcome.facts is not None:
            facts = outcome.facts
            console.info(f"device {outcome.name}: {facts.arch}, {facts.os}, Python {facts.python}, "
                         f"host key {facts.host_key}")
        else:
            console.error(f"{outcome.problem}")
    return outcomes


def convert(config: ConvertConfig, command_line: list[str]) -> BuildResult:
    check_inputs(config)
    shared = shared_cache(config)
    runners = make_runners(config)
    devices = probe_devices(config)
    out_existed = config.out.exists()
    try:
        with stage_cache.build_lock(config.out):
            plans, ran, skipped, restored = _build(config, runners, command_line, shared, devices)
    finally:
        if not out_existed:
            remove_if_only_lock(config.out)
    problems: list[str] = []
    for plan in plans:
        built = read_json(plan.build_dir / report.REPORT_JSON)
        problems += [f"{plan.stem}: {a['path']} failed validation: {a['failed']}"
                     for a in report.failed(built)]
        problems += skipped_stages(plan)
        problems += failed_stages(plan)
        for target in planned(config.targets):
            problems += target.problems(plan.build_dir, config)
    return BuildResult(plans, ran, skipped, tuple(across_models(problems, plans)), restored)


def across_models(problems: list[str], plans: tuple[ModelPlan, ...]) -> list[str]:
    """One line per problem for every model it hit ("a, b: ..."): seven models without the
    Edge TPU compiler give one line that says how to get it, not seven."""
    models: dict[str, list[str]] = {}
    for problem in problems:
        stem = next((plan.stem for plan in plans if problem.startswith(f"{plan.stem}: ")), None)
        text = problem if stem is None else problem.removeprefix(f"{stem}: ")
        models.setdefault(text, [])
        if stem is not None:
            models[text].append(stem)
    return [f"{', '.join(stems)}: {text}" if stems else text for text, stems in models.items()]


def failed_stages(plan: ModelPlan) -> list[str]:
    """The planned stages that failed (not those that only did not run because of one): the
    build finished and reported the rest, and must exit non-zero."""
    failures = [stage_cache.read_failure(plan.build_dir, spec.name) for spec in plan.stages]
    by_reason: dict[str, list[str]] = {}  # one line per reason (a device down fails every run)
    for failure in failures:
        if failure is not None and failure["upstream"] is None:
            by_reason.setdefault(failure["reason"], []).append(failure["stage"])
    return [f"{plan.stem}: {', '.join(stages)} failed: {reason}"
            for reason, stages in by_reason.items()]


def skipped_stages(plan: ModelPlan) -> list[str]:
    """The planned stages that could not run here (their stamps say "skipped", not "not
    needed"), one line per reason: the build finished and reported, and must still exit
    non-zero."""
    by_reason: dict[str, list[str]] = {}
    for spec in plan.stages:
        stamp = stage_cache.read_stamp(plan.build_dir, spec.name)
        if stamp is not None and stamp.get("skipped") and not stamp.get("not_needed"):
            names = by_reason.setdefault(stamp["skipped"], [])
            if not any(dep in names for dep in spec.deps):  # not one skipped only for its input
                names.append(spec.name)
    return [f"{plan.stem}: {', '.join(names)} did not run here: {reason}"
            for reason, names in by_reason.items()]


def _build(config: ConvertConfig, runners: dict[str, StageRunner], command_line: list[str],
           shared: SharedCache | None, devices: tuple[ProbeOutcome, ...] = (),
           ) -> tuple[tuple[ModelPlan, ...], dict[str, list[str]], dict[str, list[str]],
                      dict[str, list[str]]]:
    """Plan, skip the fresh, run the stale; the caller holds the build folder's lock."""
    for runner in {id(r): r for r in runners.values()}.values():
        runner.prepare()
    dataset_hash = sha256_tree(config.dataset.path)  # every model shares the dataset
    plans = tuple(plan_model(config, path, runners, dataset_hash, devices)
                  for path in config.models)
    started = time.time()
    jobs: list[Job] = []
    host_stages: dict[str, list[StageSpec]] = {}
    stage_process_work: dict[str, list[StageSpec]] = {}
    ran: dict[str, list[str]] = {}
    skipped: dict[str, list[str]] = {}
    restored: dict[str, list[str]] = {}
    new_dirs = {plan.stem for plan in plans if not plan.build_dir.exists()}
    for plan in plans:
        failed_before = any(stage_cache.read_failure(plan.build_dir, s.name) for s in plan.stages)
        stale = [s for s in plan.stages
                 if config.force or not stage_cache.is_fresh(plan.build_dir, s, plan.keys[s.name])
                 or (failed_before and s.kind == "report")]  # failed stages run again
        skipped[plan.stem] = [s.name for s in plan.stages if s not in stale]
        prepare_build_dir(plan, runners, command_line, started, [s.name for s in stale])
        for name in skipped[plan.stem]:
            console.info(f"· {plan.stem}: {name} is up to date (key {plan.keys[name][:12]})")
        # --force rebuilds: it never restores (CI compares a forced rebuild with the cache's bytes)
        restored[plan.stem] = shared.restore_stages(plan, stale) if shared and not config.force else []
        stale = [s for s in stale if s.name not in restored[plan.stem]]
        ran[plan.stem] = [s.name for s in stale]
        host_stages[plan.stem] = [s for s in stale if s.image == HOST]
        stage_process_work[plan.stem] = [s for s in stale if s.image != HOST]
    split = split_per_variant(config, sum(1 for specs in stage_process_work.values() if specs))
    for plan in plans:
        jobs += group_jobs(plan, stage_process_work[plan.stem], split)
    if jobs and any("matplotlib" in s.tools for specs in host_stages.values() for s in specs):
        threading.Thread(target=preload_plotting, name="preload-plotting").start()
    try:
        if config.executor is Executor.RAY:
            from converters.distributed.ray_executor import run_jobs_on_ray

            run_jobs_on_ray(jobs, runners, config)
        else:
            run_jobs(jobs, runners, config.jobs)
        for plan in plans:
            run_host_stages(plan, host_stages[plan.stem], runners[HOST])
    except BaseException:
        for plan in plans:
            discard_failed_build(plan, created=plan.stem in new_dirs)
        raise
    for plan in plans:
        finish_build_info(plan, time.time())
        if shared is not None:
            shared.store_build(plan)
    return plans, ran, skipped, restored


def preload_plotting() -> None:
    """Import the report's plotting library while the stage processes run (a stage process
    leaves the second core mostly idle), so the report stage does not wait for it. A failed
    import is the report stage's to report: it imports again and meets the same error."""
    with contextlib.suppress(Exception):
        report.import_plotting()


def run_host_stages(plan: ModelPlan, specs: list[StageSpec], runner: StageRunner) -> None:
    """The stale host stages of one model: the device runs first, each device's in turn and the
    devices in parallel (a failed one is recorded, as a failed variant is: the rest goes on and
    the build exits non-zero), then the rest (the report) in order."""
    document = job_document(plan, HOST, runner, [])
    by_device: dict[str, list[StageSpec]] = {}
    for spec in specs:
        if spec.kind == "device-run":
            by_device.setdefault(spec.outputs[0].split("/")[1], []).append(spec)

    def run_device(device_specs: list[StageSpec]) -> None:
        for spec in device_specs:
            upstream = next((dep for dep in spec.deps
                             if stage_cache.read_failure(plan.build_dir, dep)), None)
            if upstream is not None:
                record_failure(plan.build_dir, spec, f"not run: stage {upstream} failed", upstream)
                continue
            try:
                run_stage(spec, plan.keys[spec.name], plan.environments[spec.name],
                          plan.dep_keys(spec), document, plan.build_dir)
            except ConverterError as error:
                console.error(f"{plan.stem}: {spec.name} failed: {error}")
                record_failure(plan.build_dir, spec, str(error), None)

    if by_device:
        with ThreadPoolExecutor(max_workers=len(by_device)) as pool:
            list(pool.map(run_device, by_device.values()))
    for spec in specs:
        if spec.kind != "device-run":
            run_stage(spec, plan.keys[spec.name], plan.environments[spec.name],
                      plan.dep_keys(spec), document, plan.build_dir)


def prepare_build_dir(plan: ModelPlan, runners: dict[str, StageRunner], command_line: list[str],
                      started: float, stale: list[str]) -> None:
    """Clear what a killed build may have left, and record this build's provenance.

    Until the build finishes, the manifest says ``complete: false`` and names the stale stages:
    it must never pair these inputs with artifacts built from other inputs.
    """
    plan.build_dir.mkdir(parents=True, exist_ok=True)
    (plan.build_dir / stage_cache.BUILD_MARKER).touch()
    remove(plan.build_dir / STAGING)
    remove(plan.build_dir / JOBS_DIR)
    remove_stale_temporaries(plan.build_dir)
    stage_cache.write_build_info(plan.build_dir, {
        "model": plan.stem,
        "command": command_line,
        "runners": {image: runner.name for image, runner in sorted(runners.items())},
        "started": stage_cache.iso_time(started),
        "finished": None,
        "complete": not stale,
        "stale_stages": stale,
        "inputs": {
            "model": {"path": str(plan.model_path), "sha256": plan.input_hashes["model"]},
            "dataset": {"path": str(plan.dataset_dir), "sha256": plan.input_hashes["dataset"]},
        },
    })
    stage_cache.write_manifest(plan.build_dir)


def finish_build_info(plan: ModelPlan, finished: float) -> None:
    remove(plan.build_dir / STAGING)
    info_path = plan.build_dir / stage_cache.STAMP_DIR / stage_cache.BUILD_INFO
    info = read_json(info_path)
    info |= {"finished": stage_cache.iso_time(finished), "complete": True, "stale_stages": []}
    stage_cache.write_build_info(plan.build_dir, info)
    stage_cache.write_manifest(plan.build_dir)


def discard_failed_build(plan: ModelPlan, created: bool) -> None:
    """After a failure: drop job files and staging; a folder this build created and in which
    no stage finished is removed whole (a rejected model leaves nothing behind)."""
    remove(plan.build_dir / STAGING)
    remove(plan.build_dir / JOBS_DIR)
    finished_any = any(p.name != stage_cache.BUILD_INFO
                       for p in (plan.build_dir / stage_cache.STAMP_DIR).glob("*.json"))
    if created and not finished_any:
        remove(plan.build_dir)


def remove_if_only_lock(out: Path) -> None:
    """Remove a build folder this command created when nothing but its lock is in it."""
    if out.is_dir() and all(p.name == stage_cache.LOCK_FILE for p in out.iterdir()):
        remove(out)


def split_per_variant(config: ConvertConfig, models: int) -> bool:
    """Whether each target variant's stages get their own job (and stage process). Every stage
    process imports TensorFlow (3 s of CPU here), so locally the models fill the -j slots
    first, one process each; variants are split only when slots are left over (on 2 cores,
    -j 2 over two models: 27.9 s split per variant against 17.3 s for -j 1,
    benchmarks/jobs_auto.py). On Ray the variants are what spreads a model over the nodes."""
    if config.executor is Executor.RAY:
        return config.jobs > 1
    return config.jobs > models


def group_jobs(plan: ModelPlan, stale: list[StageSpec], split_groups: bool) -> list[Job]:
    """One job per image (one TensorFlow import for all modes), or per stage group with -j > 1.

    A job needs every other job that holds one of its stages' upstream stages.
    """
    jobs: dict[tuple[str, str], Job] = {}
    owner: dict[str, Job] = {}
    for spec in stale:  # stages are in dependency order
        group = spec.group if split_groups else ""
        job = jobs.get((spec.image, group))
        if job is None:
            name = f"{spec.image}-{group}" if group else spec.image
            job = jobs[(spec.image, group)] = Job(plan, name, spec.image, [])
        job.specs.append(spec)
        owner[spec.name] = job
        for dep in spec.deps:
            upstream = owner.get(dep)
            if upstream is not None and upstream is not job and upstream not in job.needs:
                job.needs.append(upstream)
    for job in jobs.values():
        job.specs = validations_last(job.specs)
    return list(jobs.values())


def validations_last(specs: list[StageSpec]) -> list[StageSpec]:
    """``specs`` in an order that meets their needs, with every validation as late as its
    dependents allow: a validation loads runtimes and clients (LiteRT, MediaPipe) that stay in
    the stage process, about 190 MiB for MobileNetV2 224x224, so conversions that run before any
    validation peak that much lower (the int8 calibration is the job's peak)."""
    names = {spec.name for spec in specs}
    done: set[str] = set()
    ordered: list[StageSpec] = []
    pending = list(specs)
    while pending:
        ready = [s for s in pending if all(d in done or d not in names for d in s.deps)]
        spec = next((s for s in ready if s.kind != "validate"), ready[0])
        pending.remove(spec)
        done.add(spec.name)
        ordered.append(spec)
    return ordered


def run_jobs(jobs: list[Job], runners: dict[str, StageRunner], parallel: int) -> None:
    """Run jobs as their needs finish, at most ``parallel`` at once; stop starting on a failure."""
    if parallel == 1:
        run_jobs_one_at_a_time(jobs, runners)
        return
    done: set[Job] = set()
    pending = list(jobs)
    running: dict[Future[None], Job] = {}
    failures: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        try:
            while pending or running:
                if not failures:
                    for job in [j for j in pending if all(n in done for n in j.needs)]:
                        if len(running) >= parallel:
                            break
                        pending.remove(job)
                        running[pool.submit(run_job_process, job, runners[job.image])] = job
                if not running:
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = running.pop(future)
                    if (error := future.exception()) is not None:
                        failures.append(error)
                    else:
                        done.add(job)
        except KeyboardInterrupt:
            stop_running_processes()  # workers then return and runners clean up
            raise
    for failure in failures[1:]:
        console.error(str(failure))
    if failures:
        raise failures[0]


def run_jobs_one_at_a_time(jobs: list[Job], runners: dict[str, StageRunner]) -> None:
    """Run jobs in an order that meets their needs, stopping at the first failure; jobs that
    follow one another on the local runner share one stage process (each stage process
    imports TensorFlow: about 3 s of CPU a process on a 2-core EPYC)."""
    for runner, batch in consecutive_by_runner(in_order_of_needs(jobs), runners):
        if isinstance(runner, LocalRunner):
            run_jobs_in_one_process(batch, runner)
        else:
            for job in batch:
                run_job_process(job, runner)


def in_order_of_needs(jobs: list[Job]) -> list[Job]:
    """``jobs`` in their order, each moved after the jobs it needs."""
    ordered: list[Job] = []
    pending = list(jobs)
    while pending:
        job = next(j for j in pending if all(n in ordered for n in j.needs))
        pending.remove(job)
        ordered.append(job)
    return ordered


def consecutive_by_runner(jobs: list[Job], runners: dict[str, StageRunner],
                          ) -> list[tuple[StageRunner, list[Job]]]:
    """Runs of consecutive jobs that the same runner runs."""
    batches: list[tuple[StageRunner, list[Job]]] = []
    for job in jobs:
        runner = runners[job.image]
        if batches and batches[-1][0] is runner:
            batches[-1][1].append(job)
        else:
            batches.append((runner, [job]))
    return batches
