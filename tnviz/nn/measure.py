"""Measured cost: time a TN layer's execution strategies against the dense ``nn.Linear`` on a
device, and the one-time micro-autotune that lets ``TNLinear(..., autotune=True)`` pick by time.

Timings are ratios measured in one process with the methods taking turns (interleaved repeats,
medians), so that load drifts hit all of them alike.  Nothing here is used by the tests as a
number: tests check that rows exist and that the timed code computes the right thing.

>>> import tnviz
>>> rows = measure(tnviz.mpo([4, 4], [4, 4], ranks=2), batch=3, repeats=1)
>>> [r["method"] for r in rows][:2]
['nn.Linear', 'TNLinear auto']
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from ..cost import training_step_flops
from ..errors import TnvizError
from ..network import TensorNetwork, load_network
from . import strategies as S
from . import workspace

#: What one timed call does: ``eval`` = forward under no_grad in eval mode (weight caches used);
#: ``train`` = forward with gradients on (nothing cached); ``step`` = forward, then the backward
#: pass from an output gradient into every parameter.
MODES = ("eval", "train", "step")

#: Strategies whose modelled cost is more than this many times the best one are not timed by
#: the autotune (they cannot win; timing them could cost seconds, e.g. rebuilding in training).
AUTOTUNE_ESTIMATE_SLACK = 8.0

#: Timed repeats of the autotune (interleaved; the median is used).
AUTOTUNE_REPEATS = 3

# (network, batch bucket, dtype, device, cached, grad) -> strategy name; shared by all layers
_TUNED: dict[tuple, str] = {}
_TUNED_TIMES: dict[tuple, dict[str, float]] = {}


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


def batch_bucket(batch: int) -> int:
    """The power of two at or above ``batch``: the autotune measures once per bucket."""
    return 1 << max(0, int(batch) - 1).bit_length()


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
    input that needs no gradient (a first layer; ``nn.Linear`` then does 2 matmuls).  A sweep's
    backward takes a weight and a state gradient per step, each as costly as the step, except
    the state gradient of the step that reads the input; a merge of cores costs 3x its forward."""
    plan = S.make_plan(name, net, batch, cached)
    dense = 2 * batch * net.in_features * net.out_features
    if name == "rebuilt":
        if step:
            return 2 * dense + 3 * plan.reconstruct_flops
        return dense + (0 if cached else plan.reconstruct_flops)
    if name == "factorized":
        return training_step_flops(net, batch, input_grad=False)[0] if step else int(plan.flops)
    if not step:
        return int(plan.flops)
    if name == "fused":  # the kernel (its own count: GEMM 1 once per output tile), then a backward
        # in plain GEMMs over the two parts: the first part's product U recomputed, the gradients
        # of U and of both parts (no input gradient): twice each part's sweep
        first, second = plan.halves.segments
        return int(plan.flops) + 2 * (first.flops + second.flops) + 3 * (first.merge_flops + second.merge_flops)
    segments = [st.seg for st in plan.steps] if hasattr(plan, "steps") else list(plan.segments)
    sweep = sum(seg.flops for seg in segments)
    merges = sum(seg.merge_flops for seg in segments)
    return 3 * sweep - segments[0].flops + 3 * merges


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
    from .linear import TNLinear

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
        if S.measured_only(name) and not strat.available(device):
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


def autotune(layer: Any, batch: int, dtype: Any, device: Any) -> str:
    """The fastest strategy for ``layer`` at ``batch``'s bucket in its current mode, timed once
    (a few interleaved repeats on the layer's own tensors) and cached per (network, batch bucket,
    dtype, device, mode).  In training mode a call is timed as forward plus the backward pass
    (``torch.autograd.grad``, so no ``.grad`` is touched); under no_grad as the forward alone."""
    net: TensorNetwork = layer.network
    cached = layer._caching_allowed()
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
        if S.measured_only(name) and "chain" in candidates and strategy.supports(net) and strategy.available(device):
            plan = S.make_plan(name, net, batch, cached)
            if layer.budget is None or plan.largest <= layer.budget:
                candidates.append(name)
    if len(candidates) == 1:
        _TUNED[key] = candidates[0]
        return candidates[0]
    x = torch.randn(batch, net.in_features, device=device, dtype=dtype)
    tensors = layer.ordered_tensors()

    from .linear import _Call

    def run(name: str) -> Callable[[], Any]:  # each call as forward runs it (workspace included)
        plan = layer.plan(batch, name, dtype, device)
        if grad:
            g = torch.randn(batch, net.out_features, device=device, dtype=dtype)
            return lambda: torch.autograd.grad(plan(x, _Call(layer)), tensors, g, allow_unused=True)
        return lambda: plan(x, _Call(layer))

    times = time_interleaved({name: run(name) for name in candidates}, device, AUTOTUNE_REPEATS, 0.005)
    choice = min(times, key=times.get)
    _TUNED[key] = choice
    _TUNED_TIMES[key] = times
    return choice


def clear_autotune() -> None:
    """Forget every autotuned choice (e.g. after the machine's load changed)."""
    _TUNED.clear()
    _TUNED_TIMES.clear()
