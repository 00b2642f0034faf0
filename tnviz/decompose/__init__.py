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

from .api import DECOMPOSITIONS, DESCRIPTIONS, METHODS, decompose, method_options
from .result import Decomposition
from .tradeoff import TradeoffPoint, pareto_front, tradeoff

__all__ = [
    "DECOMPOSITIONS", "DESCRIPTIONS", "Decomposition", "decompose", "method_options",
    "tradeoff", "pareto_front", "TradeoffPoint", "METHODS",
]
