"""Stage ``device-run``: one validated artifact measured on one device over SSH.

Its bundle is made for the device's probed platform and Python with the validation inputs
beside it, shipped, checked, installed and benchmarked there (converters/devices/session.py); the
outputs that come back are compared with the Keras reference by the host validation's metrics.
The stage's key holds the device's identity (host key, machine, system, Python): a rebuild
with nothing changed does not run it again.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from converters import console
from converters.bundles.bundle import SAMPLES, BundleRequest, read_manifest, write_bundle
from converters.cache import stage_cache
from converters.devices.probe import PLATFORMS
from converters.devices.session import Benchmark, run_bundle
from converters.errors import DeviceError
from converters.fsutil import read_json, write_json_atomic
from converters.reporting import report
from converters.stages import data, reference
from converters.stages.base import StageContext, StageNotNeeded, StageSkipped
from converters.stages.device_run_params import DeviceRunParams
from converters.validation import metrics
from converters.validation.latency import WARMUP_RUNS

CONSTRAINTS = stage_cache.PACKAGE_DIR.parent / "constraints.txt"  # the checkout's pins


def run(context: StageContext) -> None:
    params = DeviceRunParams.of(context)
    if context.upstream_skipped is not None:  # the artifact was not built here: say so, once
        write_json_atomic(context.write(params.output), {
            "device": params.device, "target": params.target, "variant": params.variant,
            "path": params.artifact, "not_built": context.upstream_skipped})
        if context.upstream_not_needed:
            raise StageNotNeeded(context.upstream_skipped)
        raise StageSkipped(context.upstream_skipped)
    if params.unavailable is not None or params.identity is None:
        raise DeviceError(params.unavailable or f"device {params.device} was not probed")
    identity = params.identity
    from converters.devices.connection import connect  # Paramiko: only when a device is reached

    with tempfile.TemporaryDirectory(prefix="tec-device-") as folder:
        work = Path(folder)
        inputs = data.load_inputs(context.build_dir, data.VALIDATION)
        np.savez(work / SAMPLES, **inputs)  # type: ignore[arg-type]
        archive = make_bundle(context, params, work)
        with connect(params.device, params.timeout) as connection:
            if connection.host_key != identity["host_key"]:
                raise DeviceError(f"device {params.device}: its host key changed since it was probed "
                                  f"({identity['host_key']} → {connection.host_key})")
            result = run_bundle(connection, archive, params.cache_folder,
                                Benchmark(params.runs, WARMUP_RUNS, params.threads), work / "back")
        with np.load(result.outputs, allow_pickle=False) as stored:
            outputs = {name: stored[name] for name in stored.files}
    keras_outputs = reference.load_outputs(context.build_dir)
    names = tuple(keras_outputs)
    if len(outputs) == 1 and len(names) == 1:  # one output: whatever the runtime calls it
        outputs = {names[0]: next(iter(outputs.values()))}
    per_output = metrics.compare(keras_outputs, outputs, reference.output_tasks(context.build_dir),
                                 data.load_labels(context.build_dir))
    summary = metrics.summary(per_output)
    headline = metrics.worst_headline(per_output)
    latency = result.latency
    record = {
        "device": params.device, **{key: identity[key] for key in
                                    ("host", "port", "user", "host_key", "arch", "os", "python", "libc")},
        "target": params.target, "variant": params.variant, "path": params.artifact,
        "runtime": read_json(context.build_dir / params.validation_record)["runtime"],
        "threads": params.threads, "latency_ms": latency["latency_ms"],
        "latency_spread_ms": latency["latency_spread_ms"], "latency_runs": latency["runs"],
        "warmup": latency["warmup"], "samples": latency["samples"],
        "top1_agreement": summary.get("top1_agreement"), "metrics": summary,
        "headline": headline, "outputs": per_output,
        "environment": result.environment, "environment_reused": result.reused_environment,
    }
    console.info(f"{Path(params.artifact).name} on {params.device}: {latency['latency_ms']:.2f} ms "
                 f"(p10-p90 {latency['latency_spread_ms'][0]:.2f}-{latency['latency_spread_ms'][1]:.2f}), "
                 f"{headline['metric']} drop {headline['drop']:.4f}")
    write_json_atomic(context.write(params.output), record)


def make_bundle(context: StageContext, params: DeviceRunParams, work: Path) -> Path:
    """The artifact's bundle for the device's platform and Python, with the validation inputs,
    described as this build's report will describe it (the report is written after this stage)."""
    identity = params.identity
    assert identity is not None
    platform = PLATFORMS.get(identity["arch"])
    if platform is None:
        raise DeviceError(f"device {params.device} is a {identity['arch']} machine: bundles are "
                          f"built for {', '.join(sorted(set(PLATFORMS.values())))} only")
    request = BundleRequest(build_dir=context.build_dir, target=params.target, variant=params.variant,
                            platform=platform, python=".".join(identity["python"].split(".")[:2]),
                            with_images=False, dist=work / "dist", constraints=CONSTRAINTS,
                            samples=work / SAMPLES)
    described = report.assemble(context.build_dir, report.ReportParams(
        records=[params.validation_record], max_accuracy_drop=1.0, targets={}), stages=())
    manifest, manifest_sha256 = read_manifest(context.build_dir, during_build=True)
    return write_bundle(request, described, manifest, manifest_sha256)
