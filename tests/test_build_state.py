"""invoke infer on a build folder whose last rebuild did not finish: refused, not run with
class names and preprocessing that may belong to other inputs (it ran the old artifact with no
warning); an artifact no stage recorded is refused too."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import ROOT, run_invoke
from tests.test_cli import assert_user_error

SAMPLE = ROOT / "model" / "sample.h5"


def convert(out: Path, dataset: Path) -> object:
    return run_invoke("convert", "--model", str(SAMPLE), "--dataset", str(dataset), "--out",
                      str(out), "--quant", "fp32", "--runner", "local", "--latency-runs", "2",
                      "--validation-size", "20", "--calibration-size", "20")


def test_infer_refuses_an_artifact_after_a_failed_rebuild(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert convert(out, ROOT / "dataset").returncode == 0  # type: ignore[attr-defined]
    artifact = out / "sample" / "tflite" / "sample_fp32.tflite"
    image = next((ROOT / "dataset" / "circle").iterdir())
    assert run_invoke("infer", "--artifact", str(artifact), "--image", str(image)).returncode == 0
    three = tmp_path / "three"  # a class folder short: the data stage fails in the rebuild
    for name in ("circle", "square", "stripes"):
        shutil.copytree(ROOT / "dataset" / name, three / name)
    assert convert(out, three).returncode != 0  # type: ignore[attr-defined]
    result = run_invoke("infer", "--artifact", str(artifact), "--image", str(image))
    assert_user_error(result, f"the last build of {out / 'sample'} did not finish and left "
                      "stage(s) data, tflite-fp32 stale: sample_fp32.tflite and the class names")
    assert convert(out, ROOT / "dataset").returncode == 0  # type: ignore[attr-defined]
    again = run_invoke("infer", "--artifact", str(artifact), "--image", str(image))
    assert again.returncode == 0 and again.stdout.split("\t")[0] == "circle"


def test_infer_refuses_a_file_no_stage_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert convert(out, ROOT / "dataset").returncode == 0  # type: ignore[attr-defined]
    planted = out / "sample" / "tflite" / "other.tflite"
    shutil.copy(out / "sample" / "tflite" / "sample_fp32.tflite", planted)
    result = run_invoke("infer", "--artifact", str(planted), "--image",
                        str(next((ROOT / "dataset" / "circle").iterdir())))
    assert_user_error(result, f"{planted} is not recorded by any finished stage")
