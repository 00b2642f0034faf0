"""Execution strategies of a TN layer: the registry, and which one a layer runs.

How ``y = x W^T`` is computed from the tensors.  Each strategy lives in its own module and joins
:data:`STRATEGIES` (name -> strategy) by :func:`register_strategy` (:mod:`tnviz.nn` registers the
built-in ones).  Every strategy has ``supports(net)``, ``available(device)``, ``measured_only``
and ``plan(net, batch, cached)``; a plan (:mod:`tnviz.nn.plan`) is made once per (network, batch,
mode) and reused.

* ``factorized`` (:mod:`~tnviz.nn.factorized`): ``x`` contracted through the tensors along the
  planned opt_einsum path (the same path the cost model reports); works for every network.
* ``rebuilt`` (:mod:`~tnviz.nn.rebuild`): the dense weight rebuilt from the tensors (cached in
  eval mode), one matmul.
* ``chain`` (:mod:`~tnviz.nn.chain`): MPO/TT chains, cut into segments of merged neighbouring
  cores (dynamic programming on the cost model for the batch at hand) and swept as GEMMs on
  reshapes of the running state, no permute copies.
* ``ring`` (:mod:`~tnviz.nn.ring`): tensor rings, cut at their closing bond, which the sweep
  carries along like the batch; otherwise as ``chain``.
* ``modes`` (:mod:`~tnviz.nn.modes`): Tucker and CP (one GEMM per factor / Khatri-Rao product,
  one for the core).
* ``fused`` (:mod:`~tnviz.nn.fused`): MPO chains as one Triton kernel on CUDA, when triton is
  installed; chosen by measurement only (it runs the chain plan where there is no kernel).

``auto`` (in the layer) runs what :func:`decide` says: the supported strategy with the lowest
modelled cost whose intermediates fit the memory budget, or, where the cost model is known to be
weak, the fastest one timed at the first call (:mod:`tnviz.nn.autotune`).  This module imports
no torch: the CLI and the app ask it which strategy a layer runs from shapes alone.

>>> from tnviz.builders import mpo
>>> net = mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=8)
>>> sorted(name for name, s in STRATEGIES.items() if s.supports(net) and not s.measured_only)
['chain', 'factorized', 'rebuilt']
>>> choose(net, batch=64)
'chain'
>>> make_plan("chain", net, 1024).describe()       # cores merged where that is cheaper at this batch
'AB | CD'
>>> d = decide(net, 1024, cached=True)
>>> d.strategy, d.measured, min(d.estimates, key=d.estimates.get)
('chain', False, 'chain')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..contract import DEFAULT_BUDGET_ELEMENTS
from ..errors import BudgetError
from ..network import TensorNetwork
from .plan import Plan, StrategyError
from .rebuild import dense_weight

__all__ = ["STRATEGIES", "AUTO", "Strategy", "StrategyError", "Decision", "register_strategy", "check_name",
           "make_plan", "estimates", "measured_only", "choose", "decide", "dense_weight",
           "AUTOTUNE_MIN_ELEMENTS", "FAST_PATHS"]


class Strategy(Protocol):
    """One way to run a layer (see the module docstring)."""

    name: str
    description: str
    measured_only: bool  # a device kernel: chosen by measurement only, never by the cost model

    def supports(self, net: TensorNetwork) -> bool: ...

    def available(self, device: Any) -> bool: ...

    def plan(self, net: TensorNetwork, batch: int, cached: bool = False) -> Plan: ...


#: Execution strategies by name.  ``auto`` is not an entry: it chooses among these.
STRATEGIES: dict[str, Strategy] = {}

AUTO = "auto"

#: With ``autotune=None``, layers at least this large (in_features * out_features) and without a
#: fast path are timed in inference (benchmarks/README.md, tensor ring).
AUTOTUNE_MIN_ELEMENTS = 1 << 20

#: Strategies whose presence means the cost model's choice is trusted by default.  ``ring`` is
#: not one: on rings of few large cores its modelled cost is off by 2x either way
#: (benchmarks/README.md), so large tensor rings are still measured in inference.
FAST_PATHS = ("chain", "modes")


def register_strategy(strategy: Strategy) -> Strategy:
    """Add ``strategy`` to :data:`STRATEGIES` under ``strategy.name`` (registering the same object
    again is a no-op); returns it.  Names are unique and never ``auto``."""
    name = strategy.name
    taken = STRATEGIES.get(name)
    if name == AUTO or (taken is not None and taken is not strategy):
        raise StrategyError(f"a strategy needs a name of its own, not {AUTO!r} or one of {list(STRATEGIES)}; "
                            f"got {name!r}")
    STRATEGIES[name] = strategy
    return strategy


def check_name(name: str) -> str:
    """``name`` if it is ``auto`` or a registered strategy; else :class:`StrategyError`."""
    if name != AUTO and name not in STRATEGIES:
        raise StrategyError(f"unknown execution strategy {name!r}; choose one of {[AUTO, *STRATEGIES]}")
    return name


def make_plan(name: str, net: TensorNetwork, batch: int, cached: bool = False) -> Plan:
    """Strategy ``name``'s plan for ``net`` at ``batch`` (``cached``: eval mode, weights cached)."""
    if check_name(name) == AUTO:
        raise StrategyError(f"a plan is made by a strategy; {AUTO!r} chooses one (decide, choose)")
    strategy = STRATEGIES[name]
    if not strategy.supports(net):
        raise StrategyError(
            f"strategy {name!r} does not fit this network ({strategy.description}); "
            f"{net.name or 'the network'!r} is not supported, use 'auto' or 'factorized'"
        )
    return strategy.plan(net, batch, cached)


def measured_only(name: str) -> bool:
    """Strategies that depend on the device (``fused``: a Triton kernel on CUDA) are chosen by
    measurement only (:func:`tnviz.nn.autotune.autotune`), never by the cost model."""
    return bool(STRATEGIES[name].measured_only)


def estimates(net: TensorNetwork, batch: int, cached: bool = False) -> dict[str, float]:
    """Modelled cost (FLOP-equivalents) of every supported strategy at ``batch``."""
    return {
        name: make_plan(name, net, batch, cached).estimate(cached)
        # measured_only first: the fused kernel's supports() imports triton (0.2 s), for nothing here
        for name, s in STRATEGIES.items() if not s.measured_only and s.supports(net)
    }


def _output_over_budget(net: TensorNetwork, batch: int, budget: int | None) -> None:
    """Every strategy holds the layer's output (``batch x out_features`` elements): refuse before
    planning when that alone exceeds ``budget`` (planning a 500-core chain takes minutes)."""
    if budget is not None and batch * net.out_features > budget:
        raise BudgetError(
            f"contractions are limited to {budget:,} elements per intermediate; the output of "
            f"{net.name or 'this network'!r} at batch {batch} alone has {batch * net.out_features:,}"
        )


def _pick(net: TensorNetwork, batch: int, cached: bool, budget: int | None, est: dict[str, float]) -> str:
    ranked = sorted(est.items(), key=lambda kv: kv[1])
    for name, _ in ranked:
        if budget is None or make_plan(name, net, batch, cached).largest <= budget:
            return name
    largest = min(make_plan(name, net, batch, cached).largest for name, _ in ranked)
    raise BudgetError(
        f"contractions are limited to {budget:,} elements per intermediate; every strategy for "
        f"{net.name or 'this network'!r} at batch {batch} needs at least {largest:,}"
    )


def choose(net: TensorNetwork, batch: int, cached: bool = False, budget: int | None = None) -> str:
    """The cheapest supported strategy whose largest intermediate fits ``budget`` elements."""
    _output_over_budget(net, batch, budget)
    return _pick(net, batch, cached, budget, estimates(net, batch, cached))


@dataclass(frozen=True)
class Decision:
    """What a default ``TNLinear(net)`` (strategy ``auto``) runs at one batch in one mode.

    ``strategy``: the cost model's choice; ``estimates``: the modelled costs it chose from (name
    -> FLOP-equivalents); ``measured``: the layer times candidates at its first call on that
    device instead (:mod:`tnviz.nn.autotune`), ``strategy`` being then only the model's pick;
    ``reason``: one sentence saying why."""

    strategy: str
    estimates: dict[str, float]
    measured: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "measured": self.measured, "reason": self.reason,
                "estimates": dict(sorted(self.estimates.items(), key=lambda kv: kv[1]))}


MODES = {"inference": True, "training": False}
"""The two modes a layer decides for: name -> ``cached`` (inference: eval mode, weights cached)."""


def _measured_because(net: TensorNetwork, cached: bool, device: Any) -> str | None:
    """Why a default layer times its candidates on ``device`` in this mode, or ``None``: only in
    inference, where a device kernel can run, or for large layers without a fast path."""
    if not cached:
        return None
    kernels = [n for n, s in STRATEGIES.items() if s.measured_only and s.available(device) and s.supports(net)]
    if kernels:
        return f"the device kernel {kernels[0]!r} can run on {device} and is timed against the sweep it replaces"
    elements = net.in_features * net.out_features
    if elements >= AUTOTUNE_MIN_ELEMENTS and not any(n in STRATEGIES and STRATEGIES[n].supports(net)
                                                     for n in FAST_PATHS):
        return (f"a layer of {elements:,} weight elements (at least {AUTOTUNE_MIN_ELEMENTS:,}) without a fast "
                f"path ({', '.join(FAST_PATHS)}), where the cost model is weak")
    return None


def decide(net: TensorNetwork, batch: int, *, cached: bool, device: Any = "cpu",
           budget: int | None = DEFAULT_BUDGET_ELEMENTS) -> Decision:
    """The strategy a default :class:`~tnviz.nn.TNLinear` runs at ``batch`` (``cached=True``:
    eval mode under no_grad; ``False``: training) on ``device`` (a name or a torch device), with
    the memory ``budget`` of its intermediates (elements; ``None``: no guard).  The layer itself
    asks this function; the CLI and the app show its answer.  Raises :class:`tnviz.BudgetError`
    where no strategy fits the budget (as the layer does).

    >>> from tnviz.builders import tensor_ring
    >>> d = decide(tensor_ring([32, 32, 32], [32, 32, 32], ranks=4), 64, cached=True)
    >>> d.measured, d.reason.startswith("timed at the first call")
    (True, True)
    """
    _output_over_budget(net, batch, budget)
    est = estimates(net, batch, cached)
    strategy = _pick(net, batch, cached, budget, est)
    mode = "in inference (weights cached)" if cached else "in training"
    because = _measured_because(net, cached, device)
    if because is not None:
        reason = f"timed at the first call on {device}: {because}; the cost model would pick {strategy!r}"
    else:
        cheapest = min(est, key=est.get)
        reason = f"{strategy!r} has the lowest modelled cost of {len(est)} strategies at batch {batch} {mode}"
        if cheapest != strategy:
            needs = make_plan(cheapest, net, batch, cached).largest
            reason = (f"{strategy!r} is the cheapest of {len(est)} strategies at batch {batch} {mode} whose "
                      f"intermediates fit the budget of {budget:,} elements ({cheapest!r} costs less but "
                      f"needs {needs:,})")
    return Decision(strategy, est, because is not None, reason)


def decisions(net: TensorNetwork, batch: int, *, device: Any = "cpu",
              budget: int | None = DEFAULT_BUDGET_ELEMENTS) -> dict[str, Decision | BudgetError]:
    """:func:`decide` in both :data:`MODES` (``"inference"``, ``"training"``): what a default
    layer runs at ``batch`` on ``device``.  A mode where no strategy fits the ``budget`` maps to
    its :class:`tnviz.BudgetError` instead of raising, so a face can show the other mode.  The
    CLI's ``tnviz cost``, the Costs page and the Designer show this, and nothing else, as the
    layer's strategy.

    >>> from tnviz.builders import mpo
    >>> {mode: d.strategy for mode, d in decisions(mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=4), 1024).items()}
    {'inference': 'chain', 'training': 'chain'}
    """
    out: dict[str, Decision | BudgetError] = {}
    for mode, cached in MODES.items():
        try:
            out[mode] = decide(net, batch, cached=cached, device=device, budget=budget)
        except BudgetError as exc:
            out[mode] = exc
    return out
