"""A model whose samples cannot fit in memory is refused with the numbers before any array is
allocated, within seconds and a bounded amount of memory (it was OOM-killed at 23 GB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from converters.errors import ModelError
from converters.inputs.host_memory import available_memory, check_fits
from tests.conftest import ROOT
from tests.test_cli import assert_user_error

GIB = 2**30


def test_one_sample_larger_than_memory_is_refused() -> None:
    with pytest.raises(ModelError, match=r"needs about 111\.8 GiB to run one sample \(111\.8 GiB of "
                                         r"input.*this machine has 16\.0 GiB available"):
        check_fits("m.keras", 100000 * 100000 * 3 * 4, 1000, samples=1, available=16 * GIB)


def test_splits_larger_than_memory_are_refused_naming_the_sizes() -> None:
    check_fits("m.keras", 100 * 2**20, 10 * 2**20, samples=100, available=16 * GIB)
    with pytest.raises(ModelError, match=r"the 300 calibration and validation samples .* need "
                                         r"about 29\.3 GiB .*--calibration-size"):
        check_fits("m.keras", 100 * 2**20, 10 * 2**20, samples=300, available=16 * GIB)
    check_fits("m.keras", 10**15, 10**15, samples=10**6, available=None)  # unknown: no check


def test_enormous_declared_input_fails_fast_with_bounded_memory(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((100000, 100000, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(inputs))
    model = tmp_path / "huge.keras"
    keras.Model(inputs, outputs).save(model)
    # The command in a child whose children's peak memory is read afterwards.
    probe = (
        "import resource, subprocess, sys\n"
        "result = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=300)\n"
        "sys.stderr.write(result.stderr)\n"
        "print(result.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    command = [sys.executable, "-c", probe, sys.executable, "-m", "invoke", "--search-root",
               str(ROOT), "convert", "--model", str(model), "--dataset", str(ROOT / "dataset"),
               "--out", str(tmp_path / "out"), "--runner", "local", "--quant", "fp32"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=400)
    code, peak_kib = (int(value) for value in result.stdout.split())
    assert code != 0 and "Traceback" not in result.stderr, result.stderr
    result.returncode = code
    assert_user_error(result, f"model {model} needs about 111.8 GiB to run one sample",
                      "check the model's declared input shape")
    assert peak_kib < 3 * 2**20  # KiB: under 3 GiB (it grew to 23 GB before)
    assert not (tmp_path / "out" / "huge" / "data").exists()
    assert available_memory() is not None
