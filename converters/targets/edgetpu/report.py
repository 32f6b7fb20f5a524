"""The Edge TPU part of the report: the pre-check's prediction and the compiler's verdict side by
side, the CPU ops with their reasons, off-chip memory and the runtime version the model needs."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from converters import console
from converters.fsutil import read_json
from converters.reporting.markup import inline_html, md_table


def section(build_dir: Path, records: dict[str, str]) -> dict[str, Any]:
    precheck = read_json(build_dir / records["precheck"])
    compiled = read_json(build_dir / records["compile"])
    compiler = compiled if compiled["ran"] else None
    off_chip = compiler.get("off_chip_memory_used") if compiler else None
    return {
        "compiled": compiler is not None,
        "not_run_reason": None if compiler else compiled["reason"],
        "options": compiled["options"],
        "precheck": precheck,
        "compiler": compiler,
        "predicted_tpu_fraction": precheck["tpu_fraction"],
        "tpu_fraction": compiler["tpu_fraction"] if compiler else None,
        "runtime_version_needed": compiler["runtime_version_needed"] if compiler else None,
        "compiled_models": ([f"edgetpu/compiled/{name}" for name in compiler["compiled_models"]]
                            if compiler else []),
        "off_chip_warning": (f"{off_chip / 2**20:.2f} MiB of parameters do not fit in the Edge "
                             "TPU's on-chip memory and are streamed at every inference (slower)"
                             if off_chip else None),
        "side_by_side": side_by_side(precheck["table"], compiler["table"] if compiler else None),
        "split": split_section(build_dir, records.get("split")),
    }


def split_section(build_dir: Path, record: str | None) -> dict[str, Any] | None:
    """The ``--edgetpu-split`` record with its files relative to the build folder; None without."""
    if record is None:
        return None
    split = read_json(build_dir / record)
    folder = Path(record).parent
    return {**split, "record": record,
            **({"head": str(folder / split["head"]), "tail": str(folder / split["tail"])}
               if split["split"] else {})}


def side_by_side(predicted: list[dict[str, Any]],
                 compiled: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """One row per operator: the pre-check's and the compiler's (count, status) pairs."""
    operators = list(dict.fromkeys(row["operator"] for row in [*predicted, *(compiled or [])]))

    def statuses(rows: list[dict[str, Any]], operator: str) -> list[dict[str, Any]]:
        return [{"count": r["count"], "status": r["status"]} for r in rows if r["operator"] == operator]

    return [{"operator": op, "precheck": statuses(predicted, op),
             "compiler": statuses(compiled, op) if compiled is not None else None}
            for op in operators]


def _cell(entries: list[dict[str, Any]] | None) -> str:
    if entries is None:
        return "did not run"
    return "; ".join(f"{e['count']} × {e['status']}" for e in entries) or "-"


def _fraction(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def summary_lines(edgetpu: dict[str, Any]) -> list[str]:
    precheck = edgetpu["precheck"]
    lines = [f"Pre-check (no compiler): {precheck['tpu_ops']} of {precheck['total_ops']} ops "
             f"predicted on the Edge TPU ({_fraction(precheck['tpu_fraction'])})."]
    lines += [f"Will not compile: {problem}" for problem in precheck["blocking"]]
    compiler = edgetpu["compiler"]
    if compiler is None:
        lines.append(f"Compiler: did not run. {edgetpu['not_run_reason']}")
    else:
        lines.append(
            f"Compiler {compiler['compiler_version']}: {compiler['tpu_ops']} of "
            f"{compiler['total_ops']} ops mapped ({_fraction(compiler['tpu_fraction'])}), "
            f"{compiler['edgetpu_subgraphs']} Edge TPU subgraph(s); the model needs Edge TPU "
            f"runtime {compiler['runtime_version_needed']} or newer.")
    if edgetpu["off_chip_warning"]:
        lines.append(f"Warning: {edgetpu['off_chip_warning']}.")
    if edgetpu.get("split"):
        from converters.targets.edgetpu.split import split_lines

        lines += split_lines(edgetpu["split"])
    lines += [f"Note: {note}" for note in precheck.get("notes", [])]
    return lines


def markdown(edgetpu: dict[str, Any]) -> list[str]:
    lines = ["", "## Edge TPU", ""]
    lines += [f"- {line}" for line in summary_lines(edgetpu)]
    lines += ["", *md_table(["operator", "pre-check", "compiler"],
                            [[row["operator"], _cell(row["precheck"]), _cell(row["compiler"])]
                             for row in edgetpu["side_by_side"]])]
    reasons = edgetpu["precheck"]["cpu_op_reasons"]
    if reasons:
        lines += ["", "Predicted CPU ops and why:", ""]
        lines += [f"- op {r['index']} {r['operator']}: {r['reason']}" for r in reasons]
    return lines


def html_section(edgetpu: dict[str, Any]) -> str:
    escape = html.escape
    items = "".join(f"<li>{inline_html(line)}</li>" for line in summary_lines(edgetpu))
    rows = "".join(f"<tr><td>{escape(row['operator'])}</td><td>{escape(_cell(row['precheck']))}"
                   f"</td><td>{escape(_cell(row['compiler']))}</td></tr>"
                   for row in edgetpu["side_by_side"])
    reasons = "".join(f"<li>op {r['index']} {escape(r['operator'])}: {escape(r['reason'])}</li>"
                      for r in edgetpu["precheck"]["cpu_op_reasons"])
    return (f"<h2>Edge TPU</h2><ul>{items}</ul><table><tr><th>operator</th><th>pre-check</th>"
            f"<th>compiler</th></tr>{rows}</table>"
            + (f"<p>Predicted CPU ops and why:</p><ul>{reasons}</ul>" if reasons else ""))


def print_precheck(result: dict[str, Any], as_json: bool = False) -> None:
    """The Edge TPU pre-check of one model: the op table, then each CPU op with its reason."""
    if as_json:
        print(json.dumps(result, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"Edge TPU pre-check: {result['model']}", title_justify="left")
    for header in ("operator", "count", "status"):
        table.add_column(header, justify="right" if header == "count" else "left")
    for row in result["table"]:
        table.add_row(row["operator"], str(row["count"]), row["status"])
    console.standard().print(table)
    for problem in result["blocking"]:
        console.warn(f"will not compile: {problem}")
    for note in result.get("notes", []):
        console.info(f"note: {note}")
    for op in result["cpu_op_reasons"]:
        console.info(f"CPU: op {op['index']} {op['operator']}: {op['reason']}")
    console.info(f"{result['tpu_ops']} of {result['total_ops']} ops predicted on the Edge TPU "
                 f"({100 * result['tpu_fraction']:.0f} %), {result['edgetpu_subgraphs']} Edge TPU "
                 "subgraph")
