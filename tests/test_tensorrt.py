"""TensorRT engine code: what a CPU can check (profile shapes, sidecar content, detection of a
missing TensorRT/GPU, error paths) runs everywhere; building and running real engines needs
TensorRT and an NVIDIA GPU and skips, saying so, without them. Nothing here pretends a build."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from converters.errors import ConfigError
from converters.targets.tensorrt.engine import BatchProfile, sidecar, tensorrt_problem
from tests.conftest import ROOT, run_invoke

PROBLEM = tensorrt_problem()


def test_batch_profile_shapes_for_an_nhwc_input() -> None:
    profile = BatchProfile.parse("1,8,32")
    assert profile.shapes((224, 224, 3)) == {"min": [1, 224, 224, 3], "opt": [8, 224, 224, 3],
                                             "max": [32, 224, 224, 3]}
    assert profile.as_dict() == {"min": 1, "opt": 8, "max": 32}


@pytest.mark.parametrize("text", ["8,1,32", "0,1,2", "1,2", "a,b,c"])
def test_bad_batch_profiles_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--batch"):
        BatchProfile.parse(text)


def test_cli_refuses_a_bad_batch_profile(tmp_path: Path) -> None:
    result = run_invoke("convert", "--target", "tensorrt", "--batch", "8,1,32", "--out",
                        str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "--batch must be min,opt,max with 1 <= min <= opt <= max, got 8,1,32" in result.stderr


def test_sidecar_names_what_the_engine_is_tied_to() -> None:
    device = {"cuda_runtime_version": 12080, "cuda_driver_version": 12080, "gpu": "GPU name",
              "compute_capability": "8.9"}
    facts = sidecar("10.8.0", device, "int8", True, "input",
                    BatchProfile(1, 4, 8).shapes((32, 32, 3)), 1 << 30)
    assert facts["tensorrt_version"] == "10.8.0" and facts["compute_capability"] == "8.9"
    assert facts["profile"]["max"] == [8, 32, 32, 3] and facts["strongly_typed"]
    json.dumps(facts)  # a JSON sidecar, never bytes prepended to the engine


def test_missing_tensorrt_is_detected_before_trying() -> None:
    if PROBLEM is None:
        pytest.skip("TensorRT and a GPU are present here")
    assert "TensorRT is not installed" in PROBLEM or "GPU" in PROBLEM or "CUDA" in PROBLEM


@pytest.mark.gpu
@pytest.mark.skipif(PROBLEM is not None, reason=f"needs TensorRT and an NVIDIA GPU: {PROBLEM}")
def test_engines_build_validate_and_load_in_trtexec(tmp_path: Path) -> None:
    result = run_invoke("convert", "--model", str(ROOT / "model" / "sample.h5"), "--target",
                        "tensorrt", "--quant", "fp32,fp16,int8", "--batch", "1,4,8",
                        "--dataset", str(ROOT / "dataset"), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "sample" / "report.json").read_text())
    rows = {a["variant"]: a for a in report["artifacts"] if a["target"] == "tensorrt"}
    assert set(rows) == {"fp32", "fp16", "int8"} and report["not_built"] == []
    for engine in report["tensorrt"]:
        assert engine["ran"] and engine["metrics"]["accuracy"] >= 0.95
        assert rows[engine["precision"]]["metrics"] == engine["metrics"]
        assert engine["sidecar"]["profile"]["opt"] == [4, 32, 32, 3]
        path = tmp_path / "sample" / engine["engine"]
        trtexec = shutil.which("trtexec")
        if trtexec:
            loaded = subprocess.run([trtexec, f"--loadEngine={path}", "--shapes=input:1x32x32x3"],
                                    capture_output=True, text=True, timeout=300)
            assert loaded.returncode == 0, loaded.stdout[-2000:]
