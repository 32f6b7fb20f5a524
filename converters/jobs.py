"""``-j/--jobs auto``: how many stage processes a build runs at once on this machine.

Each stage process imports TensorFlow (or LiteRT) and converts or runs a model with several
threads, so a process wants about two cores and up to 2 GiB (MobileNetV2 224x224 peaks near
1.2 GiB in one conversion process, see benchmarks/memory_notes.md). Measured on 2 cores, two
processes were slower than one (issue #16: 1.27x the serial build time with ``-j 2``): the
second TensorFlow import and the threads fighting over the cores cost more than the overlap
gains. Hence the rule, a pure function of cores and available memory:

* 2 cores or fewer: 1 (serial);
* else one process per two cores, at most one per 2 GiB of available memory, at least 1.
"""

from __future__ import annotations

from converters.cpu import usable_cores
from converters.errors import ConfigError, shown
from converters.inputs.host_memory import available_memory

AUTO = "auto"
CORES_PER_PROCESS = 2
MEMORY_PER_PROCESS = 2 * 2**30  # bytes
SERIAL_UP_TO_CORES = 2
MAX_JOBS = 256  # stage processes at once: more than any machine this runs on can feed


def auto_jobs(cores: int, available_memory: int | None) -> int:
    """Stage processes to run at once with ``cores`` CPUs and ``available_memory`` bytes free
    (None: unknown, cores alone decide)."""
    if cores <= SERIAL_UP_TO_CORES:
        return 1
    by_cores = cores // CORES_PER_PROCESS
    if available_memory is None:
        return by_cores
    return max(1, min(by_cores, available_memory // MEMORY_PER_PROCESS))


def parse_jobs(value: str) -> int:
    """``auto`` (the rule above, on this machine) or a whole number of at least 1."""
    text = str(value).strip()
    if text == AUTO:
        return auto_jobs(usable_cores(), available_memory())
    try:
        jobs = int(text)
    except ValueError:
        raise ConfigError(f"-j/--jobs must be 'auto' or a whole number, got "
                          f"{shown(text, quoted=True)}") from None
    if not 1 <= jobs <= MAX_JOBS:
        raise ConfigError(f"-j/--jobs must be between 1 and {MAX_JOBS}, got {shown(text)}")
    return jobs
