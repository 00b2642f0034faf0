"""The per-weight map, spread over the CPU's cores: independent weights decomposed at once (or the
independent points of one weight's trade-off sweep), each with single-threaded torch operations.

Why not torch's own threads: a decomposition is dozens of medium-size LAPACK calls (SVD, eigh,
Cholesky of 384..1536-sized matrices), and torch's intra-op threads spin at every call's barrier.
On the 2-core development machine, busy with other work, one MiniLM layer's bond split took 14.6 s
with two intra-op threads and 0.09 s with one (measured 2026-12-02; the whole 12-layer CLI run
135 s against 11.5 s).  Two weights on two workers, each single-threaded, use both cores without
that contention, and each weight's arithmetic then does not depend on the number of cores: the
same input gives the same bytes on every machine.  Model passes (calibration, metrics, healing)
are large GEMMs, which torch's threads do speed up; they keep them.

>>> map_ordered(lambda x: x * x, [1, 2, 3], workers=2)
[1, 4, 9]
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Environment variable that caps the workers of the per-weight map (default: torch's thread count).
WORKERS_ENV = "TNVIZ_WORKERS"


def default_workers() -> int:
    """Workers for the per-weight map: ``$TNVIZ_WORKERS``, else torch's intra-op thread count (which
    follows ``OMP_NUM_THREADS`` and ``torch.set_num_threads``), at least 1."""
    value = os.environ.get(WORKERS_ENV)
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            pass
    import torch

    return max(1, torch.get_num_threads())


@contextmanager
def single_threaded_ops() -> Iterator[None]:
    """torch operations on the calling thread only, for the duration (the previous count restored)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def map_ordered(fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = None,
                done: Callable[[int, T], None] | None = None) -> list[R]:
    """``[fn(item) for item in items]`` on ``workers`` threads with single-threaded torch operations;
    results in the order of ``items``.  ``done(k, item)`` is called on the calling thread as each
    item finishes (for progress bars that must be drawn there).  An exception in ``fn`` or in
    ``done`` (a cancel) is raised here once the items already running finish; the items not
    started yet are not run."""
    items = list(items)
    n = min(len(items), default_workers() if workers is None else max(1, workers))
    if n <= 1:
        out = []
        with single_threaded_ops():
            for k, item in enumerate(items):
                out.append(fn(item))
                if done:
                    done(k + 1, item)
        return out
    results: list[Any] = [None] * len(items)
    with single_threaded_ops(), ThreadPoolExecutor(max_workers=n, thread_name_prefix="tnviz-map") as pool:
        futures = {pool.submit(fn, item): k for k, item in enumerate(items)}
        from concurrent.futures import as_completed

        finished = 0
        try:
            for future in as_completed(futures):
                k = futures[future]
                results[k] = future.result()
                finished += 1
                if done:
                    done(finished, items[k])
        except BaseException:  # a failed item, or ``done`` stopped the run (a cancel): start no more
            for future in futures:
                future.cancel()
            raise
    return results
