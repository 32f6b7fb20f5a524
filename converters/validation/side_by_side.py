"""Run many independent items through a few workers side by side.

Validation runs one sample at a time, and a small model's single-sample call keeps two cores
busy only part of the time: workers that each run a whole sample on their share of the cores,
taking the next sample when free, get through a split sooner (LiteRT interpreters, MediaPipe classifiers;
``benchmarks/side_by_side.py``). Each item's result depends only on the item, not on the worker
that ran it, so the results are those of one worker, in the items' order.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from converters import console

W = TypeVar("W")
I = TypeVar("I")  # noqa: E741
R = TypeVar("R")


def run_side_by_side(workers: list[W], items: Iterable[I], run: Callable[[W, I], R],
                     description: str, total: int | None = None) -> list[R]:
    """``run(worker, item)`` for every item, in the items' order, each worker in a thread of
    its own taking the next item when it is free (one worker: this thread, in order). The first
    error (or Ctrl-C) is raised once the items then running are done; the rest never start."""
    if len(workers) == 1:
        [worker] = workers
        return [run(worker, item) for item in console.progress(items, description, total)]
    idle: queue.SimpleQueue[W] = queue.SimpleQueue()
    for worker in workers:
        idle.put(worker)

    def one(item: I) -> R:
        worker = idle.get()
        try:
            return run(worker, item)
        finally:
            idle.put(worker)

    with ThreadPoolExecutor(len(workers)) as pool:  # map cancels what has not started on an error
        return list(console.progress(pool.map(one, items), description, total=total))
