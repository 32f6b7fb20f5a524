"""The pre-check and the output parser against REAL Edge TPU compiles (shared/edgetpu-truth).

Pairs ``X.tflite`` / ``X_edgetpu.tflite`` were compiled by Coral's own edgetpu_compiler: in the
compiled model every op mapped to the Edge TPU is folded into an ``edgetpu-custom-op`` (one per
Edge TPU subgraph) and every other op runs on the CPU. The compiler outputs are verbatim copies
from public repositories. The folder is ``../shared/edgetpu-truth`` next to the repository (or
``$EDGETPU_TRUTH``); without it these tests skip saying so.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

from converters.targets.edgetpu import check as edgetpu_check
from converters.targets.edgetpu.compiler import MAPPED, parse_output, parse_size
from converters.targets.tflite import flatbuffer as tflite_inspect
from tests.conftest import ROOT

TRUTH = Path(os.environ.get("EDGETPU_TRUTH") or ROOT.parent / "shared" / "edgetpu-truth")
CUSTOM_OP = "edgetpu-custom-op"
MISSING = f"the Edge TPU ground truth folder {TRUTH} is absent (set EDGETPU_TRUTH)"


def _pairs() -> list[str]:
    folder = TRUTH / "models"
    return sorted(p.name.removesuffix("_edgetpu.tflite") for p in folder.glob("*_edgetpu.tflite")
                  if (folder / p.name.replace("_edgetpu.tflite", ".tflite")).exists())


def _outputs() -> list[str]:
    return sorted(p.name for p in (TRUTH / "compiler-output").glob("*.txt"))


def _params(names: list[str]) -> list[object]:
    return names or [pytest.param("", marks=pytest.mark.skip(reason=MISSING))]


def compiled_truth(stem: str) -> tuple[Counter[str], int]:
    """(CPU ops as a multiset, number of Edge TPU subgraphs) of the real compiled model."""
    compiled = tflite_inspect.read(TRUTH / "models" / f"{stem}_edgetpu.tflite")
    cpu = Counter(op.name for op in compiled.operators if op.name != CUSTOM_OP)
    return cpu, sum(op.name == CUSTOM_OP for op in compiled.operators)


@pytest.mark.parametrize("stem", _params(_pairs()))
def test_precheck_predicts_the_real_compilers_cpu_ops_and_subgraphs(stem: str) -> None:
    truth_cpu, truth_subgraphs = compiled_truth(stem)
    result = edgetpu_check.check_file(TRUTH / "models" / f"{stem}.tflite")
    predicted = Counter(op["operator"] for op in result["cpu_op_reasons"])
    assert predicted == truth_cpu
    assert result["edgetpu_subgraphs"] == truth_subgraphs
    assert result["compiles"] and result["tpu_ops"] == result["total_ops"] - sum(truth_cpu.values())
    mapped_rows = sum(row["count"] for row in result["table"] if row["status"] == MAPPED)
    assert mapped_rows == result["tpu_ops"]


def _text(name: str) -> tuple[str, str]:
    """(stdout, log) of one real output: a ``.log.txt`` is the _edgetpu.log, else stdout."""
    text = (TRUTH / "compiler-output" / name).read_text()
    return ("", text) if name.endswith(".log.txt") else (text, "")


def _line_value(text: str, key: str) -> str | None:
    match = re.search(rf"^{re.escape(key)}:\s*(\S+)\s*$", text, re.MULTILINE)
    return match.group(1) if match else None


def _rows(text: str) -> list[tuple[str, int, str]]:
    """The op table read independently of the parser: three columns split on 2+ spaces."""
    rows = []
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) == 3 and cells[1].isdigit() and cells[0] != "Operator":
            rows.append((cells[0], int(cells[1]), cells[2]))
    return rows


@pytest.mark.parametrize("name", _params(_outputs()))
def test_parser_reads_every_real_output(name: str) -> None:
    stdout, log = _text(name)
    text = stdout or log
    report = parse_output(stdout, log)
    assert report["compiler_version"] == re.search(r"Compiler version (\S+)", text).group(1)
    rows = _rows(text)
    assert [(r["operator"], r["count"], r["status"]) for r in report["table"]] == rows and rows
    total = _line_value(text, "Total number of operations")
    assert report["total_ops"] == (int(total) if total else sum(count for _, count, _ in rows))
    on_tpu = _line_value(text, "Number of operations that will run on Edge TPU")
    mapped = sum(count for _, count, status in rows if status == MAPPED)
    assert report["tpu_ops"] == (int(on_tpu) if on_tpu else mapped)
    assert report["cpu_ops"] == report["total_ops"] - report["tpu_ops"]
    subgraphs = _line_value(text, "Number of Edge TPU subgraphs")
    assert report["edgetpu_subgraphs"] == (int(subgraphs) if subgraphs else None)
    for field, key in (("on_chip_memory_used", "On-chip memory used for caching model parameters"),
                       ("off_chip_memory_used",
                        "Off-chip memory used for streaming uncached model parameters")):
        value = _line_value(text, key)
        assert report[field] == (parse_size(value) if value else None)
    if stdout:  # a stdout says whether it compiled; a log alone does not
        assert report["succeeded"] == ("Model compiled successfully" in stdout)


# Values read off the real outputs by hand (a second, independent check of the parser).
EXPECTED = {
    "01_tetutaro_yolov3tiny_v15.stdout.txt": {
        "compiler_version": "15.0.340273435", "total_ops": 36, "tpu_ops": 2, "cpu_ops": 34,
        "edgetpu_subgraphs": 1, "on_chip_memory_used": 3 * 1024, "off_chip_memory_used": 0},
    "02_tetutaro_yolov5s_v15.stdout.txt": {
        "compiler_version": "15.0.340273435", "total_ops": 294, "tpu_ops": 1, "cpu_ops": 293,
        "edgetpu_subgraphs": 1},
    "03_jveitch_yolov5s224_v16_2subgraphs.stdout.txt": {
        "compiler_version": "16.0.384591198", "total_ops": 294, "tpu_ops": 289, "cpu_ops": 5,
        "edgetpu_subgraphs": 2, "on_chip_memory_used": round(6.08 * 2 ** 20),
        "on_chip_memory_remaining": 0, "off_chip_memory_used": round(1.70 * 2 ** 20),
        "output_model": "yolov5s-int8-224_edgetpu.tflite"},
    "04_jveitch_yolov5n-int8_edgetpu_160_v16.log.txt": {
        "compiler_version": "16.0.384591198", "total_ops": 262, "tpu_ops": 262, "cpu_ops": 0},
    "06_jveitch_yolov8n_full_integer_quant_edgetpu_160_v16.log.txt": {
        "total_ops": 257, "tpu_ops": 257, "input_model":
            "yolov8n_saved_model/yolov8n_full_integer_quant.tflite"},
    "13_guichristmann_tinyyolo_v2.0.log.txt": {
        "compiler_version": "2.0.267685300", "total_ops": 25, "tpu_ops": 25},
    "14_jirikula_efficientdet_v16.log.txt": {"total_ops": 513, "tpu_ops": 510, "cpu_ops": 3},
}


@pytest.mark.parametrize("name", _params([n for n in _outputs() if n in EXPECTED]))
def test_parser_values_read_off_the_real_outputs(name: str) -> None:
    report = parse_output(*_text(name))
    assert {key: report[key] for key in EXPECTED[name]} == EXPECTED[name]
    if name.startswith("03_"):
        assert {"operator": "TRANSPOSE", "count": 1, "status": edgetpu_check.LIMITATION} in \
            report["cpu_op_reasons"]
    if name.startswith("02_"):
        assert {"operator": "STRIDED_SLICE", "count": 4, "status": edgetpu_check.STRIDES} in \
            report["table"]
