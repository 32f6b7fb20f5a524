"""The edgetpu_compiler output parser, on samples WRITTEN from Coral's documented format.

The samples in tests/data/edgetpu/ are not captured from a real compiler (it cannot be installed
on the project's machines; see that folder's README). The real compiler runs in
test_edgetpu.py where it is installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from converters.targets.edgetpu.compiler import (
    CompileOptions,
    parse_output,
    parse_size,
    parse_table,
    runtime_version_needed,
)

SAMPLES = Path(__file__).parent / "data" / "edgetpu"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_success_with_every_op_mapped() -> None:
    report = parse_output(sample("success.stdout"), sample("success.log"))
    assert report["succeeded"] and report["failures"] == []
    assert report["compiler_version"] == "16.0.384591198"
    assert (report["total_ops"], report["tpu_ops"], report["cpu_ops"]) == (72, 72, 0)
    assert report["tpu_fraction"] == 1.0 and report["edgetpu_subgraphs"] == 1
    assert report["on_chip_memory_used"] == round(3.75 * 1024 ** 2)
    assert report["off_chip_memory_used"] == 0
    assert {"operator": "CONV_2D", "count": 38, "status": "Mapped to Edge TPU"} in report["table"]
    assert sum(row["count"] for row in report["table"]) == 72
    assert report["cpu_op_reasons"] == []


def test_partial_mapping_keeps_repeated_rows_and_off_chip_memory() -> None:
    report = parse_output(sample("partial.stdout"), sample("partial.log"))
    assert report["succeeded"]
    assert (report["total_ops"], report["tpu_ops"], report["cpu_ops"]) == (64, 55, 9)
    assert report["off_chip_memory_used"] == round(2.43 * 1024 ** 2)
    assert report["on_chip_memory_remaining"] == 0
    conv_rows = [row for row in report["table"] if row["operator"] == "CONV_2D"]
    assert [(row["count"], row["status"]) for row in conv_rows] == [
        (40, "Mapped to Edge TPU"), (3, "More than one subgraph is not supported")]
    reasons = {(row["operator"], row["status"]) for row in report["cpu_op_reasons"]}
    assert ("RESHAPE", "Operation is otherwise supported, but not mapped due to some "
            "unspecified limitation") in reasons
    assert ("DEQUANTIZE", "Operation is working on an unsupported data type") in reasons
    assert sum(row["count"] for row in report["cpu_op_reasons"]) == 9


def test_two_subgraphs_and_the_table_from_stdout() -> None:
    report = parse_output(sample("two_subgraphs.stdout"))  # no log: -s table on stdout
    assert report["succeeded"] and report["edgetpu_subgraphs"] == 2
    assert report["tpu_ops"] == 28 and report["cpu_ops"] == 2
    assert {"operator": "SIN", "count": 2, "status": "Operation not supported"} in report["table"]


@pytest.mark.parametrize(("name", "expected"), [
    ("zero_subgraphs.stdout", "Number of Edge TPU subgraphs: 0"),
    ("internal_error.stdout", "Internal compiler error. Aborting!"),
    ("not_quantized.stdout", "Model not quantized"),
    ("dynamic_shape.stdout", "ERROR: Attempting to use a delegate that only supports static-sized"),
])
def test_each_failure_kind_fails_whatever_the_exit_code(name: str, expected: str) -> None:
    report = parse_output(sample(name), exit_code=0)
    assert not report["succeeded"]
    assert any(expected in line for line in report["failures"]), report["failures"]


def test_a_non_zero_exit_fails_even_with_a_success_line() -> None:
    report = parse_output(sample("success.stdout"), sample("success.log"), exit_code=1)
    assert report["failures"] == ["edgetpu_compiler exited with code 1"]


def test_output_without_a_verdict_is_not_a_success() -> None:
    report = parse_output("Edge TPU Compiler version 16.0.384591198\n")
    assert report["failures"] == ["the compiler did not report success"]


def test_both_header_styles_parse_to_the_same_rows() -> None:
    blank = "Operator                       Count      Status\n\nADD      3     Mapped to Edge TPU\n"
    dashed = "Operator  Count  Status\n--------  -----  ------\nADD  3  Mapped to Edge TPU\n"
    assert parse_table(blank.splitlines()) == parse_table(dashed.splitlines()) == [
        {"operator": "ADD", "count": 3, "status": "Mapped to Edge TPU"}]


def test_sizes() -> None:
    assert parse_size("0.00B") == 0
    assert parse_size("512.00KiB") == 512 * 1024
    assert parse_size("n/a") is None


def test_options_become_the_compiler_flags() -> None:
    options = CompileOptions(min_runtime_version=13, num_segments=2, search_delegate=True,
                             delegate_search_step=4, timeout_sec=600,
                             intermediate_tensors=("a", "b"))
    assert options.argv("m.tflite", "out") == [
        "edgetpu_compiler", "--out_dir", "out", "--show_operations", "--timeout_sec", "600",
        "--min_runtime_version", "13", "--num_segments", "2", "--search_delegate",
        "--delegate_search_step", "4", "--intermediate_tensors", "a,b", "m.tflite"]
    assert CompileOptions().argv("m.tflite", "o")[-1] == "m.tflite"


def test_runtime_version_the_model_needs() -> None:
    assert runtime_version_needed("16.0.384591198", CompileOptions()) == 14
    assert runtime_version_needed("16.0.384591198", CompileOptions(min_runtime_version=13)) == 13
    assert runtime_version_needed(None, CompileOptions()) is None


def _compiled_build(tmp_path: Path, stdout: str, log: str) -> Path:
    """A build folder whose compile record holds the parsed (sample) compiler output."""
    from converters.fsutil import write_json_atomic

    build_dir = tmp_path / "m"
    verdict = parse_output(sample(stdout), sample(log))
    write_json_atomic(build_dir / "edgetpu" / "compile.json", {
        "ran": True, "options": CompileOptions().as_dict(), **verdict,
        "runtime_version_needed": runtime_version_needed(verdict["compiler_version"],
                                                         CompileOptions()),
        "compiled_models": ["m_int8_edgetpu.tflite"]})
    return build_dir


def test_min_tpu_ops_fails_a_build_below_the_floor(tmp_path: Path) -> None:
    from converters.targets.edgetpu.stages import build_problems

    build_dir = _compiled_build(tmp_path, "partial.stdout", "partial.log")  # 55 of 64 ops
    [problem] = build_problems(build_dir, 0.9)
    assert "only 86% of the ops map to the Edge TPU, below --min-tpu-ops 90%" in problem
    assert build_problems(build_dir, 0.85) == [] and build_problems(build_dir, None) == []


def test_report_puts_prediction_and_verdict_side_by_side(tmp_path: Path) -> None:
    from converters.fsutil import write_json_atomic
    from converters.targets.edgetpu import report as edgetpu_report

    build_dir = _compiled_build(tmp_path, "partial.stdout", "partial.log")
    predicted = {"model": "m", "compiles": True, "blocking": [], "total_ops": 64, "tpu_ops": 56,
                 "cpu_ops": 8, "tpu_fraction": 56 / 64, "edgetpu_subgraphs": 1,
                 "model_subgraphs": 1, "cpu_op_reasons": [],
                 "table": [{"operator": "CONV_2D", "count": 43, "status": "Mapped to Edge TPU"}]}
    write_json_atomic(build_dir / "edgetpu" / "pre.json", predicted)
    section = edgetpu_report.section(build_dir, {"precheck": "edgetpu/pre.json",
                                                 "compile": "edgetpu/compile.json"})
    conv = section["side_by_side"][0]
    assert conv == {"operator": "CONV_2D",
                    "precheck": [{"count": 43, "status": "Mapped to Edge TPU"}],
                    "compiler": [{"count": 40, "status": "Mapped to Edge TPU"},
                                 {"count": 3, "status": "More than one subgraph is not supported"}]}
    assert section["tpu_fraction"] == 55 / 64 and section["runtime_version_needed"] == 14
    assert section["off_chip_warning"].startswith("2.43 MiB of parameters do not fit")
    text = "\n".join(edgetpu_report.markdown(section))
    assert "| CONV_2D | 43 × Mapped to Edge TPU | 40 × Mapped to Edge TPU; 3 × More than one" in text
    assert "runtime 14 or newer" in text and "Warning: 2.43 MiB" in text


def _without_table(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "Mapped to Edge TPU" not in line)


def test_every_op_mapped_without_table_or_log_derives_the_counts() -> None:
    # With every op mapped the compiler prints no "Number of operations ..." lines.
    report = parse_output(_without_table(sample("success.stdout")))
    assert report["table"] == [] and report["succeeded"]
    assert (report["total_ops"], report["tpu_ops"], report["cpu_ops"]) == (72, 72, 0)
    assert report["tpu_fraction"] == 1.0 and report["counts_source"].startswith("all ops mapped")


def test_counts_the_output_does_not_give_are_unknown_and_min_tpu_ops_says_so(
        tmp_path: Path) -> None:
    from converters.fsutil import write_json_atomic
    from converters.targets.edgetpu.stages import build_problems

    stdout = "\n".join(line for line in _without_table(sample("success.stdout")).splitlines()
                       if not line.startswith("Total number of operations"))
    report = parse_output(stdout)
    assert report["tpu_ops"] is None and report["tpu_fraction"] is None
    assert report["counts_source"] is None
    write_json_atomic(tmp_path / "m" / "edgetpu" / "compile.json", {"ran": True, **report})
    [problem] = build_problems(tmp_path / "m", 0.5)
    assert "--min-tpu-ops 50% cannot be checked" in problem and "compiler_output.txt" in problem


def test_a_model_the_tflite_interpreter_refuses_is_a_failure_reason() -> None:
    # The line as Coral's compiler prints it (quoted in issue 13), inside the documented frame.
    line = ("Compilation failed: Model failed in Tflite interpreter. Please ensure model can be "
            "loaded/run in Tflite interpreter.")
    report = parse_output(f"Edge TPU Compiler version 16.0.384591198\n{line}\n")
    assert not report["succeeded"] and line in report["failures"]
