"""``--executor ray``: each job of the build graph runs as a Ray task.

The driver (this process) keeps what it keeps with the local executor: the plan, the stage keys,
skipping fresh stages, the stamps and the manifest. A task gets its inputs as archives (the
model, the dataset put once into the object store per content hash, the upstream stages'
outputs), runs the job in a temporary folder on its node (:mod:`remote_job`) and returns its
outputs and stamps as an archive, which the driver checks and places atomically
(:func:`converters.cache.stage_cache.place_stage`), recording the node that ran each stage.

Failures are contained as with the local executor: a failed stage of one target's variant comes
back as its failure record (``.stages/<stage>.failure``), which the driver records in the build
folder; the jobs that need it still run, get that record with their inputs and record their
stages that need it as not run. Such a job is a finished task, not one for Ray to retry; a
model-wide stage's failure comes back as an error and stops the build.

Placement goes by resources: ``num_cpus`` from ``--threads`` (at most a node's CPUs), one GPU for
an image with ``gpus``, and the custom resources an image declares (the target registry's
``ImageDefinition.resources``). A job whose resource no node offers fails before any task runs.
A task whose worker dies is retried (``MAX_RETRIES``); Ctrl-C cancels the running tasks.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from converters import console
from converters.cache import stage_cache
from converters.cache.tree_archive import extract_tree_archive, tree_archive_bytes
from converters.config import ConvertConfig
from converters.distributed.remote_job import folder_archive, path_archive, run_job_from_archives
from converters.errors import BuildError, ConverterError, ToolMissingError, error_class
from converters.fsutil import read_json, remove
from converters.pipeline.executor import STAGING, record_failure
from converters.pipeline.stage_jobs import Job, job_document
from converters.runners import StageRunner
from converters.runners.images import image_definition

LOCAL = "local"  # ray.init's address that starts a new Ray instance for this process
MAX_RETRIES = 2  # a task whose worker or node dies runs again, at most this often
CONNECT_TIMEOUT = 10.0  # seconds to wait for the cluster's address to answer
ANSWER_TIMEOUT = 5.0  # seconds to wait for its first gRPC (HTTP/2) frame
# HTTP/2's client connection preface and an empty SETTINGS frame; a server's first frame is its
# SETTINGS (frame type 4, the header's fourth byte).
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
HTTP2_SETTINGS = 4


@dataclass(frozen=True)
class Placement:
    """What one job's task asks the Ray scheduler for."""

    num_cpus: float
    num_gpus: float = 0
    resources: dict[str, float] = field(default_factory=dict)

    def wanted(self) -> dict[str, float]:
        """Every resource but CPUs (which every node has), as Ray names them."""
        return {**({"GPU": self.num_gpus} if self.num_gpus else {}), **self.resources}


def run_jobs_on_ray(jobs: list[Job], runners: dict[str, StageRunner], config: ConvertConfig) -> None:
    """Run ``jobs`` as Ray tasks as their needs finish; raise the first failure."""
    if not jobs:
        return  # nothing stale: no cluster to join (a no-op build stays a fraction of a second)
    ray = import_ray()
    with ray_session(ray, config.ray_address or os.environ.get("RAY_ADDRESS") or LOCAL):
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        address = ray.get_runtime_context().gcs_address
        placements = {job: placement(job, config.threads, nodes, address) for job in jobs}
        Scheduler(ray, placements, runners).run(jobs)


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise ToolMissingError("--executor ray needs Ray: pip install -c constraints.txt -e "
                               "'.[ray]'") from None
    return ray


@contextmanager
def ray_session(ray: ModuleType, address: str) -> Iterator[None]:
    """Join the cluster at ``address`` (or start a local Ray); leave (or stop it) at the end."""
    try:
        if address == LOCAL:
            console.info("executor ray: starting a local Ray for this build (--ray-address or "
                         "RAY_ADDRESS joins a cluster)")
            ray.init(address=LOCAL, include_dashboard=False, logging_level="WARNING")
        else:
            console.info(f"executor ray: joining the Ray cluster at {address}")
            check_reachable(address)
            ray.init(address=address, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as error:
        if refused_token(error):
            raise ToolMissingError(
                f"the Ray cluster at {address} refused this build's authentication token: set "
                "RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token (ray "
                "get-auth-token on its head node)") from None
        raise ToolMissingError(f"cannot join the Ray cluster at {address}: {error}. Start it "
                               "(ray start --head) or fix --ray-address / RAY_ADDRESS") from None
    try:
        yield
    finally:
        ray.shutdown()


def refused_token(error: BaseException) -> bool:
    """Whether Ray's error (or what caused it) is its authentication refusal: Ray 2.60 raises a
    ConnectionError from a RuntimeError whose text holds the AuthenticationError's traceback."""
    seen: BaseException | None = error
    while seen is not None:
        if type(seen).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def host_and_port(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` or ``[IPV6]:PORT`` as (host, port); None for other forms (``ray://``...)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit() or not host:
        return None
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1], int(port)
    if ":" in host:  # an IPv6 address without brackets: check_reachable refuses it
        return None
    return host, int(port)


def check_reachable(address: str) -> None:
    """Refuse a ``HOST:PORT`` where nothing listens, or where something that is not a Ray
    cluster's GCS answers: ray.init would wait on either for minutes, deaf to Ctrl-C. The GCS
    speaks gRPC, so it answers HTTP/2's client preface with a SETTINGS frame at once; a Redis,
    web or SSH server, or a silent one, does not. (``ray://`` addresses go to Ray as they are.)"""
    parsed = host_and_port(address)
    if parsed is None:
        if "://" not in address and address.count(":") > 1:
            raise ValueError(f"{address} is an IPv6 address without brackets: write "
                             "[ADDRESS]:PORT")
        return
    try:
        with socket.create_connection(parsed, timeout=CONNECT_TIMEOUT) as connection:
            connection.sendall(HTTP2_PREFACE)
            connection.settimeout(ANSWER_TIMEOUT)
            header = connection.recv(9)
    except TimeoutError:
        raise ConnectionError(f"{address} accepts connections but does not answer as a Ray "
                              f"cluster (no gRPC reply in {ANSWER_TIMEOUT:.0f} s): is it the "
                              "GCS port that ray start --head printed?") from None
    except OSError as error:
        raise ConnectionError(f"nothing answers at {address} ({error})") from None
    if len(header) < 4 or header[3] != HTTP2_SETTINGS:
        raise ConnectionError(f"{address} answers, but not as a Ray cluster (not gRPC: it "
                              f"replied {header[:9]!r}): is it the GCS port that ray start "
                              "--head printed?")


def placement(job: Job, threads: int, nodes: list[dict[str, Any]], address: str) -> Placement:
    """What ``job`` asks for; fails at once when no node of the cluster offers it."""
    definition = image_definition(job.image)
    largest = max((node["Resources"].get("CPU", 0) for node in nodes), default=0)
    wanted = Placement(min(threads, largest) or threads, 1 if definition.gpus else 0,
                       dict(definition.resources))
    needed = wanted.wanted()
    if any(all(node["Resources"].get(name, 0) >= amount for name, amount in needed.items())
           for node in nodes):
        return wanted
    missing = next(name for name, amount in needed.items()
                   if not any(node["Resources"].get(name, 0) >= amount for node in nodes))
    how = (f"ray start --address {address} --num-gpus 1" if missing == "GPU" else
           f"ray start --address {address} --resources '{json.dumps({missing: needed[missing]})}'")
    raise ToolMissingError(
        f"{job.plan.stem}: the {job.name} job needs the Ray resource {missing}, which no node of "
        f"the cluster at {address} offers. Start a node that has it (and its tool) with: {how}")


class Scheduler:
    """Submit each job once the jobs it needs are placed; place results as they come."""

    def __init__(self, ray: ModuleType, placements: dict[Job, Placement],
                 runners: dict[str, StageRunner]) -> None:
        self.ray = ray
        self.placements = placements
        self.runners = runners
        self.remote = ray.remote(run_remote_job)
        self.archives: dict[str, Any] = {}  # content hash → object ref, put once per build

    def run(self, jobs: list[Job]) -> None:
        done: set[Job] = set()
        pending = list(jobs)
        running: dict[Any, Job] = {}
        try:
            while pending or running:
                for job in [j for j in pending if all(n in done for n in j.needs)]:
                    pending.remove(job)
                    running[self.submit(job)] = job
                finished, _ = self.ray.wait(list(running), num_returns=1)
                for ref in finished:
                    job = running.pop(ref)
                    self.place(job, self.result(job, ref))
                    done.add(job)
        except BaseException:
            for ref in running:  # Ctrl-C or a failed job: stop the others
                self.ray.cancel(ref, force=True)
            raise

    def submit(self, job: Job) -> Any:
        plan = job.plan
        wanted = self.placements[job]
        document = job_document(plan, job.image, self.runners[job.image], job.specs)
        model = self.put_once(plan.input_hashes["model"], lambda: path_archive(plan.model_path))
        dataset = self.put_once(plan.input_hashes["dataset"], lambda: folder_archive(plan.dataset_dir))
        upstream = tree_archive_bytes(plan.build_dir, upstream_outputs(job))
        options = {"num_cpus": wanted.num_cpus, "num_gpus": wanted.num_gpus,
                   "resources": wanted.resources, "max_retries": MAX_RETRIES,
                   "name": f"{plan.stem}:{job.name}"}
        stages = ", ".join(spec.name for spec in job.specs)
        console.info(f"→ {plan.stem}: {job.name} job submitted to Ray ({stages})")
        return self.remote.options(**options).remote(document, stage_cache.code_fingerprint(), model,
                                                     dataset, upstream)

    def put_once(self, content_hash: str, archive: Any) -> Any:
        if content_hash not in self.archives:
            self.archives[content_hash] = self.ray.put(archive())
        return self.archives[content_hash]

    def result(self, job: Job, ref: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = self.ray.get(ref)
        except self.ray.exceptions.RayError as error:
            raise BuildError(f"{job.plan.stem}: the {job.name} job failed on Ray (after up to "
                             f"{MAX_RETRIES} retries): {error}") from None
        if "error" in result:
            raise error_class(result["error"])(f"{result['message']} (Ray node {result['node']})")
        return result

    def place(self, job: Job, result: dict[str, Any]) -> None:
        """Check the returned archive and place each stage's outputs and stamp atomically, or
        record the stage's failure (its outputs and stamp removed) as the node recorded it."""
        plan = job.plan
        if hashlib.sha256(result["archive"]).hexdigest() != result["sha256"]:
            raise BuildError(f"{plan.stem}: the {job.name} job's outputs arrived corrupted from "
                             f"Ray node {result['node']}")
        staging = plan.build_dir / STAGING / f"ray-{job.name}"
        remove(staging)
        try:
            extract_tree_archive(result["archive"], staging)
            for spec in job.specs:
                failure = stage_cache.read_failure(staging, spec.name)
                if failure is not None:  # contained on the node: recorded here as it was there
                    record_failure(plan.build_dir, spec, failure["reason"], failure["upstream"])
                    continue
                stamp = read_json(stage_cache.stamp_path(staging, spec.name))
                if stamp.get("key") != plan.keys[spec.name]:
                    raise BuildError(f"{plan.stem}: Ray node {result['node']} returned stage "
                                     f"{spec.name} built for another key")
                stage_cache.place_stage(plan.build_dir, staging,
                                  {**stamp, "executor": "ray", "ray_node": result["node"]}, spec)
        finally:
            remove(staging)


def upstream_outputs(job: Job) -> list[str]:
    """What every stage ``job``'s stages build on (transitively) and that it does not run left
    in the build folder: outputs and stamp, or the record of its failure (see
    :func:`converters.cache.stage_cache.stage_files`)."""
    own = {spec.name for spec in job.specs}
    seen: set[str] = set()
    todo = [dep for spec in job.specs for dep in spec.deps]
    while todo:
        name = todo.pop()
        if name not in seen and name not in own:
            seen.add(name)
            todo += job.plan.stage(name).deps
    return [relative for name in sorted(seen)
            for relative in stage_cache.stage_files(job.plan.build_dir, name, job.plan.stage(name).outputs)]


def run_remote_job(document: dict[str, Any], code: str, model_archive: bytes,
                   dataset_archive: bytes, upstream_archive: bytes) -> dict[str, Any]:
    """The Ray task: run the job on this node; a user error comes back as its type and message."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    try:
        archive = run_job_from_archives(document, code, model_archive, dataset_archive,
                                        upstream_archive)
    except ConverterError as error:
        return {"node": node, "error": type(error).__name__, "message": str(error)}
    return {"node": node, "archive": archive, "sha256": hashlib.sha256(archive).hexdigest()}
