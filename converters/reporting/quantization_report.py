"""report.md / report.html sections on quantization: per artifact, who made it (``engine``),
the ops whose quantization adds the most error (``op_errors``, grouped by the Keras layer that
made them) and, for accuracy-aware int8,
which ops stayed float and what that recovered and cost (``mixed_precision``).

Reads only report.json's artifact entries, so it serves every target that records them.
"""

from __future__ import annotations

import html
from typing import Any

from converters.reporting.markup import inline_html, md_table, percent

OP_HEADERS = ["layer", "op", "added error", "error at output", "tensor"]
NUMERIC = {2, 3}
SHORT_TENSOR = 40  # characters of a tensor name report.html shows (all of it on hover)
ERROR_NOTE = ("Error: per-channel squared error against the fp32 model over the channel's mean "
              "square, on calibration images; \"added\" subtracts the error already in the op's "
              "inputs.")


def quantized(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The artifacts with a per-op error list or a mixed-precision search."""
    return [a for a in report["artifacts"] if a.get("op_errors") or a.get("mixed_precision")]


def by_layer(artifact: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-op rows grouped by the Keras layer that made them (rows without a layer are
    their own group), groups by their largest error, rows within a group largest first."""
    rows = artifact.get("op_errors") or []
    worst: dict[str, float] = {}
    for row in rows:
        group = row.get("layer") or f"#{row['index']}"
        worst[group] = max(worst.get(group, 0.0), row["value"])
    return sorted(rows, key=lambda row: (-worst[row.get("layer") or f"#{row['index']}"],
                                         row.get("layer") or "", -row["value"]))


def op_rows(artifact: dict[str, Any]) -> list[list[str]]:
    return [[row.get("layer") or "-", f"{row['op']} #{row['index']}", f"{row['value']:.2e}",
             f"{row['output_nmse']:.2e}", row["tensor"]] for row in by_layer(artifact)]


def mixed_line(artifact: dict[str, Any]) -> str | None:
    """One sentence on the accuracy-aware search (markdown inline code for names)."""
    mixed = artifact.get("mixed_precision")
    if not mixed:
        return None
    kept = ", ".join(f"`{row['op']} #{row['index']}`" for row in mixed["kept_float"]) or "none"
    bound = "within" if mixed["within_bound"] else "still over"
    return (f"Accuracy-aware int8 kept {len(mixed['kept_float'])} op(s) in float ({kept}): "
            f"{mixed['score_basis']} {percent(mixed['int8_score'])} (plain int8) -> "
            f"{percent(mixed['score'])} against {percent(mixed['fp32_score'])} for fp32, "
            f"{bound} the {percent(mixed['max_accuracy_drop'])} bound; cost "
            f"{mixed['size_cost_bytes'] / 1024:+.1f} KiB and {mixed['latency_cost_ms']:+.3f} ms "
            "against plain int8.")


def title(artifact: dict[str, Any]) -> str:
    engine = f" (made by {artifact['engine']})" if artifact.get("engine") else ""
    return f"`{artifact['path']}`{engine}: ops with the largest quantization error"


def markdown(report: dict[str, Any]) -> list[str]:
    artifacts = quantized(report)
    if not artifacts:
        return []
    lines = ["", "## Where quantization hurts", "", ERROR_NOTE]
    for artifact in artifacts:
        if rows := op_rows(artifact):
            lines += ["", title(artifact), "", *md_table(OP_HEADERS, rows)]
        if (line := mixed_line(artifact)) is not None:
            lines += ["", line]
    return lines


def html_cell(column: int, text: str) -> str:
    """A per-op table cell: numbers right-aligned; a long tensor name shortened to its end,
    the whole name on hover."""
    if column in NUMERIC:
        return f"<td class=num>{html.escape(text)}</td>"
    if OP_HEADERS[column] == "tensor" and len(text) > SHORT_TENSOR:
        short = "…" + text.split(";")[0][-SHORT_TENSOR:]
        return f'<td class="name"><span title="{html.escape(text)}">{html.escape(short)}</span></td>'
    return f'<td class="name">{html.escape(text)}</td>'


def html_section(report: dict[str, Any]) -> str:
    artifacts = quantized(report)
    if not artifacts:
        return ""
    parts = ['<h2 id="op-errors">Where quantization hurts</h2>', f"<p>{inline_html(ERROR_NOTE)}</p>"]
    header = "".join(f"<th{' class=num' if i in NUMERIC else ''}>{html.escape(h)}</th>"
                     for i, h in enumerate(OP_HEADERS))
    for artifact in artifacts:
        if rows := op_rows(artifact):
            body = "".join("<tr>" + "".join(html_cell(i, cell) for i, cell in enumerate(row))
                           + "</tr>" for row in rows)
            parts += [f"<h3>{inline_html(title(artifact))}</h3>",
                      f'<div class="wide"><table class="op-errors"><thead><tr>{header}</tr></thead>'
                      f"<tbody>{body}</tbody></table></div>"]
        if (line := mixed_line(artifact)) is not None:
            parts.append(f"<p>{inline_html(line)}</p>")
    return "\n".join(parts) + "\n"
