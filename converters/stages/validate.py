"""Stage ``validate``: run one artifact on the validation split against the Keras outputs,
output by output (matched by name)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters import console
from converters.cpu import this_cpu
from converters.fsutil import write_json_atomic
from converters.stages import data, reference
from converters.stages.base import StageContext, StageNotNeeded, StageSkipped
from converters.targets import client_checks, open_runtime
from converters.targets.base import ValidateParams
from converters.validation import compare, metrics


def run(context: StageContext) -> None:
    params = ValidateParams.of(context)
    if context.upstream_skipped is not None:  # the artifact was not built here: say so, once
        write_json_atomic(context.write(params.output), {
            "target": params.target, "variant": params.variant, "path": params.artifact,
            "runtime": params.runtime, "not_built": context.upstream_skipped,
            "not_needed": context.upstream_not_needed})
        if context.upstream_not_needed:
            raise StageNotNeeded(context.upstream_skipped)
        raise StageSkipped(context.upstream_skipped)
    artifact = context.read(params.artifact)
    result = against_keras(context, params, artifact)
    client = client_checks().get(params.target)
    if client is not None and not result["failed"]:
        # after the validation split and the runtime are gone: 120 MB of floats at 224x224
        checked = client.run(context, artifact, result["metrics"])
        console.info(f"{artifact.name} in {client.title}: "
                     f"{checked.get('summary') or checked.get('reason')}")
        result[client.key] = checked
    write_json_atomic(context.write(params.output), result)


def against_keras(context: StageContext, params: ValidateParams, artifact: Path) -> dict[str, Any]:
    """The validation record of ``artifact`` run in its runtime on the validation split against
    the Keras outputs: metrics per output and latency, or why it failed."""
    inputs = data.load_inputs(context.build_dir, data.VALIDATION)
    labels = data.load_labels(context.build_dir)
    keras_outputs = reference.load_outputs(context.build_dir)
    names = tuple(keras_outputs)
    runner = open_runtime(artifact, threads=params.threads)
    outputs = compare.run_named(runner, inputs, names, f"validating {artifact.name}")
    result = {
        "target": params.target,
        "variant": params.variant,
        "path": params.artifact,
        "threads": params.threads,
        "latency_runs": params.latency_runs,
        "runtime": params.runtime,
        "samples": data.sample_count(inputs),
        "cpu": this_cpu().as_record(),
        "stand_in_for": params.stand_in_for,
        "latency_not_on_runtime": params.latency_not_on_runtime,
    }
    what = f"the {params.target} {params.variant} artifact {artifact.name}"
    failure = next((problem for name in names if name in outputs and (
        problem := compare.non_finite_problem(outputs[name], f"{what} (output '{name}')"))), None)
    if failure is not None:
        console.warn(failure)
        return result | {"failed": failure, "metrics": None, "outputs": None, "headline": None,
                         "latency_ms": None, "latency_spread_ms": None}
    tasks = reference.output_tasks(context.build_dir)
    per_output = metrics.compare(keras_outputs, outputs, tasks, labels)
    headline = metrics.worst_headline(per_output)
    latency = compare.latency_named(runner, inputs, params.latency_runs)
    console.info(
        f"{artifact.name}: {headline['metric']} drop {headline['drop']:.4f} "
        f"({headline['output']}), max |error| "
        f"{max(r['max_abs_error'] for r in per_output.values()):.4g}, "
        f"{latency.median_ms:.2f} ms")
    result |= {"failed": None, "metrics": metrics.summary(per_output), "outputs": per_output,
               "headline": headline, **latency.as_record()}
    if (regression := metrics.regression_error(per_output)) is not None:
        result["regression_error"] = regression
    return result
