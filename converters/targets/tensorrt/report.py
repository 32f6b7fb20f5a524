"""The TensorRT part of the report: each engine's numbers, or why it was not built."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from converters.fsutil import read_json
from converters.reporting.markup import inline_html, percent


def section(build_dir: Path, records: list[str]) -> list[dict[str, Any]]:
    """Every engine record asked for (built or not), a built engine's with the metrics and
    batch-1 latency its validation measured (the same numbers as its artifact row)."""
    engines = [read_json(build_dir / record) for record in records]
    for engine in engines:
        if engine["ran"]:
            validation = read_json(build_dir / engine["validation"])
            engine |= {"metrics": validation["metrics"], "latency_ms": validation["latency_ms"]}
    return engines


def engine_lines(engines: list[dict[str, Any]]) -> list[str]:
    """One line per engine built, and one per reason for the engines that were not."""
    lines = [f"{', '.join(precisions)} {'engine' if len(precisions) == 1 else 'engines'}: not "
             f"built. {reason}" for precisions, reason in not_built(engines)]
    for engine in engines:
        if not engine["ran"]:
            continue
        metrics, facts = engine["metrics"], engine["sidecar"]
        lines.append(
            f"{engine['precision']} engine `{engine['engine']}` ({engine['size_bytes'] / 2**20:.2f} MiB,"
            f" TensorRT {facts['tensorrt_version']}, {facts['gpu']} sm {facts['compute_capability']}):"
            f" top-1 agreement {metrics['top1_agreement']:.3f}, accuracy {percent(metrics['accuracy'])},"
            f" latency {engine['latency_ms']:.2f} ms at batch 1, "
            f"{engine['latency_ms_opt_batch']:.2f} ms at batch {engine['opt_batch']}")
    return lines


def not_built(engines: list[dict[str, Any]]) -> list[tuple[list[str], str]]:
    """Engines that were not built, grouped by reason (one reason is said once, not per engine)."""
    groups: dict[str, list[str]] = {}
    for engine in engines:
        if not engine["ran"]:
            groups.setdefault(engine["reason"], []).append(engine["precision"])
    return [(precisions, reason) for reason, precisions in groups.items()]


def markdown(engines: list[dict[str, Any]]) -> list[str]:
    return ["", "## TensorRT", ""] + [f"- {line}" for line in engine_lines(engines)]


def html_section(engines: list[dict[str, Any]]) -> str:
    items = "".join(f"<li>{inline_html(line)}</li>" for line in engine_lines(engines))
    return f"<h2>{html.escape('TensorRT')}</h2><ul>{items}</ul>"
