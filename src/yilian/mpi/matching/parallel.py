"""Splitting a bulk run's pure per-item work across the machine's cores.

Python runs one thread at a time (and numpy one core per call), so the costly pure steps of a
bulk run over blocked pairs — comparing their names, bounding their weights — use one core
while the machine has more. :func:`split` runs ``work(start, end)`` over ``[0, n)`` in parts:
the first part in this process, the others in forked children, which see this process's memory
as it is at the fork (the records, the per-record columns) without copying it, and send back
only their results. That pays when results are compact (arrays, short strings): preparing the
records is not split, because pickling the prepared objects back costs more than it saves.

Only pure computation runs in a child (no database, no logging, no progress display), which is
what makes forking safe even with a display thread running in the parent. Where ``fork`` does
not exist, or the work is small, everything runs here. The parts are concatenated in order, so
the result is exactly what one process computes.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Below this many items a fork costs more than it saves.
MIN_ITEMS = 20_000

_work: Callable[[int, int], Any] | None = None


def workers_available() -> int:
    """The cores this process may use (its CPU affinity, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _run(start: int, end: int) -> Any:
    assert _work is not None
    return _work(start, end)


def split(work: Callable[[int, int], T], n: int, *, workers: int | None = None) -> list[T]:
    """``[work(s, e) for each part]`` of ``[0, n)``, the parts computed side by side."""
    count = workers_available() if workers is None else max(1, workers)
    count = min(count, max(1, n // (MIN_ITEMS // 2)))
    if count <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [work(0, n)]
    bounds = [n * k // count for k in range(count + 1)]
    global _work
    _work = work
    try:
        context = multiprocessing.get_context("fork")
        with context.Pool(count - 1) as pool:
            pending = [pool.apply_async(_run, (bounds[k], bounds[k + 1])) for k in range(1, count)]
            first = work(bounds[0], bounds[1])
            return [first, *(p.get() for p in pending)]
    finally:
        _work = None
