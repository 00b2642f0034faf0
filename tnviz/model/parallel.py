"""The per-weight map spread over the CPU's cores: :mod:`tnviz.threads` (in the core, so that the
decompositions' own sweeps, such as the trade-off's, use it too), named here where the model
pipeline has always found it.

>>> map_ordered(lambda x: x + 1, [1, 2], workers=2)
[2, 3]
"""
from __future__ import annotations

from ..threads import WORKERS_ENV, default_workers, map_ordered, single_threaded_ops

__all__ = ["WORKERS_ENV", "default_workers", "map_ordered", "single_threaded_ops"]
