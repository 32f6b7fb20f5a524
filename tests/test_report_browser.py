"""report.html in a real browser (Chromium through Playwright, offline): it fits a 1280 px
window and a phone's, logs no console error, fetches nothing, shows the recommendation in the
first screen and lists every artifact. Screenshots are written as test artifacts
($TEST_ARTIFACTS, else the test's temporary folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, quick_flags, run_invoke

pytestmark = pytest.mark.quick

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
CHROMIUM = Path("/usr/bin/chromium")


def browser_or_skip() -> Any:
    """A Playwright Chromium (Debian's binary: Playwright's own download is not reachable), or
    skip saying what is missing (fail under REQUIRE_BROWSER=1, as CI sets it)."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install -c constraints.txt -e '.[test]')"
    if reason is None and not CHROMIUM.exists():
        reason = "chromium is not installed (Debian: apt-get install chromium)"
    if reason is not None:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return sync_playwright


def artifacts_folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("TEST_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample, TFLite and Edge TPU (no compiler here), through invoke."""
    out = tmp_path_factory.mktemp("sample-report")
    run_invoke("convert", "--model", str(ROOT / "model" / "sample.h5"),
               *quick_flags(ROOT / "dataset", out), "--target", "tflite,edgetpu", check=False)
    assert (out / "sample" / "report.html").is_file()
    return out / "sample"


@pytest.fixture(scope="module")
def two_output_build(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """A model with two named outputs (class scores and a 5-wide regression head) whose layer
    and output names are long, converted to TFLite and ONNX."""
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((16, 16, 3), name="camera_frame")
    x = keras.layers.Conv2D(6, 3, activation="relu",
                            name="a_rather_long_feature_extractor_convolution_name")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="global_average_pooling_of_the_features")(x)
    scores = keras.layers.Dense(3, activation="softmax", name="class_probabilities_head")(x)
    boxes = keras.layers.Dense(5, name="bounding_box_regression_head_with_a_long_name")(x)
    model = keras.Model(inputs, [scores, boxes], name="two_headed_model_with_a_long_name")
    folder = tmp_path_factory.mktemp("two-outputs")
    model.save(folder / "two_headed_model_with_a_long_name.keras")
    out = folder / "build"
    run_invoke("convert", "--model", str(folder / "two_headed_model_with_a_long_name.keras"),
               *quick_flags(tiny_dataset, out), "--target", "tflite,onnx", "--quant",
               "fp32,int8", "--allow-class-mismatch", check=False)
    build = out / "two_headed_model_with_a_long_name"
    assert (build / "report.html").is_file()
    return build


PAGE_FACTS = """() => ({
  page_width: document.documentElement.scrollWidth,
  wide_overflow: [...document.querySelectorAll('.wide')].map(e => e.scrollWidth - e.clientWidth),
  summary_bottom: document.querySelector('#summary').getBoundingClientRect().bottom,
  summary: document.querySelector('#summary').innerText,
  rows: [...document.querySelectorAll('#artifacts tbody tr')].map(r => ({
    text: r.innerText, cls: r.className})),
  plot_width: document.querySelector('#tradeoff').getBoundingClientRect().width,
})"""


def check_page(build: Path, tmp_path: Path) -> dict[str, Any]:
    """Open report.html at desktop and phone widths (scripts off: the page needs none) and
    assert what a reader needs; return the desktop facts for the caller's own checks."""
    sync_playwright = browser_or_skip()
    report = json.loads((build / "report.json").read_text())
    page_url = (build / "report.html").as_uri()
    shots = artifacts_folder(tmp_path)
    facts: dict[str, Any] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                context = browser.new_context(viewport=viewport, java_script_enabled=False)
                page = context.new_page()
                problems: list[str] = []
                fetched: list[str] = []
                page.on("console", lambda m, p=problems: p.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e, p=problems: p.append(str(e)))
                page.on("request", lambda r, f=fetched: f.append(r.url)
                        if not r.url.startswith(("file:", "data:")) else None)
                page.goto(page_url)
                seen = page.evaluate(PAGE_FACTS)
                page.screenshot(path=str(shots / f"{build.name}-{name}.png"), full_page=True)
                context.close()
                assert problems == [], (name, problems)
                assert fetched == [], (name, fetched)  # self-contained: nothing from a network
                assert seen["page_width"] <= viewport["width"], (name, seen["page_width"])
                assert seen["summary_bottom"] <= viewport["height"], (name, seen["summary_bottom"])
                if name == "desktop":
                    assert all(extra <= 0 for extra in seen["wide_overflow"]), seen["wide_overflow"]
                    facts = seen
        finally:
            browser.close()
    # Every artifact of report.json, and every unbuilt one, is a row (after the Keras row).
    expected = [a["path"] for a in report["artifacts"]] + [n["path"] for n in report["not_built"]]
    rows = facts["rows"]
    assert len(rows) == 1 + len(expected) and rows[0]["text"].startswith("Keras")
    for path, row in zip(expected, rows[1:], strict=True):
        assert path in row["text"], (path, row["text"])
    rec = report["recommendation"]
    if rec["smallest"]:
        assert rec["smallest"] in facts["summary"] and "smallest" in facts["summary"]
        marked = [r for r in rows if "recommended" in r["cls"].split()]
        assert any(rec["smallest"] in r["text"] for r in marked)
    assert facts["plot_width"] > 0
    return facts


def test_sample_report_reads_at_1280_px_and_on_a_phone(sample_build: Path, tmp_path: Path) -> None:
    facts = check_page(sample_build, tmp_path)
    assert "Within the 1.0 % accuracy-drop bound" in facts["summary"]
    assert "KiB" in facts["summary"] and "accuracy" in facts["summary"]


def test_two_output_report_reads_at_1280_px_and_on_a_phone(two_output_build: Path,
                                                          tmp_path: Path) -> None:
    facts = check_page(two_output_build, tmp_path)
    report = json.loads((two_output_build / "report.json").read_text())
    assert {a["target"] for a in report["artifacts"]} == {"tflite", "onnx"}
    assert len(report["reference"]["outputs"]) == 2
    assert len(facts["rows"]) == 1 + len(report["artifacts"]) + len(report["not_built"]) >= 5
