"""Stage ``validate``: run one artifact on the validation split against the Keras outputs."""

from __future__ import annotations

import numpy as np

from converters import console, validate
from converters.fsutil import write_json_atomic
from converters.stages import data, reference
from converters.stages.base import StageContext, StageSkipped
from converters.targets import open_runtime


def run(context: StageContext) -> None:
    params = context.params
    if context.upstream_skipped is not None:  # the artifact was not built here: say so, once
        write_json_atomic(context.write(params["output"]), {
            "target": params["target"], "variant": params["variant"], "path": params["artifact"],
            "runtime": params["runtime"], "not_built": context.upstream_skipped})
        raise StageSkipped(context.upstream_skipped)
    artifact = context.read(params["artifact"])
    inputs = data.load_split(context.build_dir, data.VALIDATION)
    labels = data.load_labels(context.build_dir)
    keras_outputs = np.load(context.read(reference.OUTPUTS), allow_pickle=False)
    runner = open_runtime(artifact, threads=params["threads"])
    outputs = runner.predict(inputs, f"validating {artifact.name}")
    result = {
        "target": params["target"],
        "variant": params["variant"],
        "path": params["artifact"],
        "threads": params["threads"],
        "latency_runs": params["latency_runs"],
        "runtime": params["runtime"],
        "samples": int(len(inputs)),
    }
    failure = validate.non_finite_problem(outputs, f"the {params['target']} {params['variant']} "
                                          f"artifact {artifact.name}")
    if failure is not None:
        console.warn(failure)
        result |= {"failed": failure, "metrics": None, "latency_ms": None, "latency_spread_ms": None}
    else:
        metrics = validate.compare(keras_outputs, outputs, labels)
        latency = runner.latency(inputs[0], params["latency_runs"])
        console.info(
            f"{artifact.name}: top-1 agreement {metrics['top1_agreement']:.3f}, "
            f"max |error| {metrics['max_abs_error']:.4g}, {latency.median_ms:.2f} ms"
        )
        result |= {"failed": None, "metrics": metrics, **latency.as_record()}
    write_json_atomic(context.write(params["output"]), result)
