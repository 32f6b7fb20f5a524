"""report.json's keys and what each means: the one source of the reference page
docs/reference/report-json.md (:func:`render_markdown`), and what the tests check real reports
against (every key a report has is described here, every key marked always is in it).

Sections of a target's own (``"<target>"``) and the client checks' keys of an artifact come from
the target registry, so they are described on the target's page.
"""

from __future__ import annotations

from dataclasses import dataclass

from converters.targets import all_targets, client_checks


@dataclass(frozen=True)
class Key:
    name: str
    meaning: str
    always: bool = True  # in every report (else only when it applies)


TOP = (
    Key("schema_version", "the contract's version (1): a change that breaks readers raises it"),
    Key("model", "the Keras model: its file, signature and size (below)"),
    Key("dataset", "the data it was validated on and how images were preprocessed (below)"),
    Key("reference", "the Keras model itself on the validation split, timed on this host (below)"),
    Key("devices", "the --device names the artifacts were also measured on, in order"),
    Key("artifacts", "every artifact of the build folder whose stages and outputs still hold, in "
                     "one order: targets as registered, then fp32, fp16, dynamic, int8, int8-mixed "
                     "(below)"),
    Key("not_built", "artifacts whose stage could not run here or failed: target, variant, path, "
                     "reason (and failed: true for a failure)"),
    Key("not_needed", "artifacts this build did not need (the automatic int8-mixed when int8 is "
                      "within the bound): target, variant, path, reason"),
    Key("warnings", "what makes this report's numbers untrustworthy, in words"),
    Key("recommendation", "the smallest and the fastest artifact within the bounds (below)"),
    Key("stages", "where each stage of the folder ran: runner, image, image_id, key"),
)

MODEL = (
    Key("name", "the model's name (its file name without the suffix)"),
    Key("path", "the model file or SavedModel folder"),
    Key("format", "h5, keras or saved_model"),
    Key("input_name", "the first input's name"),
    Key("input_shape", "the first input's per-sample shape"),
    Key("output_shape", "the first output's shape, batch first (null)"),
    Key("inputs", "every input: name, shape (per sample), dtype"),
    Key("outputs", "every output: name, shape (per sample), dtype"),
    Key("parameters", "the number of weights (null for a SavedModel)"),
    Key("input_preprocessing", "what the model's own leading Rescaling or Normalization layer "
                               "expects, or null"),
    Key("input_shapes_from_dataset", "inputs declared without a static size that took the size "
                                     "of the array dataset's samples"),
    Key("time_distributed_merged", "TimeDistributed layers that run their inner layer once over "
                                   "all time steps (merged with the batch axis), not once per step"),
    Key("sample_bytes", "bytes of one sample of the inputs"),
    Key("largest_activation_bytes", "the largest tensor one sample makes in the traced graph"),
    Key("keras_name", "the Keras model's name (per-op errors name its layers)"),
    Key("layers", "the Keras layers' names, in the model's order"),
    Key("output_hints", "what the file says of each output beyond its shape (activation, saved "
                        "loss)", always=False),
    Key("folded_normalization", "a per-channel --mean/--std folded into the model: mean, std, "
                                "input and the largest difference from the unfolded model",
        always=False),
    Key("sha256", "the model file's hash (a SavedModel folder's tree hash)"),
)

DATASET = (
    Key("path", "the dataset folder or array file"),
    Key("sha256", "its tree hash"),
    Key("class_names", "the class names (--labels, else the class folders), or []"),
    Key("labelled", "whether the validation samples have labels (accuracy can be computed)"),
    Key("images_found", "samples found"),
    Key("skipped_files", "files that are not images"),
    Key("unreadable", "images that could not be read (skipped)"),
    Key("calibration_count", "samples int8 was calibrated on"),
    Key("validation_count", "held-out samples every artifact was compared on"),
    Key("preprocessing", "how pixels 0..255 became inputs: mode, mean, std (null for arrays)"),
    Key("preprocessing_choice", "why that preprocessing: requested, reason, scores"),
    Key("seed", "--seed: what shuffled the calibration/validation split"),
)

REFERENCE = (
    Key("accuracy", "the Keras model's accuracy (null without labels)"),
    Key("latency_ms", "its median single-sample latency on this host"),
    Key("latency_spread_ms", "p10 and p90 of those runs"),
    Key("latency_method", "how it was timed"),
    Key("latency_runs", "timed runs"),
    Key("threads", "threads it ran with"),
    Key("cpu", "the CPU: architecture, model, its vector and int8 extensions"),
    Key("outputs", "each output's task and the Keras model's own metric on it"),
)

ARTIFACT = (
    Key("target", "the target that built it (a name of the target registry)"),
    Key("variant", "fp32, fp16, dynamic, int8, int8-mixed, ..."),
    Key("path", "the artifact, relative to build/<model>/"),
    Key("sha256", "its hash"),
    Key("size_bytes", "its size"),
    Key("latency_ms", "median single-sample latency on this host, in the runtime of validation"),
    Key("latency_spread_ms", "p10 and p90 of those runs"),
    Key("latency_not_on_runtime", "why that latency is not the deployed runtime's (a model timed "
                                  "before it is compiled for its accelerator), or null"),
    Key("threads", "threads it ran with"),
    Key("runtime", "what ran it (LiteRT, onnxruntime, ...)"),
    Key("cpu", "the CPU it was timed on"),
    Key("metrics", "max_abs_error, mean_abs_error, cosine_similarity, top1_agreement, accuracy "
                   "against the Keras model"),
    Key("outputs", "the same per output, with the output's task and its metrics"),
    Key("accuracy_drop", "Keras accuracy minus its accuracy (or 1 - top-1 agreement)"),
    Key("accuracy_drop_basis", "which output and metric the drop is of"),
    Key("regression_error", "the largest relative error of regression outputs beside class "
                            "outputs (bounded by --max-relative-error)", always=False),
    Key("float_ops", "operators that still compute in float: op, count"),
    Key("io", "its input and output types, shapes and quantization"),
    Key("conversion_seconds", "how long the conversion took"),
    Key("engine", "who made it (e.g. the TF converter or ai-edge-quantizer, with versions)"),
    Key("metadata", "what its embedded metadata says (name, version, labels, normalization, "
                    "written_for: the MediaPipe Tasks API it is written for, or why generic), "
                    "or null"),
    Key("op_errors", "quantized TFLite: the ops adding the most error, each with the Keras "
                     "layer that made it, or null"),
    Key("mixed_precision", "int8-mixed: the ops kept in float and what they cost and recover, "
                           "or null"),
    Key("recurrence", "how a recurrent layer's loop was converted", always=False),
    Key("inputs_kept_float", "ONNX int8: inputs kept float because their features' ranges "
                             "differ too much for one int8 scale: input, feature_range_ratio, "
                             "reason", always=False),
    Key("failed", "why its validation failed, or null"),
    Key("stand_in_for", "the runtime this model stands in for (validated here, never "
                        "recommended), or null"),
    Key("devices", "its runs on each --device: name, host, arch, os, python, runtime, threads, "
                   "latency_ms, latency_spread_ms, top1_agreement, samples (or name and failed)"),
)

RECOMMENDATION = (
    Key("max_accuracy_drop", "the bound (--max-accuracy-drop)"),
    Key("smallest", "the smallest artifact within the bounds, or null"),
    Key("fastest", "the fastest within the bounds among those timed on their own runtime, or "
                   "null"),
    Key("fastest_ties", "artifacts whose p10-p90 latency overlaps the fastest's"),
    Key("note", "a tie, said in words, or null"),
    Key("rejected", "artifacts over a bound"),
    Key("latency_on", "the device whose latency chose the fastest (--recommend-on)",
        always=False),
    Key("withheld", "why nothing is recommended (the Keras model near chance)", always=False),
)

SECTIONS = {"": TOP, "model": MODEL, "dataset": DATASET, "reference": REFERENCE,
            "artifacts[]": ARTIFACT, "recommendation": RECOMMENDATION}


def target_sections() -> list[str]:
    """Top-level keys of the targets that have a report section of their own."""
    return [name for name, target in all_targets().items() if target.report is not None]


def client_keys() -> list[str]:
    """Keys each artifact gets from the client checks the targets run (a real client's verdict)."""
    return [check.key for check in client_checks().values()]


def render_markdown() -> str:
    """docs/reference/report-json.md."""
    lines = ["# report.json keys", "",
             "Generated from `converters/reporting/schema.py` (the tests check real reports "
             "against it); how the numbers are computed is in [Outputs](../outputs.md). "
             "Optional keys appear only where they apply.", ""]
    for section, keys in SECTIONS.items():
        lines += [f"## {f'`{section}`' if section else 'Top level'}", "",
                  "| key | meaning |", "|---|---|"]
        lines += [f"| `{key.name}`{'' if key.always else ' (optional)'} | {key.meaning} |"
                  for key in keys]
        lines.append("")
    lines += ["## Sections of a target and client checks", "",
              "Each target with a report section of its own adds a top-level key of its name ("
              + ", ".join(f"`{name}`" for name in target_sections())
              + "; see its target page). Each client check adds a key to every artifact it "
              "checks (" + ", ".join(f"`{key}`" for key in client_keys()) + ").", ""]
    return "\n".join(lines)
