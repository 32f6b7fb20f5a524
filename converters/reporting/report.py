"""report.json (the contract), report.md (a table) and report.html (table, plot, recommendation).

The report stage runs on the host: it only reads the JSON records the other stages wrote.
"""

from __future__ import annotations

import base64
import html
import io
import platform
from pathlib import Path
from typing import Any

from converters.cache import stage_cache
from converters.config import Quantization
from converters.defaults import MAX_RELATIVE_ERROR
from converters.fsutil import (
    read_json,
    sha256_tree,
    tree_size,
    write_json_atomic,
    write_text_atomic,
)
from converters.reporting import quantization_report
from converters.reporting.markup import inline_html, md_table, percent
from converters.reporting.op_layers import layer_of
from converters.reporting.report_params import REPORT_HTML, REPORT_JSON, REPORT_MD, ReportParams
from converters.stages import data_params as data
from converters.stages import export
from converters.stages import reference_params as reference
from converters.stages.base import StageContext
from converters.targets import ReportHooks, all_targets, client_checks
from converters.validation.drops import accuracy_drop, single_classifier

SCHEMA_VERSION = 1
NEAR_CHANCE_FACTOR = 1.5  # reference accuracy below this many times chance is a warning


def run(context: StageContext) -> None:
    """Stage ``report``: assemble every validation record of this model into the reports."""
    report = assemble(context.build_dir, ReportParams.of(context), context.spec.deps)
    write_json_atomic(context.write(REPORT_JSON), report)
    write_text_atomic(context.write(REPORT_MD), markdown(report))
    write_text_atomic(context.write(REPORT_HTML), html_page(report))


def assemble(build_dir: Path, params: ReportParams, stages: tuple[str, ...]) -> dict[str, Any]:
    model = read_json(build_dir / export.MODEL_INFO)
    dataset = read_json(build_dir / data.DATASET_INFO)
    keras = read_json(build_dir / reference.SUMMARY)
    written = [record for record in params.records if (build_dir / record).exists()]
    records = sorted((read_json(build_dir / record) for record in written), key=table_order)
    artifacts = [artifact_entry(build_dir, record, keras, model)
                 for record in records if not record.get("not_built")]
    failures = stage_cache.read_failures(build_dir)
    for artifact in artifacts:
        artifact["devices"] = device_entries(build_dir, params, failures, artifact["path"])
    unbuilt = [r for r in records if r.get("not_built")]
    not_built = [unbuilt_entry(r) for r in unbuilt if not r.get("not_needed")]
    not_needed = [unbuilt_entry(r) for r in unbuilt if r.get("not_needed")]
    not_built = sorted(not_built + failed_validations(failures, set(params.records) - set(written)),
                       key=table_order)
    bound = params.max_accuracy_drop
    inputs = read_json(build_dir / stage_cache.STAMP_DIR / stage_cache.BUILD_INFO)["inputs"]
    warnings = result_warnings(dataset, keras)
    recommendation = recommend(artifacts, bound, params.max_relative_error, device=params.recommend_on)
    if near_chance(dataset, keras):
        recommendation |= {"smallest": None, "fastest": None,
                           "withheld": "the Keras reference itself is near chance accuracy"}
    return {
        "schema_version": SCHEMA_VERSION,
        "model": {**model, "sha256": inputs["model"]["sha256"]},
        "dataset": {
            "path": dataset["path"],
            "sha256": inputs["dataset"]["sha256"],
            "class_names": dataset["class_names"],
            "labelled": dataset["labelled"],
            "images_found": dataset["images_found"],
            "skipped_files": dataset["skipped_files"],
            "unreadable": dataset["unreadable"],
            "calibration_count": dataset["calibration"]["count"],
            "validation_count": dataset["validation"]["count"],
            "preprocessing": dataset["preprocessing"],
            "preprocessing_choice": dataset.get("preprocessing_choice"),
            "seed": dataset["seed"],
        },
        "reference": {
            "accuracy": keras["accuracy"],
            "latency_ms": keras["latency_ms"],
            "latency_spread_ms": keras.get("latency_spread_ms"),
            "latency_method": keras["latency_method"],
            "latency_runs": keras.get("latency_runs"),
            "threads": keras["threads"],
            "cpu": keras.get("cpu"),
            "outputs": keras.get("outputs"),
        },
        "devices": params.devices,
        "artifacts": artifacts,
        "not_built": not_built,
        "not_needed": not_needed,
        "warnings": warnings,
        "recommendation": recommendation,
        "stages": stage_provenance(build_dir, (*stages, *params.earlier_stages)),
        **target_sections(build_dir, params.targets, set(failures)),
    }


def table_order(record: dict[str, Any]) -> tuple[int, int, str]:
    """One order for the table whatever was built last: targets as the registry lists them,
    then the quantization modes from fp32 to int8 (other variants after them, by name)."""
    target_names = list(all_targets())
    modes = [mode.value for mode in Quantization]
    target, variant = record["target"], record["variant"]
    return (target_names.index(target) if target in target_names else len(target_names),
            modes.index(variant) if variant in modes else len(modes), variant)


DEVICE_FIELDS = ("host", "arch", "os", "python", "runtime", "threads", "latency_ms",
                 "latency_spread_ms", "top1_agreement", "samples", "metrics", "headline")


def device_entries(build_dir: Path, params: ReportParams, failures: dict[str, dict[str, Any]],
                   path: str) -> list[dict[str, Any]]:
    """The artifact at ``path`` as measured on each device (``failed``: why it was not)."""
    entries = []
    for relative in params.device_records:
        if (build_dir / relative).exists():
            record = read_json(build_dir / relative)
            if record["path"] == path and not record.get("not_built"):
                entries.append({"name": record["device"], "failed": None,
                                **{key: record[key] for key in DEVICE_FIELDS}})
    for failure in failures.values():
        if (failure["kind"] == "device-run" and failure["params"]["artifact"] == path
                and set(failure["outputs"]) & set(params.device_records)):  # this build's devices
            reason = failure["reason"]
            if failure["upstream"] is not None:
                reason = f"not run: stage {failure['upstream']} failed"
            entries.append({"name": failure["params"]["device"], "failed": reason})
    order = {name: index for index, name in enumerate(params.devices)}
    return sorted(entries, key=lambda entry: order.get(entry["name"], len(order)))


def device_timing(artifact: dict[str, Any], device: str | None) -> dict[str, Any] | None:
    """The artifact's latency record: its host validation's (``device`` None), or its run on
    ``device`` (None when it did not run there)."""
    if device is None:
        return artifact
    return next((entry for entry in artifact.get("devices", [])
                 if entry["name"] == device and not entry.get("failed")), None)


def failed_validations(failures: dict[str, dict[str, Any]],
                       missing: set[str]) -> list[dict[str, Any]]:
    """The artifacts whose validation record is ``missing`` because their conversion (or the
    validation itself) failed in this build: what the stage failures recorded."""
    entries = []
    for failure in failures.values():
        if not missing.intersection(failure["outputs"]):
            continue
        reason = failure["reason"]
        if failure["upstream"] is not None:
            root = failures.get(failure["upstream"])
            reason = f"{failure['upstream']} failed: {root['reason'] if root else 'see the log'}"
        params = failure["params"]
        entries.append({"target": params["target"], "variant": params["variant"],
                        "path": params["artifact"], "reason": reason, "failed": True})
    return entries


def report_hooks() -> list[tuple[str, ReportHooks]]:
    """The targets with a section of their own in report.json, and how to show it."""
    return [(name, target.report) for name, target in all_targets().items()
            if target.report is not None]


def target_sections(build_dir: Path, asked: dict[str, Any], failed: set[str]) -> dict[str, Any]:
    """report.json's section of every target that has one: what its stages recorded, or the
    section's empty value when the target was not built (not in ``asked``) or one of its stages
    (``failed``: stage names) failed in this build (the artifact table says which and why)."""
    return {name: hooks.section(build_dir, asked[name])
            if name in asked and not any(stage.startswith(f"{name}-") for stage in failed)
            else hooks.empty for name, hooks in report_hooks()}


def near_chance(dataset: dict[str, Any], keras: dict[str, Any]) -> bool:
    """Keras accuracy below 1.5x chance on a labelled dataset: something upstream is wrong."""
    classes = len(dataset["class_names"])
    return (keras["accuracy"] is not None and classes > 1
            and keras["accuracy"] < NEAR_CHANCE_FACTOR / classes)


def result_warnings(dataset: dict[str, Any], keras: dict[str, Any]) -> list[str]:
    """What makes this report's numbers untrustworthy, in words a user can act on."""
    warnings = []
    choice = dataset.get("preprocessing_choice") or {}
    if choice.get("warning"):
        warnings.append(choice["warning"])
    if near_chance(dataset, keras):
        classes = len(dataset["class_names"])
        warnings.append(
            f"the Keras model itself scores {100 * keras['accuracy']:.1f} % on the "
            f"{classes}-class validation split, near chance ({100 / classes:.1f} %): every "
            "comparison below is meaningless and nothing is recommended. Likely causes: the wrong "
            f"preprocessing (used: {dataset['preprocessing']['mode']}; try --preprocessing auto "
            "or the one the model was trained with), class folders whose sorted order differs "
            "from the model's output order, or a dataset the model was not trained for")
    return warnings


def stage_provenance(build_dir: Path, stages: tuple[str, ...]) -> dict[str, Any]:
    """Where each stage ran: its runner and, in a container, the image and its ID."""
    provenance = {}
    for name in stages:
        stamp = stage_cache.read_stamp(build_dir, name)
        if stamp is not None:
            environment = stamp["environment"]
            provenance[name] = {"runner": stamp["runner"], "image": environment.get("image"),
                                "image_id": environment.get("image_id"), "key": stamp["key"]}
    return provenance


def toolchain_line(report: dict[str, Any]) -> str:
    """One sentence naming the runner (and image IDs) the stages ran with."""
    used = sorted({(s["runner"], s["image"] or "", s["image_id"] or "")
                   for s in report["stages"].values()})
    parts = [f"{image} image {image_id[:19]} (docker)" if runner == "docker" else f"{runner} Python"
             for runner, image, image_id in used]
    return "Stages ran in: " + (", ".join(parts) or "nothing recorded") + "."


def unbuilt_entry(record: dict[str, Any]) -> dict[str, Any]:
    """report.json's entry for an artifact with no validation (not built here, or not needed)."""
    return {"target": record["target"], "variant": record["variant"], "path": record["path"],
            "reason": record["not_built"]}


def artifact_entry(build_dir: Path, record: dict[str, Any], keras: dict[str, Any],
                   model: dict[str, Any]) -> dict[str, Any]:
    path = build_dir / record["path"]
    conversion = read_json(path.with_suffix(".json"))
    metrics = record["metrics"]
    outputs = record.get("outputs")
    drop, basis = accuracy_drop(record, keras)
    return {
        "failed": record.get("failed"),
        "target": record["target"],
        "variant": record["variant"],
        "path": record["path"],
        "sha256": sha256_tree(path),
        "size_bytes": tree_size(path),
        "latency_ms": record["latency_ms"],
        "latency_spread_ms": record.get("latency_spread_ms"),
        "threads": record["threads"],
        "runtime": record["runtime"],
        "cpu": record.get("cpu"),
        "stand_in_for": record.get("stand_in_for"),
        "latency_not_on_runtime": record.get("latency_not_on_runtime"),
        "metrics": metrics,
        "outputs": outputs,
        "accuracy_drop": drop,
        "accuracy_drop_basis": basis,
        "float_ops": conversion["float_ops"],
        "io": {"input": conversion["input"], "output": conversion["output"]},
        "conversion_seconds": conversion["conversion_seconds"],
        # Which tool made it and, for quantized TFLite, where quantization hurts (per op).
        "engine": conversion.get("engine"),
        "op_errors": with_layers(conversion.get("op_errors"), model),
        "mixed_precision": conversion.get("mixed_precision"),
        # Inputs an int8 model keeps float (features of too different ranges for one scale)
        **({"inputs_kept_float": conversion["inputs_kept_float"]}
           if conversion.get("inputs_kept_float") else {}),
        # How a recurrent model's loop was converted (absent: the model has none)
        **({"recurrence": conversion["recurrence"]} if conversion.get("recurrence") else {}),
        # The regression outputs' largest relative error, bounded on its own (absent: no
        # regression outputs beside class outputs)
        **({"regression_error": record["regression_error"]}
           if record.get("regression_error") else {}),
        "metadata": conversion.get("metadata"),
        # Checks in the runtimes apps deploy with (MediaPipe), under their own keys
        **{check.key: record[check.key] for check in client_checks().values()
           if check.key in record},
    }


def with_layers(op_errors: list[dict[str, Any]] | None,
                model: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Per-op error rows, each with the Keras layer that produced its tensor (null where no
    layer did, such as a QUANTIZE the converter inserted)."""
    if op_errors is None:
        return None
    outputs = [output["name"] for output in model["outputs"]]
    return [{**row, "layer": layer_of(row["tensor"], model.get("keras_name"),
                                      model.get("layers", []), outputs)} for row in op_errors]


def recommend(artifacts: list[dict[str, Any]], bound: float,
              max_relative_error: float = MAX_RELATIVE_ERROR, *,
              device: str | None = None) -> dict[str, Any]:
    """The smallest and the fastest artifact whose accuracy drop stays within ``bound`` (and
    whose regression outputs beside class outputs, if any, within ``max_relative_error``); the
    fastest by its latency on ``device`` when given (among those that ran there), else on this
    host.

    Only artifacts timed on the runtime they deploy with compete for fastest: the Edge TPU's
    int8 timed on the CPU before compilation says nothing about its speed on the Edge TPU.
    Latencies are noisy: an artifact whose p10-p90 latency spread overlaps the fastest one's is
    a tie (``fastest_ties``), and ``note`` says so rather than crowning one of them silently.
    """
    candidates = [a for a in artifacts if not a.get("stand_in_for")]
    eligible = [a for a in candidates
                if not a.get("failed") and a["accuracy_drop"] <= bound + 1e-12
                and within(a.get("regression_error"), max_relative_error)]
    smallest = min(eligible, key=lambda a: (a["size_bytes"], a["latency_ms"]), default=None)
    timed = {a["path"]: timing for a in eligible if not a.get("latency_not_on_runtime")
             and (timing := device_timing(a, device)) is not None}
    fastest = min((a for a in eligible if a["path"] in timed),
                  key=lambda a: (timed[a["path"]]["latency_ms"], a["size_bytes"]), default=None)
    ties = sorted(a["path"] for a in eligible if fastest is not None and a is not fastest
                  and a["path"] in timed and latencies_overlap(timed[a["path"]], timed[fastest["path"]]))
    note = None
    if fastest is not None and ties:
        note = (f"{fastest['path']} has the lowest median latency, but "
                f"{', '.join(ties)} {'is' if len(ties) == 1 else 'are'} within its p10-p90 "
                f"spread: a tie {'on this host' if device is None else f'on device {device}'}")
    return {
        **({"latency_on": device} if device is not None else {}),
        "max_accuracy_drop": bound,
        "smallest": smallest["path"] if smallest else None,
        "fastest": fastest["path"] if fastest else None,
        "fastest_ties": ties,
        "note": note,
        "rejected": sorted(a["path"] for a in candidates if a not in eligible),
    }


def within(regression: dict[str, Any] | None, max_relative_error: float) -> bool:
    """Whether an artifact's regression outputs (its ``regression_error``) are within bound."""
    return regression is None or regression["relative_error"] <= max_relative_error + 1e-12


def latency_range(entry: dict[str, Any]) -> tuple[float, float]:
    """An entry's p10-p90 latency in ms (just the median for a record without a spread)."""
    spread = entry.get("latency_spread_ms")
    return (spread[0], spread[1]) if spread else (entry["latency_ms"], entry["latency_ms"])


def latencies_overlap(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """True when the two p10-p90 latency spreads overlap: the difference is within the noise."""
    low_a, high_a = latency_range(first)
    low_b, high_b = latency_range(second)
    return low_a <= high_b and low_b <= high_a


def _spread(entry: dict[str, Any]) -> str:
    spread = entry.get("latency_spread_ms")
    return "-" if not spread else f"{spread[0]:.2f}-{spread[1]:.2f}"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows shared by report.md, report.html and the console summary (columns as
    :func:`headers`: a column per device before the float ops)."""
    keras = report["reference"]
    devices = report.get("devices", [])
    none = ["-"] * len(devices)
    rows = [["Keras (reference)", "-", "-", percent(keras["accuracy"]), "-", "-", "-",
             f"{keras['latency_ms']:.2f}", _spread(keras), *none, "-"]]
    for a in report["artifacts"]:
        m = a["metrics"]
        float_ops = ", ".join(f"{o['op']}×{o['count']}" for o in a["float_ops"]) or "none"
        on_devices = [device_cell(a, device) for device in devices]
        if a.get("failed"):
            rows.append([f"{a['target']} {a['variant']}", a["path"],
                         f"{a['size_bytes'] / 1024:.1f}", "failed", "-", "-", "-", "-", "-",
                         *on_devices, float_ops])
            continue
        rows.append([
            f"{a['target']} {a['variant']}", a["path"], f"{a['size_bytes'] / 1024:.1f}",
            percent(m["accuracy"]),
            "-" if m["top1_agreement"] is None else f"{m['top1_agreement']:.3f}",
            f"{m['cosine_similarity']:.5f}",
            f"{m['max_abs_error']:.2e}", f"{a['latency_ms']:.2f}", _spread(a), *on_devices, float_ops,
        ])
    rows += [[f"{n['target']} {n['variant']}", n["path"], "-",
              "failed" if n.get("failed") else "not built here", "-", "-", "-", "-", "-", *none,
              "-"] for n in report.get("not_built", [])]
    return rows


def device_cell(artifact: dict[str, Any], device: str) -> str:
    """The artifact on ``device``: median latency and agreement with Keras (top-1, else
    cosine), "failed", or "-" when it was not run there."""
    entry = next((e for e in artifact.get("devices", []) if e["name"] == device), None)
    if entry is None:
        return "-"
    if entry.get("failed"):
        return "failed"
    metrics = entry["metrics"]
    agreement = (f"top-1 {metrics['top1_agreement']:.3f}" if metrics["top1_agreement"] is not None
                 else f"cos {metrics['cosine_similarity']:.4f}")
    return f"{entry['latency_ms']:.2f} ms, {agreement}"


HEADERS = ["artifact", "path", "size KiB", "accuracy", "top-1 agree", "cosine", "max |err|",
           "latency ms", "p10-p90 ms", "float ops"]


def headers(report: dict[str, Any]) -> list[str]:
    """The table's columns: HEADERS with one column per device before the float ops."""
    return [*HEADERS[:-1], *(f"on {device}" for device in report.get("devices", [])), HEADERS[-1]]


def context_line(report: dict[str, Any]) -> str:
    """What was converted and validated on what (markdown inline code for names)."""
    model, dataset = report["model"], report["dataset"]
    from_data = model.get("input_shapes_from_dataset")
    sized = f", sizes of {', '.join(from_data)} from the dataset's samples" if from_data else ""
    return (f"Model `{model['path']}` ({model['format']}, input {model['input_shape']}{sized}); "
            f"{dataset['validation_count']} validation and {dataset['calibration_count']} "
            f"calibration images from `{dataset['path']}`.")


def latency_line(report: dict[str, Any]) -> str:
    """How latency was measured: on this host (and, in their own columns, on the devices)."""
    keras = report["reference"]
    runs = keras.get("latency_runs")
    devices = report.get("devices", [])
    several = len(devices) > 1
    where = (f"; the device column{'s' if several else ''} ({', '.join(devices)}) "
             f"{'were' if several else 'was'} measured on the device{'s' if several else ''}"
             if devices else ", not on the target device")
    return (f"Latency and validation ran on this build host ({cpu_names(report)}; "
            f"{keras['threads']} thread(s)){where}: median and p10-p90 of "
            f"{runs if runs is not None else 'the'} single-image runs.")


def cpu_names(report: dict[str, Any]) -> str:
    """The CPU(s) the reference and the validations ran on: quantized latency, and on x86-64
    without VNNI some int8 results, depend on its extensions (converters/cpu.py)."""
    records = [report["reference"].get("cpu"), *(a.get("cpu") for a in report["artifacts"])]
    names = list(dict.fromkeys(record["summary"] for record in records if record))
    return "; ".join(names) if names else platform.machine() or "unknown CPU"


def recommendation_line(report: dict[str, Any]) -> str:
    """The recommendation in one sentence (markdown inline code for paths)."""
    rec = report["recommendation"]
    if rec.get("withheld"):
        return f"No recommendation: {rec['withheld']}."
    where = f" on device {rec['latency_on']}" if rec.get("latency_on") else ""
    line = (f"Recommendation (accuracy drop at most {percent(rec['max_accuracy_drop'])}): "
            f"smallest `{rec['smallest']}`, fastest{where} {fastest_name(rec)}.")
    if rec.get("note"):
        line += f" Note: {rec['note']}."
    return line


def fastest_name(rec: dict[str, Any]) -> str:
    """The fastest artifact (markdown inline code), or why there is none."""
    if rec["fastest"] is not None:
        return f"`{rec['fastest']}`"
    return "none (no artifact within the bound was timed on the runtime it deploys with)"


def text_lines(report: dict[str, Any]) -> list[str]:
    """The report's sentences, shared by report.md and report.html (markdown inline code)."""
    lines = [f"**Warning:** {warning}" for warning in report.get("warnings", [])]
    lines.append(recommendation_line(report))
    lines += rejected_lines(report)
    lines += [f"`{a['path']}` failed validation: {a['failed']}" for a in failed(report)]
    lines += [f"`{n['path']}` was not built: {n['reason']}"
              for n in report.get("not_built", []) if n.get("failed")]
    lines += [f"`{n['path']}` was not needed: {n['reason']}" for n in report.get("not_needed", [])]
    lines += [f"`{a['path']}`: {a['recurrence']}." for a in report["artifacts"]
              if a.get("recurrence")]
    lines += [f"`{a['path']}`: largest relative error of the regression outputs "
              f"{a['regression_error']['relative_error']:.4f} "
              f"({a['regression_error']['output']}; bounded by --max-relative-error)."
              for a in report["artifacts"] if a.get("regression_error")]
    lines += [f"`{a['path']}` latency: {a['latency_not_on_runtime']}, so it does not compete for "
              "fastest." for a in report["artifacts"] if a.get("latency_not_on_runtime")]
    return lines + device_lines(report) + client_lines(report) + output_lines(report)


def device_lines(report: dict[str, Any]) -> list[str]:
    """Where each device is and what it is, and why an artifact did not run on it (one line per
    device and reason)."""
    lines = []
    for device in report.get("devices", []):
        entries = [(a["path"], e) for a in report["artifacts"] for e in a.get("devices", [])
                   if e["name"] == device]
        ran = next((e for _, e in entries if not e.get("failed")), None)
        if ran is not None:
            lines.append(f"On device `{device}` ({ran['host']}: {ran['arch']}, {ran['os']}, Python "
                         f"{ran['python']}, {ran['threads']} thread(s)), each artifact ran in the "
                         "runtime its bundle installs: latency is the median and p10-p90 of "
                         "single-sample runs after a warm-up, agreement with Keras is over "
                         f"{ran['samples']} validation samples.")
        reasons: dict[str, list[str]] = {}
        for path, entry in entries:
            if entry.get("failed"):
                reasons.setdefault(entry["failed"], []).append(f"`{path}`")
        lines += [f"Not measured on device `{device}` ({', '.join(paths)}): {reason}"
                  for reason, paths in reasons.items()]
    return lines


def rejected_lines(report: dict[str, Any]) -> list[str]:
    """One sentence per artifact left out of the recommendation for its accuracy drop, with the
    drop and the bound (markdown inline code for paths): report.md, report.html and the console
    say the same. Failed artifacts have their own lines (:func:`text_lines`)."""
    rec = report["recommendation"]
    by_path = {a["path"]: a for a in report["artifacts"]}
    over = [by_path[path] for path in rec["rejected"]
            if path in by_path and not by_path[path].get("failed")]
    return [f"Rejected `{a['path']}`: accuracy drop {percent(a['accuracy_drop'])} is over the "
            f"{percent(rec['max_accuracy_drop'])} bound." for a in over]


def client_lines(report: dict[str, Any]) -> list[str]:
    """One line per real-client check: each artifact's result, or one reason shared by all."""
    lines = []
    for check in client_checks().values():
        checked = [(a["variant"], a[check.key]) for a in report["artifacts"] if a.get(check.key)]
        reasons = {entry.get("reason") for _, entry in checked}
        if not checked:
            continue
        if len(reasons) == 1 and None not in reasons:
            lines.append(f"{check.title}: {reasons.pop()}.")
            continue
        parts = [f"{variant} {entry.get('summary') or entry.get('reason')}"
                 for variant, entry in checked]
        lines.append(f"{check.title}: {'; '.join(parts)}.")
    return lines


def output_lines(report: dict[str, Any]) -> list[str]:
    """Per-output headline metrics of artifacts that are not a single classifier (markdown)."""
    lines = []
    for artifact in report["artifacts"]:
        outputs = artifact.get("outputs")
        if artifact.get("failed") or not outputs or single_classifier(outputs):
            continue
        parts = [f"{name} ({record['task']}{'/' + record['head'] if record.get('head') else ''}): "
                 f"{record['headline']} {headline_value(record):.4g}, SNR {record['snr_db']:.1f} dB"
                 for name, record in outputs.items()]
        lines.append(f"`{artifact['path']}` per output: {'; '.join(parts)}.")
    return lines


def headline_value(record: dict[str, Any]) -> float:
    """The value of an output's headline metric (with labels, the artifact's own, not the drop)."""
    return float(record[record["headline"]])


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Conversion report: {report['model']['name']}",
        "",
        f"**{verdict(report)}**",
        "",
        f"{context_line(report)} {latency_line(report)} {toolchain_line(report)}",
        "",
        *md_table(headers(report), table_rows(report)),
        "",
        *text_lines(report),
    ]
    for target, hooks in report_hooks():
        if report.get(target):
            lines += hooks.markdown(report[target])
    lines += quantization_report.markdown(report)
    return "\n".join(lines) + "\n"


def failed(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The artifacts that were built but failed validation."""
    return [a for a in report["artifacts"] if a.get("failed")]


QUALITY_MARGIN = 0.02  # below the lowest point on the quality axis, so no marker sits on the edge
MARKERS = "osD^vP*X"


def import_plotting() -> None:
    """Import matplotlib with its file-only backend (Agg): the trade-off plot needs no display.
    The build calls it in a background thread while the stage processes run, so the report
    stage does not wait for the import (0.3-0.5 s on a 2-core EPYC)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def tradeoff_plot_png(report: dict[str, Any]) -> bytes:
    """Size and latency against accuracy (or top-1 agreement without labels), one run's numbers.

    One marker and colour per artifact in both panels, one shared legend, each point labelled
    (labels of points that sit on top of each other are stacked, not overlapped); the latency
    panel shows each p10-p90 spread; the quality axis stops at 100 %.
    """
    import_plotting()
    import matplotlib.pyplot as plt

    labelled = report["reference"]["accuracy"] is not None
    quality_name = "accuracy" if labelled else "top-1 agreement with Keras"
    measured = [a for a in report["artifacts"] if not a.get("failed")]
    qualities = [quality(a, labelled) for a in measured]
    figure, (by_size, by_latency) = plt.subplots(1, 2, figsize=(10, 4.6), dpi=100)
    size_points = [(a["size_bytes"] / 1024, q) for a, q in zip(measured, qualities, strict=True)]
    latency_points = [(a["latency_ms"], q) for a, q in zip(measured, qualities, strict=True)]
    for index, artifact in enumerate(measured):
        style = {"s": 70, "marker": MARKERS[index % len(MARKERS)], "color": f"C{index}",
                 "alpha": 0.8, "zorder": 3}
        by_size.scatter(*size_points[index], label=f"{artifact['target']} {artifact['variant']}",
                        **style)
        by_latency.scatter(*latency_points[index], **style)
        low, high = latency_range(artifact)
        by_latency.plot([low, high], [qualities[index]] * 2, color=f"C{index}", alpha=0.5,
                        linewidth=2, zorder=2)
    keras = report["reference"]
    if labelled:
        qualities.append(keras["accuracy"])
        by_size.axhline(keras["accuracy"], color="grey", linestyle="--", label="Keras accuracy")
        by_latency.axhline(keras["accuracy"], color="grey", linestyle="--")
    by_latency.axvline(keras["latency_ms"], color="grey", linestyle=":", label="Keras latency")
    one_target = len({a["target"] for a in measured}) == 1  # then the variant says it all
    names = [a["variant"] if one_target else f"{a['target']} {a['variant']}" for a in measured]
    by_size.set(xlabel="size (KiB)", title="size vs " + quality_name)
    by_latency.set(xlabel="latency (ms, log scale; median, bar: p10-p90)", xscale="log",
                   title="latency vs " + quality_name)
    for axis, points in ((by_size, size_points), (by_latency, latency_points)):
        quality_axis(axis, qualities, quality_name)
        label_points(axis, points, names)
    handles = by_size.get_legend_handles_labels()[0] + by_latency.get_legend_handles_labels()[0]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=9,
                  frameon=False)
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def quality(artifact: dict[str, Any], labelled: bool) -> float:
    """The plotted quality of an artifact: accuracy with labels, else top-1 agreement (else, for
    outputs without classes, one minus the headline metric's drop)."""
    metrics = artifact["metrics"]
    if labelled and metrics["accuracy"] is not None:
        return float(metrics["accuracy"])
    if metrics["top1_agreement"] is not None:
        return float(metrics["top1_agreement"])
    return 1.0 - float(artifact["accuracy_drop"])


def quality_axis(axis: Any, qualities: list[float], name: str) -> None:
    """A percent axis from a little below the lowest point to 100 %, no tick above 100 %."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    low = max(0.0, min(qualities, default=0.0) - QUALITY_MARGIN)
    axis.set_ylim(low, 1.0 + QUALITY_MARGIN / 4)  # room for a marker drawn at exactly 100 %
    ticks = [t for t in MaxNLocator(nbins=5).tick_values(low, 1.0) if low <= t <= 1.0 + 1e-9]
    axis.set_yticks(ticks)
    axis.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    axis.set_ylabel(name)
    axis.grid(alpha=0.3)


LABEL_BOX = (70.0, 14.0)  # pixels a point's label takes beside it: closer points stack labels


def label_points(axis: Any, points: list[tuple[float, float]], names: list[str]) -> None:
    """Write each point's name beside it; labels of points closer on screen than a label's
    size are stacked upwards instead of printed over each other."""
    placed: list[tuple[float, float]] = []
    for (x, y), name in zip(points, names, strict=True):
        px, py = axis.transData.transform((x, y))
        near = sum(1 for qx, qy in placed
                   if abs(qx - px) < LABEL_BOX[0] and abs(qy - py) < LABEL_BOX[1])
        placed.append((px, py))
        axis.annotate(name, (x, y), xytext=(7, 5 + 11 * near), textcoords="offset points",
                      fontsize=8, va="bottom")


def verdict(report: dict[str, Any]) -> str:
    """The recommendation and why, in one sentence with the numbers that decided it (markdown
    inline code for paths): the top of report.html."""
    rec = report["recommendation"]
    if rec.get("withheld"):
        return f"No recommendation: {rec['withheld']}."
    bound = percent(rec["max_accuracy_drop"])
    if rec["smallest"] is None:
        return (f"No recommendation: no artifact stays within the {bound} accuracy-drop bound "
                "(see the table and the reasons below).")
    by_path = {a["path"]: a for a in report["artifacts"]}
    smallest, fastest = by_path[rec["smallest"]], by_path.get(rec["fastest"])
    labelled = report["reference"]["accuracy"] is not None
    name = "accuracy" if labelled else "top-1 agreement with Keras"
    keras = f" against Keras {percent(report['reference']['accuracy'])}" if labelled else ""
    line = (f"Within the {bound} accuracy-drop bound, `{smallest['path']}` is the smallest "
            f"({smallest['size_bytes'] / 1024:.1f} KiB, {name} "
            f"{percent(quality(smallest, labelled))}{keras})")
    device = rec.get("latency_on")
    where = f"on device {device}" if device else "on this host"

    def latency(artifact: dict[str, Any]) -> str:
        timing = device_timing(artifact, device)
        return "not measured" if timing is None else f"{timing['latency_ms']:.3g} ms"

    if fastest is None:
        line += "; none was timed on the runtime it deploys with, so none is called fastest"
    elif fastest is smallest:
        line += f" and the fastest ({latency(fastest)} median {where})"
    else:
        line += (f" and `{fastest['path']}` the fastest ({latency(fastest)} median {where} "
                 f"against {latency(smallest)}")
        line += ", a tie within the p10-p90 spread)" if rec.get("fastest_ties") else ")"
    return line + "."


ROW_STATES = {"failed": "failed", "not built here": "not-built"}
PAGE_STYLE = """
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em 1.5em;max-width:76em;
  line-height:1.4;color:#1b1b1b}
h1{font-size:1.6em;margin:.3em 0}h2{margin-top:1.6em}
h1,h2,h3,p,li{overflow-wrap:anywhere}
code{overflow-wrap:anywhere;font-size:.92em}
.summary{border-left:6px solid #2e7d32;background:#eef7ee;padding:.6em 1em;font-size:1.1em}
.summary.none{border-color:#c62828;background:#fdecea}
.wide{max-width:100%;overflow-x:auto}
table{border-collapse:collapse;width:100%;margin:.5em 0}
td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3;white-space:nowrap}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.name{overflow-wrap:anywhere;min-width:7em}
.ops{font-size:smaller;overflow-wrap:anywhere}
tr.recommended td{background:#e3f2e5;font-weight:600}
.badge{display:inline-block;font-size:.75em;font-weight:600;padding:0 .4em;margin-left:.3em;
  border-radius:.6em;background:#2e7d32;color:#fff}
tr.failed td{color:#b71c1c;background:#fdecea}
tr.not-built td{color:#666;font-style:italic;background:#f6f6f6}
img{max-width:100%;height:auto}
small.path{display:block;color:#555;font-weight:normal;overflow-wrap:anywhere}
@media (max-width:700px){body{padding:.5em}td,th{padding:3px 4px}table{font-size:.85em}}
"""


def artifact_table_html(report: dict[str, Any]) -> str:
    """The artifact table: the path under each name, numbers right-aligned, the recommended
    rows highlighted and named, failed and not-built rows marked (no script needed)."""
    escape = html.escape
    rec = report["recommendation"]
    badges: dict[str, list[str]] = {}
    for role in ("smallest", "fastest"):
        if rec.get(role):
            badges.setdefault(rec[role], []).append(role)
    columns = headers(report)
    path_column = columns.index("path")
    shown = [i for i in range(len(columns)) if i != path_column]
    # Device cells ("0.10 ms, top-1 1.000") may wrap: they are not aligned as numbers.
    numeric = {i for i, h in enumerate(columns)
               if h not in ("artifact", "path", "float ops") and not h.startswith("on ")}
    header = "".join(f"<th{' class=num' if i in numeric else ''}>{escape(columns[i])}</th>"
                     for i in shown)
    body = []
    for row in table_rows(report):
        path = row[path_column]
        state = ROW_STATES.get(row[columns.index("accuracy")], "")
        marks = "".join(f'<span class="badge">{role}</span>' for role in badges.get(path, []))
        classes = " ".join(c for c in (state, "recommended" if marks else "") if c)
        cells = []
        for i in shown:
            if i == 0:
                where = "" if path == "-" else f'<small class="path">{escape(path)}</small>'
                cells.append(f'<td class="name">{escape(row[i])}{marks}{where}</td>')
            else:
                kind = " class=num" if i in numeric else " class=ops" if columns[i] == "float ops" else ""
                cells.append(f"<td{kind}>{escape(row[i])}</td>")
        body.append(f"<tr{f' class={chr(34)}{classes}{chr(34)}' if classes else ''}>"
                    + "".join(cells) + "</tr>")
    return (f'<div class="wide"><table id="artifacts"><thead><tr>{header}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def html_page(report: dict[str, Any]) -> str:
    """report.html: the verdict first, then the table, the plot and the details. One
    self-contained file (inline style and image, no script, nothing fetched): bundles go to
    air-gapped sites."""
    name = html.escape(report["model"]["name"])
    plot = base64.b64encode(tradeoff_plot_png(report)).decode()
    rec = report["recommendation"]
    warnings = "".join(f"<p>{inline_html(f'**Warning:** {w}')}</p>" for w in report.get("warnings", []))
    details = [context_line(report), latency_line(report), toolchain_line(report),
               *(line for line in text_lines(report) if not line.startswith("**Warning:**"))]
    paragraphs = "".join(f"<p>{inline_html(line)}</p>" for line in details)
    summary_class = "summary" if rec.get("smallest") else "summary none"
    sections = "".join(hooks.html(report[target]) for target, hooks in report_hooks()
                       if report.get(target))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Conversion report: {name}</title>
<style>{PAGE_STYLE}</style>
</head><body>
<h1>Conversion report: {name}</h1>
<section id="summary" class="{summary_class}"><p>{inline_html(verdict(report))}</p>{warnings}</section>
<h2>Artifacts</h2>
{artifact_table_html(report)}
<h2>Trade-off</h2>
<img id="tradeoff" alt="size and latency against accuracy" src="data:image/png;base64,{plot}">
<h2>Details</h2>
{paragraphs}
{sections}
{quantization_report.html_section(report)}
</body></html>
"""
