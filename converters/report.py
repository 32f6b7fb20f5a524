"""report.json (the contract), report.md (a table) and report.html (table, plot, recommendation).

The report stage runs on the host: it only reads the JSON records the other stages wrote.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from converters import cache, edgetpu_report
from converters.fsutil import (
    read_json,
    sha256_tree,
    tree_size,
    write_json_atomic,
    write_text_atomic,
)
from converters.stages import data, export, reference
from converters.stages.base import StageContext

SCHEMA_VERSION = 1
NEAR_CHANCE_FACTOR = 1.5  # reference accuracy below this many times chance is a warning
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
OUTPUTS = (REPORT_JSON, REPORT_MD, REPORT_HTML)


def run(context: StageContext) -> None:
    """Stage ``report``: assemble every validation record of this model into the reports."""
    report = assemble(context.build_dir, context.params, context.spec.deps)
    write_json_atomic(context.write(REPORT_JSON), report)
    write_text_atomic(context.write(REPORT_MD), markdown(report))
    write_text_atomic(context.write(REPORT_HTML), html_page(report))


def assemble(build_dir: Path, params: dict[str, Any], stages: tuple[str, ...]) -> dict[str, Any]:
    model = read_json(build_dir / export.MODEL_INFO)
    dataset = read_json(build_dir / data.DATASET_INFO)
    keras = read_json(build_dir / reference.SUMMARY)
    artifacts = [artifact_entry(build_dir, read_json(build_dir / record), keras)
                 for record in params["records"]]
    bound = params["max_accuracy_drop"]
    inputs = read_json(build_dir / cache.STAMP_DIR / cache.BUILD_INFO)["inputs"]
    warnings = result_warnings(dataset, keras)
    recommendation = recommend(artifacts, bound)
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
            "latency_method": keras["latency_method"],
            "threads": keras["threads"],
        },
        "artifacts": artifacts,
        "warnings": warnings,
        "recommendation": recommendation,
        "stages": stage_provenance(build_dir, stages),
        "edgetpu": edgetpu_report.section(build_dir, params["edgetpu"]) if "edgetpu" in params else None,
        "tensorrt": [read_json(build_dir / record) for record in params.get("tensorrt", [])],
    }


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
        stamp = cache.read_stamp(build_dir, name)
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


def artifact_entry(build_dir: Path, record: dict[str, Any], keras: dict[str, Any]) -> dict[str, Any]:
    path = build_dir / record["path"]
    conversion = read_json(path.with_suffix(".json"))
    metrics = record["metrics"]
    drop: float | None = None
    basis: str | None = None
    if record.get("failed"):
        pass  # no metrics to compare: the artifact is listed as failed, never recommended
    elif metrics["accuracy"] is not None and keras["accuracy"] is not None:
        drop = keras["accuracy"] - metrics["accuracy"]
        basis = "accuracy"
    else:
        drop = 1.0 - metrics["top1_agreement"]
        basis = "top1_agreement"
    return {
        "failed": record.get("failed"),
        "target": record["target"],
        "variant": record["variant"],
        "path": record["path"],
        "sha256": sha256_tree(path),
        "size_bytes": tree_size(path),
        "latency_ms": record["latency_ms"],
        "threads": record["threads"],
        "runtime": record["runtime"],
        "metrics": metrics,
        "accuracy_drop": drop,
        "accuracy_drop_basis": basis,
        "float_ops": conversion["float_ops"],
        "io": {"input": conversion["input"], "output": conversion["output"]},
        "conversion_seconds": conversion["conversion_seconds"],
    }


def recommend(artifacts: list[dict[str, Any]], bound: float) -> dict[str, Any]:
    """The smallest and the fastest artifact whose accuracy drop stays within ``bound``."""
    eligible = [a for a in artifacts
                if not a.get("failed") and a["accuracy_drop"] <= bound + 1e-12]
    smallest = min(eligible, key=lambda a: (a["size_bytes"], a["latency_ms"]), default=None)
    fastest = min(eligible, key=lambda a: (a["latency_ms"], a["size_bytes"]), default=None)
    return {
        "max_accuracy_drop": bound,
        "smallest": smallest["path"] if smallest else None,
        "fastest": fastest["path"] if fastest else None,
        "rejected": sorted(a["path"] for a in artifacts if a not in eligible),
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """Rows shared by report.md, report.html and the console summary."""
    keras = report["reference"]
    rows = [["Keras (reference)", "-", "-", _percent(keras["accuracy"]), "-", "-", "-",
             f"{keras['latency_ms']:.2f}", "-"]]
    for a in report["artifacts"]:
        m = a["metrics"]
        float_ops = ", ".join(f"{o['op']}×{o['count']}" for o in a["float_ops"]) or "none"
        if a.get("failed"):
            rows.append([f"{a['target']} {a['variant']}", a["path"],
                         f"{a['size_bytes'] / 1024:.1f}", "failed", "-", "-", "-", "-", float_ops])
            continue
        rows.append([
            f"{a['target']} {a['variant']}", a["path"], f"{a['size_bytes'] / 1024:.1f}",
            _percent(m["accuracy"]), f"{m['top1_agreement']:.3f}", f"{m['cosine_similarity']:.5f}",
            f"{m['max_abs_error']:.4g}", f"{a['latency_ms']:.2f}", float_ops,
        ])
    return rows


HEADERS = ["artifact", "path", "size KiB", "accuracy", "top-1 agree", "cosine", "max |err|",
           "latency ms", "float ops"]


def markdown(report: dict[str, Any]) -> str:
    model, dataset, rec = report["model"], report["dataset"], report["recommendation"]
    lines = [
        f"# Conversion report: {model['name']}",
        "",
        f"Model `{model['path']}` ({model['format']}, input {model['input_shape']}); "
        f"{dataset['validation_count']} validation and {dataset['calibration_count']} calibration "
        f"images from `{dataset['path']}`. Latency: median of single-image runs, "
        f"{report['reference']['threads']} thread(s). {toolchain_line(report)}",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(report)]
    lines += [""] + [f"**Warning:** {warning}" for warning in report.get("warnings", [])]
    lines += ["", f"No recommendation: {rec['withheld']}." if rec.get("withheld") else
              f"Recommendation (accuracy drop at most {_percent(rec['max_accuracy_drop'])}): "
              f"smallest `{rec['smallest']}`, fastest `{rec['fastest']}`."]
    if rec["rejected"]:
        lines.append(f"Over the bound or failed: {', '.join(f'`{p}`' for p in rec['rejected'])}.")
    lines += [f"- `{a['path']}` failed validation: {a['failed']}" for a in failed(report)]
    if report.get("edgetpu"):
        lines += edgetpu_report.markdown(report["edgetpu"])
    if report.get("tensorrt"):
        lines += ["", "## TensorRT", ""] + [f"- {line}" for line in tensorrt_lines(report)]
    return "\n".join(lines) + "\n"


def failed(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The artifacts that were built but failed validation."""
    return [a for a in report["artifacts"] if a.get("failed")]


def tensorrt_lines(report: dict[str, Any]) -> list[str]:
    """One line per engine asked for: its numbers, or why it was not built."""
    lines = []
    for engine in report["tensorrt"]:
        if not engine["ran"]:
            lines.append(f"{engine['precision']} engine: not built. {engine['reason']}")
            continue
        metrics, facts = engine["metrics"], engine["sidecar"]
        lines.append(
            f"{engine['precision']} engine `{engine['engine']}` ({engine['size_bytes'] / 2**20:.2f} MiB,"
            f" TensorRT {facts['tensorrt_version']}, {facts['gpu']} sm {facts['compute_capability']}):"
            f" top-1 agreement {metrics['top1_agreement']:.3f}, accuracy {_percent(metrics['accuracy'])},"
            f" latency {engine['latency_ms']:.2f} ms at batch 1, "
            f"{engine['latency_ms_opt_batch']:.2f} ms at batch {engine['opt_batch']}")
    return lines


def tradeoff_plot_png(report: dict[str, Any]) -> bytes:
    """Size and latency against accuracy (or top-1 agreement without labels), one run's numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labelled = report["reference"]["accuracy"] is not None
    quality_name = "accuracy" if labelled else "top-1 agreement with Keras"
    figure, (by_size, by_latency) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    markers = "osD^vP*X"
    # One colour and marker per artifact in both panels, named once in the legend: artifacts
    # often sit on top of each other, where text labels would overlap.
    measured = [a for a in report["artifacts"] if not a.get("failed")]
    for index, artifact in enumerate(measured):
        metrics = artifact["metrics"]
        quality = metrics["accuracy"] if labelled else metrics["top1_agreement"]
        style = {"s": 70, "marker": markers[index % len(markers)], "color": f"C{index}",
                 "alpha": 0.8}
        by_size.scatter(artifact["size_bytes"] / 1024, quality,
                        label=f"{artifact['target']} {artifact['variant']}", **style)
        by_latency.scatter(artifact["latency_ms"], quality, **style)
    if labelled:
        for axis in (by_size, by_latency):
            axis.axhline(report["reference"]["accuracy"], color="grey", linestyle="--",
                         label="Keras" if axis is by_size else None)
    by_latency.axvline(report["reference"]["latency_ms"], color="grey", linestyle=":",
                       label="Keras latency")
    by_size.legend(loc="lower right", fontsize=8)
    by_latency.legend(loc="lower right", fontsize=8)
    by_size.set(xlabel="size (KiB)", ylabel=quality_name, title="size vs " + quality_name)
    by_latency.set(xlabel="median latency (ms)", ylabel=quality_name,
                   title="latency vs " + quality_name)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def html_page(report: dict[str, Any]) -> str:
    escape = html.escape
    header = "".join(f"<th>{escape(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>"
                   for row in table_rows(report))
    plot = base64.b64encode(tradeoff_plot_png(report)).decode()
    rec = report["recommendation"]
    name = escape(report["model"]["name"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Conversion report: {name}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:nth-child(-n+2){{text-align:left}}</style>
</head><body>
<h1>Conversion report: {name}</h1>
<p>{f"No recommendation: {escape(rec['withheld'])}." if rec.get("withheld") else
f"Recommendation (accuracy drop at most {escape(_percent(rec['max_accuracy_drop']))}): smallest "
f"<code>{escape(str(rec['smallest']))}</code>, fastest <code>{escape(str(rec['fastest']))}</code>."}</p>
<p>{escape(toolchain_line(report))}</p>
{"".join(f'<p class="warning"><strong>Warning:</strong> {escape(w)}</p>' for w in report.get("warnings", []))}
<table><tr>{header}</tr>{body}</table>
{"<ul>" + "".join(f"<li><code>{escape(a['path'])}</code> failed validation: {escape(a['failed'])}</li>"
                  for a in failed(report)) + "</ul>" if failed(report) else ""}
{edgetpu_report.html_section(report["edgetpu"]) if report.get("edgetpu") else ""}
{"<h2>TensorRT</h2><ul>" + "".join(f"<li>{escape(line)}</li>" for line in tensorrt_lines(report))
 + "</ul>" if report.get("tensorrt") else ""}
<h2>Trade-off</h2>
<img alt="size and latency against accuracy" src="data:image/png;base64,{plot}">
</body></html>
"""
