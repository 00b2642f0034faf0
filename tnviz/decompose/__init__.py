"""Decompositions of real weights into tensor networks (MPO/TT, tensor ring, Tucker, CP, SVD),
with truncation, randomized SVDs, data-aware (input-covariance) variants and trade-off sweeps.

Works on torch tensors on any device (the weight's); imports torch lazily so ``import tnviz``
stays light.

>>> import torch
>>> from tnviz.decompose import decompose, DECOMPOSITIONS
>>> list(DECOMPOSITIONS)
['mpo', 'tr', 'tucker', 'cp', 'svd']
>>> W = torch.randn(64, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
>>> res = decompose(W, "tucker", in_dims=[8, 6], out_dims=[8, 8], max_rank=4)
>>> res.ranks, res.params < W.numel()
({'r1': 4, 'r2': 4, 'r3': 4, 'r4': 4}, True)
"""
from __future__ import annotations

import sys as _sys
import types as _types

from .api import DECOMPOSITIONS, DESCRIPTIONS, METHODS, decompose, method_options
from .result import Decomposition
from .tradeoff import TradeoffPoint, pareto_front, tradeoff

__all__ = [
    "DECOMPOSITIONS", "DESCRIPTIONS", "Decomposition", "decompose", "method_options",
    "tradeoff", "pareto_front", "TradeoffPoint", "METHODS",
]


class _CallableModule(_types.ModuleType):
    """``tnviz.decompose`` is this package *and* its main function (SPEC 2.3):
    ``tnviz.decompose(W, "mpo", max_rank=8)`` calls :func:`decompose`, while
    ``from tnviz.decompose import tradeoff`` and ``import tnviz.decompose as d`` keep working."""

    def __call__(self, *args, **kwargs):
        return decompose(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallableModule
