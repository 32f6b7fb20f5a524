"""The code stays typed and lint-clean: ruff and mypy run as part of the suite."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.quick  # part of `invoke test --quick`


def test_ruff_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "converters", "tests",
                             "tasks.py", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy", "converters", "tasks.py"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
