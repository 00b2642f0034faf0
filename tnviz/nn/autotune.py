"""The measured choice: ``TNLinear(..., autotune=True)`` (and the default layer where
:func:`tnviz.nn.strategies.decide` says ``measured``) picks the fastest strategy by timing the
plausible ones once on the layer's own tensors, per (network, batch bucket, dtype, device, mode).

The choice is shared by every layer of the same network (:data:`_TUNED`); :func:`clear_autotune`
forgets it.  The layer is used through what it offers any caller (its network, tensors, plans and
:meth:`~tnviz.nn.TNLinear.call_context`): this module does not import it.

>>> [batch_bucket(b) for b in (1, 3, 64, 65)]
[1, 4, 64, 128]
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..network import TensorNetwork
from . import strategies as S
from .timing import time_interleaved

#: Strategies whose modelled cost is more than this many times the best one are not timed by
#: the autotune (they cannot win; timing them could cost seconds, e.g. rebuilding in training).
AUTOTUNE_ESTIMATE_SLACK = 8.0

#: Timed repeats of the autotune (interleaved; the median is used).
AUTOTUNE_REPEATS = 3

# (network, batch bucket, dtype, device, cached, grad, budget) -> strategy name; shared by all layers
_TUNED: dict[tuple, str] = {}
_TUNED_TIMES: dict[tuple, dict[str, float]] = {}


def batch_bucket(batch: int) -> int:
    """The power of two at or above ``batch``: the autotune measures once per bucket."""
    return 1 << max(0, int(batch) - 1).bit_length()


def autotune(layer: Any, batch: int, dtype: Any, device: Any) -> str:
    """The fastest strategy for ``layer`` at ``batch``'s bucket in its current mode, timed once
    (a few interleaved repeats on the layer's own tensors) and cached per (network, batch bucket,
    dtype, device, mode).  In training mode a call is timed as forward plus the backward pass
    (``torch.autograd.grad``, so no ``.grad`` is touched); under no_grad as the forward alone."""
    net: TensorNetwork = layer.network
    cached = layer.caches_weights()
    grad = torch.is_grad_enabled() and any(p.requires_grad for p in layer.parameters())
    device = torch.device(device)
    key = (net, batch_bucket(batch), dtype, str(device), cached, grad, layer.budget)
    hit = _TUNED.get(key)
    if hit is not None:
        return hit
    est = S.estimates(net, batch, cached)
    best = min(est.values())
    candidates = []
    for name, e in sorted(est.items(), key=lambda kv: kv[1]):
        plan = S.make_plan(name, net, batch, cached)
        if layer.budget is not None and plan.largest > layer.budget:
            continue
        if e <= AUTOTUNE_ESTIMATE_SLACK * best:
            candidates.append(name)
    if not candidates:  # nothing fits: let the cost-model choice raise its BudgetError
        return S.choose(net, batch, cached, layer.budget)
    for name, strategy in S.STRATEGIES.items():  # device-dependent kernels compete with the sweep they replace
        if strategy.measured_only and "chain" in candidates and strategy.supports(net) and strategy.available(device):
            plan = S.make_plan(name, net, batch, cached)
            if layer.budget is None or plan.largest <= layer.budget:
                candidates.append(name)
    if len(candidates) == 1:
        _TUNED[key] = candidates[0]
        return candidates[0]
    x = torch.randn(batch, net.in_features, device=device, dtype=dtype)
    tensors = layer.ordered_tensors()

    def run(name: str) -> Callable[[], Any]:  # each call as forward runs it (workspace included)
        plan = layer.plan(batch, name, dtype, device)
        if grad:
            g = torch.randn(batch, net.out_features, device=device, dtype=dtype)
            return lambda: torch.autograd.grad(plan(x, layer.call_context()), tensors, g, allow_unused=True)
        return lambda: plan(x, layer.call_context())

    times = time_interleaved({name: run(name) for name in candidates}, device, AUTOTUNE_REPEATS, 0.005)
    choice = min(times, key=times.get)
    _TUNED[key] = choice
    _TUNED_TIMES[key] = times
    return choice


def clear_autotune() -> None:
    """Forget every autotuned choice (e.g. after the machine's load changed)."""
    _TUNED.clear()
    _TUNED_TIMES.clear()
