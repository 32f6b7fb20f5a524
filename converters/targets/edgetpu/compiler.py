"""Run ``edgetpu_compiler`` and read what it says: its stdout and its ``_edgetpu.log``.

The formats are Coral's (https://coral.ai/docs/edgetpu/compiler/): ``key: value`` lines on
stdout, and an op table
(``Operator  Count  Status``, left-justified columns; one operator may have several rows with
different statuses). The parsed report has the pre-check's structure
(:mod:`converters.edgetpu_check`) so prediction and verdict sit side by side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from converters.errors import ConfigError

COMPILER = "edgetpu_compiler"
MAPPED = "Mapped to Edge TPU"
SIZE_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}
TABLE_HEADER = re.compile(r"^\s*Operator\s+Count\s+Status\s*$", re.IGNORECASE)
TABLE_ROW = re.compile(r"^\s*(?P<operator>[A-Za-z][A-Za-z0-9_]*)\s+(?P<count>\d+)\s+(?P<status>\S.*?)\s*$")
# "Compilation failed" covers "Compilation failed!" and "Compilation failed: Model failed in
# Tflite interpreter. Please ensure model can be loaded/run in Tflite interpreter."
FAILURE_MARKERS = ("Compilation failed", "Internal compiler error", "Invalid model",
                   "Model not quantized", "ERROR:")
# Printed only when some ops stay on the CPU, together with the two "Number of operations" lines.
SUCCESS_LINE = "Model compiled successfully"
PARTIAL_MAPPING = "not all operations are supported by the Edge TPU"


@dataclass(frozen=True)
class CompileOptions:
    """The compiler options users need (names follow the compiler's long flags)."""

    min_runtime_version: int | None = None
    num_segments: int = 1
    search_delegate: bool = False
    delegate_search_step: int | None = None
    timeout_sec: int = 180
    intermediate_tensors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.min_runtime_version is not None and self.min_runtime_version < 10:
            raise ConfigError(f"--min-runtime-version must be 10 or more (compiler 16 emits 14 by "
                              f"default), got {self.min_runtime_version}")
        if self.num_segments < 1:
            raise ConfigError(f"--num-segments must be at least 1, got {self.num_segments}")
        if self.delegate_search_step is not None and (
                self.delegate_search_step < 1 or not self.search_delegate):
            raise ConfigError("--delegate-search-step is a positive step and needs --search-delegate")
        if self.timeout_sec < 1:
            raise ConfigError(f"--compiler-timeout must be at least 1 s, got {self.timeout_sec}")

    def argv(self, model: str, out_dir: str) -> list[str]:
        argv = [COMPILER, "--out_dir", out_dir, "--show_operations",
                "--timeout_sec", str(self.timeout_sec)]
        if self.min_runtime_version is not None:
            argv += ["--min_runtime_version", str(self.min_runtime_version)]
        if self.num_segments > 1:
            argv += ["--num_segments", str(self.num_segments)]
        if self.search_delegate:
            argv.append("--search_delegate")
            if self.delegate_search_step is not None:
                argv += ["--delegate_search_step", str(self.delegate_search_step)]
        if self.intermediate_tensors:
            argv += ["--intermediate_tensors", ",".join(self.intermediate_tensors)]
        return [*argv, model]

    def as_dict(self) -> dict[str, Any]:
        return {"min_runtime_version": self.min_runtime_version,
                "num_segments": self.num_segments, "search_delegate": self.search_delegate,
                "delegate_search_step": self.delegate_search_step,
                "timeout_sec": self.timeout_sec,
                "intermediate_tensors": list(self.intermediate_tensors)}


def parse_size(text: str) -> int | None:
    match = re.match(r"^\s*([\d.]+)\s*(B|KiB|MiB|GiB)\s*$", text)
    return round(float(match.group(1)) * SIZE_UNITS[match.group(2)]) if match else None


def parse_table(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Rows of every ``Operator Count Status`` table in ``lines`` (dashed rules ignored)."""
    rows: list[dict[str, Any]] = []
    in_table = False
    for line in lines:
        if TABLE_HEADER.match(line):
            in_table = True
            continue
        if not in_table or not line.strip() or set(line.strip()) <= {"-", "=", "+", "|", " "}:
            continue
        match = TABLE_ROW.match(line.replace("|", " "))
        if match is None:
            in_table = False
            continue
        rows.append({"operator": match["operator"], "count": int(match["count"]),
                     "status": match["status"]})
    return rows


def parse_output(stdout: str, log: str = "", exit_code: int = 0) -> dict[str, Any]:
    """The compiler's verdict from its stdout, its op log and its exit code."""
    values = key_values(stdout)
    log_values = key_values(log)
    version = re.search(r"Edge TPU Compiler version (\S+)", stdout + "\n" + log)
    table = parse_table(log.splitlines()) or parse_table(stdout.splitlines())
    subgraphs = _int(values.get("Number of Edge TPU subgraphs"))
    total, tpu_ops, source = op_counts(values, table, stdout, subgraphs)
    cpu_ops = _int(values.get("Number of operations that will run on CPU"))
    if cpu_ops is None and total is not None and tpu_ops is not None:
        cpu_ops = total - tpu_ops
    failures = failure_lines(stdout, exit_code, subgraphs)
    return {
        "compiler_version": version.group(1) if version else None,
        "succeeded": not failures,
        "failures": failures,
        "exit_code": exit_code,
        "total_ops": total,
        "tpu_ops": tpu_ops,
        "cpu_ops": cpu_ops,
        "tpu_fraction": tpu_ops / total if tpu_ops is not None and total else None,
        "counts_source": source,
        "edgetpu_subgraphs": subgraphs,
        "on_chip_memory_used": parse_size(values.get(
            "On-chip memory used for caching model parameters", "")),
        "on_chip_memory_remaining": parse_size(values.get(
            "On-chip memory remaining for caching model parameters", "")),
        "off_chip_memory_used": parse_size(values.get(
            "Off-chip memory used for streaming uncached model parameters", "")),
        "input_model": values.get("Input model", log_values.get("Input")),
        "output_model": values.get("Output model", log_values.get("Output")),
        "table": table,
        "cpu_op_reasons": [{"operator": row["operator"], "count": row["count"],
                            "status": row["status"]} for row in table if row["status"] != MAPPED],
    }


def key_values(text: str) -> dict[str, str]:
    """The first ``key: value`` of each key in the compiler's text."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if separator and value.strip():
            values.setdefault(key.strip(), value.strip())
    return values


def op_counts(values: dict[str, str], table: list[dict[str, Any]], stdout: str,
              subgraphs: int | None) -> tuple[int | None, int | None, str | None]:
    """(total ops, Edge TPU ops, where they come from); None where the output does not say.

    The compiler prints "Number of operations that will run on Edge TPU" only when some ops stay
    on the CPU. A successful compile with Edge TPU subgraphs, a total and no partial-mapping
    message therefore mapped every op.
    """
    total = _int(values.get("Total number of operations"))
    tpu_ops = _int(values.get("Number of operations that will run on Edge TPU"))
    if tpu_ops is not None:
        return total, tpu_ops, "stdout"
    if table:
        table_total = sum(row["count"] for row in table)
        return (total if total is not None else table_total,
                sum(row["count"] for row in table if row["status"] == MAPPED), "op table")
    if total is not None and subgraphs and PARTIAL_MAPPING not in stdout and \
            SUCCESS_LINE in stdout:
        return total, total, "all ops mapped (no partial-mapping counts printed)"
    return total, None, None


def failure_lines(stdout: str, exit_code: int, subgraphs: int | None) -> list[str]:
    """Why the compilation counts as failed, whatever the exit code says; [] when it did not."""
    failures = [line.strip() for line in stdout.splitlines()
                if any(marker in line for marker in FAILURE_MARKERS)]
    if exit_code != 0:
        failures.append(f"{COMPILER} exited with code {exit_code}")
    if not failures and "Compilation succeeded!" not in stdout and SUCCESS_LINE not in stdout:
        failures.append("the compiler did not report success")
    if not failures and subgraphs == 0:
        failures.append("Number of Edge TPU subgraphs: 0 (nothing runs on the Edge TPU)")
    return failures


def runtime_version_needed(compiler_version: str | None, options: CompileOptions) -> int | None:
    """The Edge TPU runtime a compiled model needs: -m when given, else 14 for compiler 16."""
    if options.min_runtime_version is not None:
        return options.min_runtime_version
    if compiler_version and compiler_version.split(".")[0] == "16":
        return 14
    return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
