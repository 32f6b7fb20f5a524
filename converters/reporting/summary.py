"""The console summary table printed at the end of a build and by ``invoke report``."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from converters import console
from converters.errors import ConfigError
from converters.fsutil import read_json
from converters.inputs.array_files import listed
from converters.reporting import report


def built_models(out: Path, name: str | None = None) -> list[Path]:
    """Build folders under ``out`` that hold a report (optionally only ``name``)."""
    every = sorted(p.parent for p in out.glob(f"*/{report.REPORT_JSON}"))
    folders = every if name is None else [p for p in every if p.name == name]
    if folders:
        return folders
    if not every:
        raise ConfigError(f"no report for any model in {out}/: run invoke convert first")
    raise ConfigError(f"no report for model '{name}' in {out}/; built models: "
                      f"{listed(p.name for p in every)}. Pass one of them to --model, or run "
                      f"invoke convert --model PATH first")


# Console columns left out first when the terminal is narrow (report.md and report.html keep
# them all); "path" is never shown on the console.
DROPPED_WHEN_NARROW = ("cosine", "p10-p90 ms", "max |err|", "top-1 agree", "float ops")


def summary_columns(rows: list[list[str]], width: int,
                    headers: list[str] = report.HEADERS) -> list[int]:
    """Indexes of ``headers`` to show: every column but the path, minus the least important
    ones until the table fits ``width`` characters (cell text plus 3 characters of rule)."""
    shown = [i for i, header in enumerate(headers) if header != "path"]

    def needed(columns: list[int]) -> int:
        return 1 + sum(3 + max(len(str(row[i])) for row in [headers, *rows])
                       for i in columns)

    for header in DROPPED_WHEN_NARROW:
        if needed(shown) <= width:
            break
        shown.remove(headers.index(header))
    return shown


def print_summary(build_dir: Path) -> None:
    data = read_json(build_dir / report.REPORT_JSON)
    table = Table(title=f"{data['model']['name']}: {build_dir}/", title_justify="left")
    # Float ops as a count on the console (report.md lists them).
    rows = [row[:-1] + [floats] for row, floats in zip(
        report.table_rows(data),
        ["-"] + [str(sum(o["count"] for o in a["float_ops"])) for a in data["artifacts"]]
        + ["-"] * len(data.get("not_built", [])),
        strict=True)]
    headers = report.headers(data)
    shown = summary_columns(rows, console.standard().width, headers)
    for i in shown:
        table.add_column(headers[i], justify="left" if i == 0 else "right",
                         overflow="fold")
    for row in rows:
        table.add_row(*[row[i] for i in shown])
    # As report.md and report.html: the warnings and the verdict first, then the table.
    for warning in data.get("warnings", []):
        console.warn(warning)
    recommendation = data["recommendation"]
    verdict = report.verdict(data).replace("`", "")
    if recommendation.get("withheld") or recommendation.get("smallest") is None:
        console.warn(verdict)
    else:
        console.info(verdict)
    console.standard().print(table)
    hidden = [h for i, h in enumerate(headers) if i not in shown and h != "path"]
    if hidden:
        console.info(f"(narrow terminal: {', '.join(hidden)} not shown; report.md has them)")
    if recommendation.get("note"):
        console.info(f"note: {recommendation['note']}")
    for line in report.rejected_lines(data):
        console.warn(line.replace("`", ""))
    for needless in data.get("not_needed", []):
        console.info(f"not needed: {needless['target']} {needless['variant']}: {needless['reason']}")
    console.info(report.latency_line(data))
    for line in report.device_lines(data):
        console.info(line)
    for target, hooks in report.report_hooks():
        if data.get(target):
            for line in hooks.summary(data[target]):
                console.info(line)
    console.info(f"report: {build_dir / report.REPORT_HTML}")
