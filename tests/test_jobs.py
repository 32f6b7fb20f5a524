"""-j/--jobs auto: the rule as a pure function of cores and available memory."""

from __future__ import annotations

import pytest

from converters.errors import ConfigError
from converters.jobs import auto_jobs, parse_jobs

GIB = 2**30


@pytest.mark.parametrize("cores,memory,expected", [
    (1, 64 * GIB, 1),
    (2, 64 * GIB, 1),  # measured: two TensorFlow processes on 2 cores are slower than one
    (4, 64 * GIB, 2),
    (16, 64 * GIB, 8),
    (16, 5 * GIB, 2),  # memory caps it: one process per 2 GiB available
    (16, 1 * GIB, 1),  # never below one
    (8, None, 4),  # memory unknown: cores decide
])
def test_auto_jobs_rule(cores: int, memory: int | None, expected: int) -> None:
    assert auto_jobs(cores, memory) == expected


def test_parse_jobs_accepts_auto_or_a_whole_number() -> None:
    assert parse_jobs("3") == 3
    assert parse_jobs("auto") >= 1
    with pytest.raises(ConfigError, match="must be 'auto' or a whole number, got 'many'"):
        parse_jobs("many")
    with pytest.raises(ConfigError, match="between 1 and 256, got 0"):
        parse_jobs("0")


def test_auto_counts_the_cores_this_process_may_use() -> None:
    """Under taskset (or a container's cpuset) the default threads and -j auto follow the
    affinity, not the machine's core count."""
    import subprocess
    import sys

    script = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
              "from pathlib import Path\n"
              "from converters.config import ConvertConfig, DatasetConfig\n"
              "from converters.cpu import usable_cores\n"
              "from converters.jobs import parse_jobs\n"
              "config = ConvertConfig(models=(Path('m.h5'),), dataset=DatasetConfig(Path('d')))\n"
              "print(usable_cores(), config.threads, parse_jobs('auto'))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["1", "1", "1"]


def test_parallel_stage_processes_share_the_threads_out() -> None:
    from pathlib import Path

    from converters.config import ConvertConfig, DatasetConfig

    def stage_threads(threads: int, jobs: int) -> int:
        config = ConvertConfig(models=(Path("m.h5"),), dataset=DatasetConfig(Path("d")),
                               threads=threads, jobs=jobs)
        return config.stage_threads()

    assert stage_threads(8, 1) == 8
    assert stage_threads(8, 4) == 2
    assert stage_threads(3, 2) == 1
    assert stage_threads(1, 4) == 1  # never below one
