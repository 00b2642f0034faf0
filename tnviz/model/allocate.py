"""Spread one global target (a compression ratio or an error budget) over layers by sensitivity.

Sensitivity = the rise in squared relative error per parameter saved, read from one SVD of each
layer's matrix, whitened by its input covariance when one is given (data-aware). The curve is a
proxy for every method (exact for ``svd``): the allocation fixes each layer's parameter count,
and the method then spends it (``target_params``).

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> low = torch.randn(64, 2, generator=g) @ torch.randn(2, 64, generator=g)
>>> alloc = allocate({"low": low, "full": torch.randn(64, 64, generator=g)}, target_ratio=2.0, device="cpu")
>>> alloc.fractions["low"] < alloc.fractions["full"]
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..errors import RankError
from .device import resolve_device


#: Kept-parameter fractions the allocation chooses from (1 = dense).
FRACTIONS = tuple(sorted({1.0} | {round(0.95 ** k, 4) for k in range(1, 80)}, reverse=True))


@dataclass(frozen=True)
class Allocation:
    """Kept parameters per layer for a global target, with the predicted (proxy) errors."""

    params: dict[str, int]
    fractions: dict[str, float]
    predicted_error: dict[str, float]  # relative (data) error of the rank-r SVD of equal parameters
    total_before: int
    total_after: int
    target: str

    def rows(self) -> list[dict[str, Any]]:
        return [{"layer": n, "kept fraction": self.fractions[n], "params": self.params[n],
                 "predicted error": self.predicted_error[n]} for n in self.params]


def _whitened(weight: torch.Tensor, cov: torch.Tensor | None) -> torch.Tensor:
    W = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    if cov is None:
        return W
    C = cov.to(W.device, torch.float64)
    eps = 1e-6 * float(torch.diagonal(C).mean().clamp_min(1e-30))
    L = torch.linalg.cholesky(C + eps * torch.eye(C.shape[0], dtype=C.dtype, device=C.device))
    return W @ L


def allocate(weights: Mapping[str, torch.Tensor], *, target_ratio: float | None = None,
             error_budget: float | None = None, covariances: Mapping[str, torch.Tensor] | None = None,
             device: Any = None) -> Allocation:
    """Spread one global target over layers by error per parameter saved.

    Each layer's curve is the proxy from one SVD of its (whitened) matrix: at a kept fraction
    ``f`` of its parameters the error is that of the rank-``r`` SVD with ``r (m + n) <= f m n``.
    Starting from every layer dense, the step with the smallest rise in squared relative error
    per parameter saved is taken until the kept total is ``total / target_ratio`` (or until the
    next step would take the RMS relative error over layers above ``error_budget``).
    """
    if (target_ratio is None) == (error_budget is None):
        raise RankError("an allocation needs exactly one target: target_ratio or error_budget")
    if target_ratio is not None and not target_ratio > 1:
        raise RankError(f"a target compression ratio must be above 1; got {target_ratio}")
    if error_budget is not None and not 0 < error_budget < 1:
        raise RankError(f"an error budget must be a relative error in (0, 1); got {error_budget}")
    dev = resolve_device(device)
    curves: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    for name, w in weights.items():
        cov = covariances.get(name) if covariances else None
        M = _whitened(w.to(dev), cov)
        s2 = torch.linalg.svdvals(M).double().cpu() ** 2
        total = float(s2.sum()) or 1.0
        tail = torch.flip(torch.cumsum(torch.flip(s2, [0]), 0), [0]).tolist() + [0.0]  # tail[r] = sum_{k>=r}
        m, n = M.shape
        sizes[name] = m * n
        curve = []
        for f in FRACTIONS:
            r = min(int(f * m * n) // (m + n), len(s2))
            curve.append(max(tail[r], 0.0) / total)
        curves[name] = curve
    position = {n: 0 for n in weights}
    total_before = sum(sizes.values())

    def kept(n: str) -> int:
        return int(FRACTIONS[position[n]] * sizes[n])

    def rms() -> float:
        return math.sqrt(sum(curves[n][position[n]] for n in weights) / max(len(weights), 1))

    goal = total_before / target_ratio if target_ratio is not None else 0
    while True:
        if target_ratio is not None and sum(kept(n) for n in weights) <= goal:
            break
        best, best_cost = None, math.inf
        for n in weights:
            k = position[n]
            if k + 1 >= len(FRACTIONS):
                continue
            saved = (FRACTIONS[k] - FRACTIONS[k + 1]) * sizes[n]
            rise = curves[n][k + 1] - curves[n][k]
            cost = rise / max(saved, 1e-12)
            if cost < best_cost:
                best, best_cost = n, cost
        if best is None:
            if target_ratio is not None:
                raise RankError(f"a target ratio must be reachable; {target_ratio} needs fewer parameters than "
                                f"{FRACTIONS[-1]:.3g} of every layer")
            break
        position[best] += 1
        if error_budget is not None and rms() > error_budget:
            position[best] -= 1
            break
    params = {n: kept(n) for n in weights}
    return Allocation(params, {n: FRACTIONS[position[n]] for n in weights},
                      {n: math.sqrt(curves[n][position[n]]) for n in weights}, total_before,
                      sum(params.values()),
                      f"ratio {target_ratio}" if target_ratio is not None else f"error budget {error_budget}")
