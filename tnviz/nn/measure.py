"""Measured cost: time a TN layer's execution strategies against the dense ``nn.Linear`` on a
device, in one run, with the FLOPs each of them counts (:func:`strategy_flops`).

Timings are ratios measured in one process with the methods taking turns (interleaved repeats,
medians, :func:`tnviz.nn.timing.time_interleaved`), so that load drifts hit all of them alike.
Nothing here is used by the tests as a number: tests check that rows exist and that the timed
code computes the right thing.  The measured choice of a layer (``autotune``) lives in
:mod:`tnviz.nn.autotune`; its names are re-exported here, where they used to be.

>>> import tnviz
>>> rows = measure(tnviz.mpo([4, 4], [4, 4], ranks=2), batch=3, repeats=1)
>>> [r["method"] for r in rows][:2]
['nn.Linear', 'TNLinear auto']
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..errors import TnvizError
from ..network import TensorNetwork, load_network
from . import strategies as S
from . import workspace
from .autotune import autotune, batch_bucket, clear_autotune
from .linear import TNLinear
from .timing import time_interleaved

__all__ = ["MODES", "measure", "strategy_flops", "time_interleaved", "autotune", "batch_bucket", "clear_autotune"]

#: What one timed call does: ``eval`` = forward under no_grad in eval mode (weight caches used);
#: ``train`` = forward with gradients on (nothing cached); ``step`` = forward, then the backward
#: pass from an output gradient into every parameter.
MODES = ("eval", "train", "step")


def _step(module: torch.nn.Module, x: torch.Tensor, g: torch.Tensor) -> None:
    """One training step of the layer: forward, then backward from the output gradient ``g``."""
    for p in module.parameters():
        p.grad = None
    module(x).backward(g)


def _call(module: torch.nn.Module, x: torch.Tensor, g: torch.Tensor, mode: str) -> Callable[[], Any]:
    if mode == "step":
        return lambda: _step(module, x, g)
    if mode == "train":
        def forward():
            with torch.enable_grad():
                return module(x)
        return forward

    def inference():
        with torch.no_grad():
            return module(x)
    return inference


def strategy_flops(net: TensorNetwork, name: str, batch: int, cached: bool, step: bool = False) -> int:
    """Counted FLOPs of strategy ``name`` at ``batch``: its forward (the rebuild included unless
    cached), or with ``step`` one training step, forward and backward into every tensor with an
    input that needs no gradient (a first layer; ``nn.Linear`` then does 2 matmuls).  Each plan
    counts its own (``plan.flops(step)``; :func:`tnviz.nn.plan.sweep_flops` for the sweeps)."""
    return int(S.make_plan(name, net, batch, cached).flops(step))


def measure(network: TensorNetwork | str | dict, batch: int = 64, device: Any = None, dtype: Any = None,
            repeats: int = 5, mode: str = "eval", *, seed: int = 0,
            budget: int | None = None) -> list[dict[str, Any]]:
    """Time ``nn.Linear``, ``TNLinear`` with ``auto`` and with every supported strategy on one
    layer, in one run.  Rows: ``method``, ``strategy``, ``ms`` (median), ``speedup_vs_dense``
    (dense ms / method ms, higher is better), ``flops`` (counted FLOPs: the forward, or in mode
    ``step`` the whole training step, :func:`strategy_flops`), ``flops_drop`` (dense FLOPs / method
    FLOPs) and ``note`` (what ``auto`` chose, or why a strategy was skipped).  A training step
    feeds an input that needs no gradient, as a first layer's does.
    """
    if mode not in MODES:
        raise TnvizError(f"measure mode must be one of {list(MODES)}; got {mode!r}")
    if batch < 1:
        raise TnvizError(f"the batch to measure must be at least 1; got {batch}")
    net = load_network(network)
    device = torch.device(device or "cpu")
    dtype = dtype or torch.float32
    torch.manual_seed(seed)
    cached = mode == "eval"
    auto = TNLinear(net, device=device, dtype=dtype, budget=budget)
    dense = torch.nn.Linear(net.in_features, net.out_features, device=device, dtype=dtype)
    layers: dict[str, torch.nn.Module] = {"nn.Linear": dense, "TNLinear auto": auto}
    notes: dict[str, str] = {}
    for name, strat in S.STRATEGIES.items():
        if not strat.supports(net):
            continue
        if strat.measured_only and not strat.available(device):
            notes[f"TNLinear {name}"] = f"skipped: no kernel on {device.type}"
            continue
        plan = S.make_plan(name, net, batch, cached)
        if budget is not None and plan.largest > budget:
            notes[f"TNLinear {name}"] = f"skipped: needs {plan.largest:,} elements (> budget)"
            continue
        layer = TNLinear(net, device=device, dtype=dtype, strategy=name, budget=budget)
        layer.load_state_dict(auto.state_dict())
        layers[f"TNLinear {name}"] = layer
    for m in layers.values():
        m.train(mode != "eval")
    x = torch.randn(batch, net.in_features, device=device, dtype=dtype)
    g = torch.randn(batch, net.out_features, device=device, dtype=dtype)
    ms = time_interleaved({k: _call(m, x, g, mode) for k, m in layers.items()}, device, repeats)
    step = mode == "step"
    dense_flops = (2 if step else 1) * 2 * batch * net.in_features * net.out_features
    rows = []
    for method, t in ms.items():
        strategy = auto.last_strategy if method == "TNLinear auto" else method.removeprefix("TNLinear ")
        flops = dense_flops if method == "nn.Linear" else strategy_flops(net, strategy, batch, cached, step)
        rows.append({
            "method": method, "strategy": strategy if method != "nn.Linear" else "dense", "ms": t,
            "speedup_vs_dense": ms["nn.Linear"] / t, "flops": flops, "flops_drop": dense_flops / max(flops, 1),
            "note": f"chose {strategy}" if method == "TNLinear auto" else "",
        })
    rows += [{"method": k, "strategy": k.removeprefix("TNLinear "), "ms": float("nan"), "speedup_vs_dense": float("nan"),
              "flops": 0, "flops_drop": float("nan"), "note": v} for k, v in notes.items()]
    workspace.release()  # a one-off measurement (the Costs page) keeps no buffers in a long-lived app
    return rows
