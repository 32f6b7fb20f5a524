"""One package per target: shared code goes through the registry and never names a target, and
a new target is one package (a toy one here) that plans, builds, validates, reports and bundles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from converters import targets
from converters.bundles.archive import verify_archive
from converters.bundles.bundle import BundleRequest, build_bundle
from converters.commands.infer import infer
from converters.config import Quantization
from converters.fsutil import read_json
from converters.pipeline import build
from tests.conftest import ROOT, make_config
from tests.toy_target.target import TARGET as TOY

SHARED = ("converters/pipeline/build.py", "converters/pipeline/plan.py", "converters/reporting/report.py",
          "converters/bundles/bundle.py", "converters/reporting/summary.py", "converters/commands/infer.py",
          "tasks.py")


@pytest.mark.parametrize("relative", SHARED)
def test_shared_code_names_no_target(relative: str) -> None:
    names = "|".join(targets.BUILT_IN)
    text = (ROOT / relative).read_text()
    found = [f"{relative}:{number}: {line.strip()}"
             for number, line in enumerate(text.splitlines(), 1)
             if re.search(rf"\b({names})\b", line)]
    assert found == []


def test_a_toy_target_plans_builds_validates_reports_and_bundles_from_its_package_alone(
        tmp_path: Path, tiny_h5: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(targets._registered, TOY.name, TOY)
    out = tmp_path / "build"
    config = make_config(tiny_h5, tiny_dataset, out, targets=("copy",),
                         quantizations=(Quantization.FP32,))
    result = build.convert(config, ["test"])  # type: ignore[arg-type]
    assert result.ran["tiny"][:4] == ["export", "data", "reference", "tflite-fp32"]
    assert {"copy-fp32", "validate-copy-fp32"} <= set(result.ran["tiny"])
    folder = out / "tiny"
    copy = folder / "copy" / "tiny_copy.tflite"
    assert copy.read_bytes() == (folder / "tflite" / "tiny_fp32.tflite").read_bytes()
    report = read_json(folder / "report.json")
    entry = next(a for a in report["artifacts"] if a["target"] == "copy")
    assert entry["metrics"]["top1_agreement"] == 1.0 and entry["runtime"] == "ai-edge-litert"
    assert "copy fp32" in (folder / "report.md").read_text()
    image = next((tiny_dataset / "a").iterdir())
    assert infer(copy, image, top_k=1)[0].top[0].score > 0  # infer finds the toy's runtime
    bundle = build_bundle(BundleRequest(build_dir=folder, target="copy", variant="fp32",
                                        platform="linux/x86_64", python="3.11", with_images=False,
                                        dist=tmp_path / "dist",
                                        constraints=ROOT / "constraints.txt"))
    listed = verify_archive(bundle).bundle
    assert listed["target"] == "copy" and listed["artifact"] == "artifacts/tiny_copy.tflite"
    assert read_json(folder / "copy" / "tiny_copy.json")["note"] == "a copy"  # its default


def test_a_target_brings_its_own_setting_and_config_section(
        tmp_path: Path, tiny_h5: Path, tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The toy's flag, invoke.yaml key and section come from its package alone: the core's
    table, config and invoke.yaml know nothing of them."""
    from converters.commands.settings import by_name, convert_config, render_yaml
    from converters.errors import ConfigError
    from tests.toy_target.target import CopyConfig

    assert "copy_note" not in by_name() and "copy_note" not in render_yaml()
    monkeypatch.setitem(targets._registered, TOY.name, TOY)
    flags = {"model": [str(tiny_h5)], "dataset": str(tiny_dataset), "target": "copy",
             "out": str(tmp_path / "build"), "runner": "local"}  # the toy is not in the image
    assert by_name()["copy_note"].describe() == "copy: what the copy's record says (default a copy)"
    assert "  copy_note: \"a copy\"" in render_yaml()
    from_flag = convert_config({**flags, "copy_note": "from the flag"}, {"copy_note": "yaml"})
    assert from_flag.section("copy", CopyConfig) == CopyConfig("from the flag")
    assert convert_config(flags, {"copy_note": "yaml"}).section("copy", CopyConfig).note == "yaml"
    with pytest.raises(ConfigError, match="did you mean 'copy_note'"):
        convert_config(flags, {"copy_nte": "typo"})
    config = convert_config({**flags, "copy_note": "mine", "quant": "fp32",
                             "latency_runs": "2", "calibration_size": "8",
                             "validation_size": "12"}, {})
    build.convert(config, ["test"])
    assert read_json(tmp_path / "build" / "tiny" / "copy" / "tiny_copy.json")["note"] == "mine"
