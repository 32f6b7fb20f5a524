"""The report: its tables, recommendation and pages, and the build folder it describes."""

import json
import subprocess
from pathlib import Path

import pytest

from converters.fsutil import read_json
from converters.reporting.report import markdown, recommend, verdict
from tests.conftest import INFO_NOISE, ROOT, quick_flags, run_invoke

pytestmark = pytest.mark.quick  # part of `invoke test --quick`


def artifact(path: str, size: int, latency: float, drop: float) -> dict[str, object]:
    return {"path": path, "size_bytes": size, "latency_ms": latency, "accuracy_drop": drop}


def test_recommendation_picks_smallest_and_fastest_within_the_bound() -> None:
    artifacts = [artifact("fp32", 400, 2.0, 0.0), artifact("fp16", 200, 2.1, 0.0),
                 artifact("dynamic", 100, 5.0, 0.004), artifact("int8", 110, 1.0, 0.03)]
    strict = recommend(artifacts, 0.01)  # type: ignore[arg-type]
    assert (strict["smallest"], strict["fastest"]) == ("dynamic", "fp32")
    assert strict["rejected"] == ["int8"]
    loose = recommend(artifacts, 0.05)  # type: ignore[arg-type]
    assert (loose["smallest"], loose["fastest"]) == ("dynamic", "int8")
    none = recommend(artifacts, 0.0)  # type: ignore[arg-type]
    assert (none["smallest"], none["fastest"]) == ("fp16", "fp32")


def test_rejected_artifacts_are_named_with_their_drop_and_the_bound() -> None:
    from converters.reporting.report import rejected_lines

    report = {"artifacts": [{**artifact("tflite/m_int8.tflite", 100, 1.0, 0.032), "failed": None},
                            {**artifact("onnx/m_int8.onnx", 100, 1.0, 0.0), "failed": "NaN"}],
              "recommendation": recommend([artifact("tflite/m_int8.tflite", 100, 1.0, 0.032)], 0.01)}
    report["recommendation"]["rejected"].append("onnx/m_int8.onnx")  # type: ignore[index]
    assert rejected_lines(report) == [  # the failed one has its own line, with its reason
        "Rejected `tflite/m_int8.tflite`: accuracy drop 3.2 % is over the 1.0 % bound."]


def test_an_artifact_not_timed_on_its_runtime_is_never_fastest() -> None:
    cpu_timed = {**artifact("edgetpu/m_int8.tflite", 90, 0.5, 0.0),
                 "latency_not_on_runtime": "timed on this host's CPU before Edge TPU compilation"}
    artifacts = [artifact("tflite/m_fp32.tflite", 400, 2.0, 0.0), cpu_timed,
                 artifact("tflite/m_int8.tflite", 100, 1.0, 0.0)]
    chosen = recommend(artifacts, 0.01)  # type: ignore[arg-type]
    assert (chosen["smallest"], chosen["fastest"]) == ("edgetpu/m_int8.tflite", "tflite/m_int8.tflite")
    assert chosen["fastest_ties"] == [] and chosen["rejected"] == []
    # Alone (an Edge TPU build without the tflite target), it is the smallest and none is fastest
    alone = sample_report(smallest="edgetpu/m_int8.tflite", fastest=None)
    alone["artifacts"][0] |= {"path": "edgetpu/m_int8.tflite", "target": "edgetpu"}  # type: ignore[index]
    assert recommend([cpu_timed], 0.01)["fastest"] is None  # type: ignore[list-item]
    assert verdict(alone).endswith("is the smallest (2.0 KiB, top-1 agreement with Keras 90.0 %); "
                                   "none was timed on the runtime it deploys with, so none is "
                                   "called fastest.")
    assert "fastest none (no artifact within the bound was timed" in markdown(alone)


def test_the_table_has_one_order_whatever_was_built_last() -> None:
    from converters.reporting.report import table_order

    built = [("onnx", "int8"), ("tflite", "int8"), ("onnx", "fp32"), ("edgetpu", "int8"),
             ("tflite", "int8-mixed"), ("tflite", "fp32"), ("onnx", "int8-tensorrt"),
             ("tflite", "dynamic")]
    records = [{"target": target, "variant": variant} for target, variant in built]
    assert [(r["target"], r["variant"]) for r in sorted(records, key=table_order)] == [
        ("tflite", "fp32"), ("tflite", "dynamic"), ("tflite", "int8"), ("tflite", "int8-mixed"),
        ("edgetpu", "int8"), ("onnx", "fp32"), ("onnx", "int8"), ("onnx", "int8-tensorrt")]


def test_markdown_lists_every_artifact_and_the_recommendation() -> None:
    metrics = {"max_abs_error": 0.5, "mean_abs_error": 0.1, "cosine_similarity": 0.99,
               "top1_agreement": 0.9, "accuracy": None}
    report = {
        "model": {"name": "m", "path": "m.h5", "format": "h5", "input_shape": [8, 8, 3]},
        "dataset": {"path": "d", "validation_count": 10, "calibration_count": 5},
        "reference": {"accuracy": None, "latency_ms": 3.0, "threads": 2},
        "artifacts": [{"target": "tflite", "variant": "int8", "path": "tflite/m_int8.tflite",
                       "size_bytes": 2048, "latency_ms": 1.0, "metrics": metrics,
                       "float_ops": [{"op": "SIN", "count": 2}]}],
        "recommendation": {"max_accuracy_drop": 0.2, "smallest": "tflite/m_int8.tflite",
                           "fastest": "tflite/m_int8.tflite", "rejected": []},
        "stages": {"tflite-int8": {"runner": "docker", "image": "tensor-edge-converter/tflite:1",
                                   "image_id": "sha256:0123456789abcdef0123", "key": "k"},
                   "data": {"runner": "local", "image": None, "image_id": None, "key": "k"}},
    }
    text = markdown(report)
    assert ("Stages ran in: tensor-edge-converter/tflite:1 image sha256:0123456789ab (docker), "
            "local Python.") in text
    assert "| tflite int8 | tflite/m_int8.tflite | 2.0 | n/a | 0.900 |" in text
    assert "SIN×2" in text and "smallest `tflite/m_int8.tflite`" in text


def test_tensorrt_lines_show_numbers_or_why_not_built() -> None:
    from converters.targets.tensorrt.report import engine_lines

    metrics = {"top1_agreement": 0.995, "accuracy": 0.99}
    built = {"ran": True, "precision": "fp16", "engine": "tensorrt/fp16/m_fp16.engine",
             "size_bytes": 3 * 2**20, "metrics": metrics, "latency_ms": 0.41,
             "latency_ms_opt_batch": 1.73, "opt_batch": 8,
             "sidecar": {"tensorrt_version": "10.8.0", "gpu": "GPU", "compute_capability": "8.7"}}
    missing = {"ran": False, "precision": "int8", "reason": "no GPU here"}
    lines = engine_lines([built, missing, {**missing, "precision": "fp32"}])
    assert lines[1] == ("fp16 engine `tensorrt/fp16/m_fp16.engine` (3.00 MiB, TensorRT 10.8.0, GPU "
                        "sm 8.7): top-1 agreement 0.995, accuracy 99.0 %, latency 0.41 ms at batch "
                        "1, 1.73 ms at batch 8")
    assert lines[0] == "int8, fp32 engines: not built. no GPU here"  # one reason, said once


def sample_report(**recommendation: object) -> dict[str, object]:
    """A small report document with one artifact (no labels)."""
    metrics = {"max_abs_error": 0.5, "mean_abs_error": 0.1, "cosine_similarity": 0.99,
               "top1_agreement": 0.9, "accuracy": None}
    return {
        "model": {"name": "m", "path": "m.h5", "format": "h5", "input_shape": [8, 8, 3]},
        "dataset": {"path": "d", "validation_count": 10, "calibration_count": 5},
        "reference": {"accuracy": None, "latency_ms": 3.0, "latency_spread_ms": [2.5, 3.5],
                      "latency_runs": 30, "threads": 2},
        "artifacts": [{"target": "tflite", "variant": "int8", "path": "tflite/m_int8.tflite",
                       "size_bytes": 2048, "latency_ms": 1.0, "latency_spread_ms": [0.9, 1.2],
                       "metrics": metrics, "float_ops": []}],
        "recommendation": {"max_accuracy_drop": 0.2, "smallest": "tflite/m_int8.tflite",
                           "fastest": "tflite/m_int8.tflite", "rejected": [], **recommendation},
        "stages": {},
    }


def test_markdown_table_escapes_pipes_so_every_row_has_one_cell_per_header() -> None:
    from converters.reporting.markup import md_table

    lines = markdown(sample_report()).splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert "max \\|err\\|" in table[0]
    cells = [len(line.replace("\\|", "").strip("|").split("|")) for line in table]
    assert cells == [10] * 4  # header, rule, Keras, the artifact
    assert md_table(["a|b"], [["x|y"]])[2] == "| x\\|y |"


def test_latency_ties_within_the_spread_are_named_not_broken_silently() -> None:
    def timed(path: str, size: int, median: float, low: float, high: float) -> dict[str, object]:
        return {**artifact(path, size, median, 0.0), "latency_spread_ms": [low, high]}

    artifacts = [timed("fp32", 400, 2.0, 1.9, 2.3), timed("dynamic", 100, 1.95, 1.8, 2.1),
                 timed("int8", 110, 3.0, 2.8, 3.3)]
    rec = recommend(artifacts, 0.01)  # type: ignore[arg-type]
    assert (rec["smallest"], rec["fastest"], rec["fastest_ties"]) == ("dynamic", "dynamic",
                                                                      ["fp32"])
    assert "fp32 is within its p10-p90 spread" in rec["note"]
    clear = recommend([artifacts[0], artifacts[2]], 0.01)  # type: ignore[arg-type]
    assert clear["fastest_ties"] == [] and clear["note"] is None


def test_report_says_latency_is_from_this_host_with_its_threads_and_the_spread() -> None:
    text = markdown(sample_report(note="x is fastest, y ties"))
    assert "not on the target device" in text and "2 thread(s)" in text
    assert "median and p10-p90 of 30 single-image runs" in text
    assert "| 1.00 | 0.90-1.20 |" in text and "Note: x is fastest, y ties." in text


def test_html_has_the_context_line_and_code_elements_not_backticks() -> None:
    import re

    from converters.reporting.report import html_page

    page = html_page(sample_report())
    assert "<code>m.h5</code> (h5, input [8, 8, 3]); 10 validation and 5 calibration" in page
    assert "not on the target device" in page
    text = re.sub(r"<[^>]+>", "", page.split("<body>")[1])
    assert "`" not in text
    assert '<td class=num>1.00</td>' in page
    # the recommended row is marked and named; the path sits under the artifact's name
    assert ('<tr class="recommended"><td class="name">tflite int8<span class="badge">smallest</span>'
            '<span class="badge">fastest</span><small class="path">tflite/m_int8.tflite</small>'
            in page)
    # the verdict comes first, before the table, with the numbers that decided it
    assert ("<code>tflite/m_int8.tflite</code> is the smallest (2.0 KiB, top-1 agreement with "
            "Keras 90.0 %) and the fastest (1 ms median on this host)") in page
    assert page.index('id="summary"') < page.index('id="artifacts"') < page.index('id="tradeoff"')


@pytest.fixture(scope="module")
def two_command_build(tmp_path_factory: pytest.TempPathFactory, tiny_h5: Path,
                      tiny_dataset: Path) -> tuple[Path, list[subprocess.CompletedProcess[str]]]:
    """``--target tflite`` then ``--target onnx`` into one build folder, through invoke."""
    out = tmp_path_factory.mktemp("two-commands")
    flags = ["--model", str(tiny_h5), *quick_flags(tiny_dataset, out)]
    runs = [run_invoke("convert", *flags, "--target", "tflite", "--quant", "fp32,int8", check=True),
            run_invoke("convert", *flags, "--target", "onnx", "--quant", "fp32", check=True)]
    return out / "tiny", runs


def rows(build_dir: Path) -> list[tuple[str, str]]:
    report = json.loads((build_dir / "report.json").read_text())
    return [(a["target"], a["variant"]) for a in report["artifacts"]]


def test_report_lists_every_valid_artifact_of_the_folder_not_only_the_last_targets(
        two_command_build: tuple[Path, list[subprocess.CompletedProcess[str]]],
        tiny_h5: Path, tiny_dataset: Path) -> None:
    build_dir, _ = two_command_build
    # built tflite, then onnx: the table's order is the targets' and the modes', not the builds'
    assert rows(build_dir) == [("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32")]
    assert "tflite/tiny_int8.tflite" in (build_dir / "report.md").read_text()
    # report.json's stages are the folder's: the tflite stages of the first build too
    stages = read_json(build_dir / "report.json")["stages"]
    assert {"tflite-fp32", "tflite-int8", "validate-tflite-int8", "onnx-fp32"} <= set(stages)
    # An artifact changed by hand is no longer valid: the report drops it at the next build.
    (build_dir / "tflite" / "tiny_int8.tflite").write_bytes(b"changed")
    again = run_invoke("convert", "--model", str(tiny_h5),
                       *quick_flags(tiny_dataset, build_dir.parent), "--target", "onnx",
                       "--quant", "fp32", check=True)
    assert "report is up to date" not in again.stdout
    assert rows(build_dir) == [("tflite", "fp32"), ("onnx", "fp32")]
    stages = read_json(build_dir / "report.json")["stages"]
    assert "tflite-fp32" in stages and "validate-tflite-int8" not in stages


def test_stage_output_has_no_tensorflow_or_litert_info_lines(
        two_command_build: tuple[Path, list[subprocess.CompletedProcess[str]]]) -> None:
    _, runs = two_command_build
    output = "".join(run.stdout + run.stderr for run in runs)
    assert "▶ tiny: tflite-int8" in output  # the stages did run in this output
    for noise in INFO_NOISE:
        assert noise not in output


def test_summary_fits_an_80_column_terminal_without_cutting_names(
        two_command_build: tuple[Path, list[subprocess.CompletedProcess[str]]]) -> None:
    build_dir, _ = two_command_build
    narrow = run_invoke("report", "--out", str(build_dir.parent), env={"COLUMNS": "80"},
                        check=True).stdout
    table = [line for line in narrow.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and all(len(line) <= 80 for line in table), narrow
    for name in ("Keras (reference)", "tflite fp32", "onnx fp32", "latency ms", "accuracy"):
        assert name in narrow
    assert "not shown; report.md has them" in narrow
    assert "not on the target device" in narrow
    wide = run_invoke("report", "--out", str(build_dir.parent), check=True).stdout
    assert "p10-p90 ms" in wide and "not shown" not in wide
    # The console reads as the report does: the verdict first, then the table.
    report = read_json(build_dir / "report.json")
    first = verdict(report).replace("`", "")[:40]
    shown = run_invoke("report", "--out", str(build_dir.parent), env={"COLUMNS": "100"},
                       check=True)
    both = shown.stdout + shown.stderr
    assert first in " ".join(both.split()) and "┏" in shown.stdout


# Injected into a copy of report.html: after the page loaded, write what a reader would see
# broken (images that did not decode, missing tables) into the DOM that --dump-dom prints.
PAGE_CHECK = """<script>window.addEventListener("load", () => {
  const out = document.createElement("pre"); out.id = "page-check";
  out.textContent = JSON.stringify({
    images: [...document.images].map(i => ({id: i.id, width: i.naturalWidth,
                                              shown: i.getBoundingClientRect().width})),
    tables: document.querySelectorAll("table").length,
    artifact_rows: document.querySelectorAll("#artifacts tr").length,
    page_width: document.documentElement.scrollWidth});
  document.body.appendChild(out);
});</script>"""


def chromium() -> str:
    """The headless browser, or skip (fail under REQUIRE_BROWSER=1, as CI sets it)."""
    import os
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "chromium is not installed (Debian: apt-get install chromium)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return found


def test_report_html_renders_in_headless_chromium_with_no_broken_element(
        two_command_build: tuple[Path, list[subprocess.CompletedProcess[str]]],
        tmp_path: Path) -> None:
    browser = chromium()
    build_dir, _ = two_command_build
    page = tmp_path / "report.html"
    page.write_text((build_dir / "report.html").read_text().replace("</body>",
                                                                    PAGE_CHECK + "</body>"))
    profile = tmp_path / "profile"
    dumped = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         f"--user-data-dir={profile}", "--window-size=1200,1600", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True)
    check = json.loads(dumped.stdout.split('<pre id="page-check">')[1].split("</pre>")[0])
    assert check["images"] and all(i["width"] > 0 and i["shown"] > 0 for i in check["images"])
    assert [i["id"] for i in check["images"]] == ["tradeoff"]
    assert check["tables"] >= 1 and check["artifact_rows"] == 1 + 1 + len(rows(build_dir))
    assert check["page_width"] <= 1200  # nothing overflows the window sideways


def test_report_json_has_exactly_the_documented_keys(
        two_command_build: tuple[Path, list[subprocess.CompletedProcess[str]]]) -> None:
    """Every key of a real report is in the schema the reference page is generated from, and
    every key the schema says is always there is."""
    from converters.reporting import schema

    assert (ROOT / "docs" / "reference" / "report-json.md").read_text() == schema.render_markdown(), (
        "regenerate docs/reference/report-json.md: python -c 'from converters.reporting.schema "
        "import render_markdown; print(render_markdown(), end=\"\")' > docs/reference/report-json.md")
    built = read_json(two_command_build[0] / "report.json")
    sections = {"": built, "model": built["model"], "dataset": built["dataset"],
                "reference": built["reference"], "recommendation": built["recommendation"],
                **{f"artifacts[] {a['path']}": a for a in built["artifacts"]}}
    extra = {"": set(schema.target_sections()), "artifacts[]": set(schema.client_keys())}
    for where, found in sections.items():
        keys = schema.SECTIONS[where.split(" ")[0]]
        documented = {key.name for key in keys} | extra.get(where.split(" ")[0], set())
        assert set(found) - documented == set(), where
        assert {key.name for key in keys if key.always} - set(found) == set(), where
