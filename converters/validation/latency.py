"""Wall-clock latency of repeated single calls: the one way every artifact and the Keras model
are timed."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

WARMUP_RUNS = 3


@dataclass(frozen=True)
class Latency:
    """Wall times of repeated single calls: the median and the 10th-90th percentile spread."""

    median_ms: float
    p10_ms: float
    p90_ms: float

    def as_record(self) -> dict[str, Any]:
        """The fields a validation or reference record stores (``latency_ms`` is the median)."""
        return {"latency_ms": self.median_ms, "latency_spread_ms": [self.p10_ms, self.p90_ms]}


def measure_latency(call: Callable[[], object], runs: int) -> Latency:
    """Time ``call`` ``runs`` times after a short warm-up; the median and p10-p90 of the runs."""
    for _ in range(WARMUP_RUNS):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    p10, p90 = np.percentile(times, [10, 90])
    return Latency(float(statistics.median(times)), float(p10), float(p90))


def median_latency_ms(call: Callable[[], object], runs: int) -> float:
    """Median wall time of ``call`` over ``runs`` calls, after a short warm-up."""
    return measure_latency(call, runs).median_ms
