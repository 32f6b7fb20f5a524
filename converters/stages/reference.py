"""Stage ``reference``: the Keras model itself on the validation split (outputs, accuracy, latency)."""

from __future__ import annotations

import numpy as np

from converters import console, validate
from converters.errors import ModelError
from converters.fsutil import write_json_atomic
from converters.model import load
from converters.stages import data
from converters.stages.base import StageContext

OUTPUTS = "reference/outputs.npy"
SUMMARY = "reference/reference.json"
# Images per Keras call: the activations of a batch of 32 at 224x224 held ~+300 MiB more than 8,
# which the stage process keeps for the rest of a -j 1 build (benchmarks/memory_notes.md).
BATCH = 8


def run(context: StageContext) -> None:
    import tensorflow as tf

    params = context.params
    threads = params["threads"]  # applied through TF_NUM_INTRAOP_THREADS by the executor
    shape = params["input_shape"]
    model = load(context.model_path, unsafe=params["unsafe"],
                 input_shape=tuple(shape) if shape else None)
    inputs = data.load_split(context.build_dir, data.VALIDATION)
    batches = [model.predict(inputs[i:i + BATCH])
               for i in console.progress(range(0, len(inputs), BATCH), "Keras reference",
                                         total=(len(inputs) + BATCH - 1) // BATCH)]
    outputs = np.concatenate(batches).astype(np.float32)
    bad = ~np.isfinite(outputs.reshape(len(outputs), -1)).all(axis=1)
    if bad.any():
        raise ModelError(
            f"model {context.model_path} gives non-finite outputs (NaN or Inf) on {int(bad.sum())} "
            f"of {len(outputs)} validation images: nothing can be validated against it. Check "
            "the model's weights and its preprocessing (--preprocessing), then convert again")
    one = tf.constant(inputs[:1])
    latency = validate.measure_latency(lambda: model.graph_function(one), params["latency_runs"])
    np.save(context.write(OUTPUTS), outputs, allow_pickle=False)
    summary = {
        "accuracy": validate.accuracy(outputs, data.load_labels(context.build_dir)),
        **latency.as_record(),
        "latency_method": "tf.function call, batch 1",
        "threads": threads,
        "latency_runs": params["latency_runs"],
        "samples": int(len(inputs)),
    }
    write_json_atomic(context.write(SUMMARY), summary)
