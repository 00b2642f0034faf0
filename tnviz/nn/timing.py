"""Wall-clock timing of a few functions in one process, taking turns (interleaved repeats,
medians), so that load drifts hit all of them alike.  Used by the measured choice
(:mod:`tnviz.nn.autotune`) and the measurement tables (:mod:`tnviz.nn.measure`).

>>> ms = time_interleaved({"sum": lambda: sum(range(100))}, repeats=1, min_seconds=0.0)
>>> list(ms), ms["sum"] > 0
(['sum'], True)
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict[str, Callable[[], Any]], device: Any = None, repeats: int = 5,
                     min_seconds: float = 0.01) -> dict[str, float]:
    """Median milliseconds of each function; the functions take turns so that load drifts hit all.
    Each is called once first (plans, caches, kernels) and that call sizes its inner loop."""
    device = torch.device(device or "cpu")
    inner: dict[str, int] = {}
    for name, fn in fns.items():
        fn()
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        once = max(time.perf_counter() - t, 1e-6)
        inner[name] = max(1, min(100, int(min_seconds / once)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(max(1, repeats)):
        for name, fn in fns.items():
            _sync(device)
            t = time.perf_counter()
            for _ in range(inner[name]):
                fn()
            _sync(device)
            samples[name].append((time.perf_counter() - t) / inner[name] * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}
