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
