"""The ``modes`` strategy: Tucker and CP layers as one GEMM per factor (or Khatri-Rao product of
factors) and one for the core, each on a reshape of the running state.

>>> from tnviz.builders import tucker
>>> plan_modes(tucker([8, 8], [8, 8], ranks=4), 64).describe()    # input factors, core, output factors
'U4 | U3 | G | U1 | U2'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import opt_einsum as oe

from ..network import TensorNetwork
from .plan import (MEMORY_WEIGHT, STEP_OVERHEAD, PlanContext, Segment, StrategyError, TorchStrategy, segment_cost,
                   sweep, sweep_flops)


@dataclass(frozen=True)
class ModeStep:
    """One linear map on a group of neighbouring axes of the running state: the axes of size
    ``seg.k`` between ``seg.M`` (batch and the axes before) and ``seg.r`` (the axes after) become
    ``seg.n``.  Its ``(k, n)`` matrix is ``einsum(equation, *tensors[positions])`` reshaped."""

    seg: Segment
    positions: tuple[int, ...]
    equation: str
    label: str


@lru_cache(maxsize=256)
def _modes_layout(net: TensorNetwork):
    """``("cp", factors)`` or ``("tucker", core, factors)`` when the network has that form, else
    ``None``.  Factors map each external leg to ``(tensor position, its other index)``."""
    sizes = net.sizes
    external = set(net.inputs) | set(net.outputs)
    names = net.tensor_names
    if len(names) < 2:
        return None
    if net.hyperedges:
        if len(net.hyperedges) != 1:
            return None
        (h,) = net.hyperedges
        factors = {}
        for k, t in enumerate(net.tensors):
            ext = [i for i in t.indices if i in external]
            if len(t.indices) != 2 or len(ext) != 1 or h not in t.indices:
                return None
            factors[ext[0]] = (k, h)
        return ("cp", factors) if set(factors) == external and sizes[h] > 0 else None
    for c, core in enumerate(net.tensors):
        factors = {}
        for k, t in enumerate(net.tensors):
            if k == c:
                continue
            ext = [i for i in t.indices if i in external]
            internal = [i for i in t.indices if i not in external]
            if len(t.indices) != 2 or len(ext) != 1 or len(internal) != 1 or internal[0] not in core.indices:
                break
            factors[ext[0]] = (k, internal[0])
        else:
            on_core = [i for i in core.indices if i in external]
            if set(factors) | set(on_core) == external and len(factors) + len(on_core) == len(external):
                return ("tucker", c, factors)
    return None


def _mode_step(net: TensorNetwork, batch: int, axes: list[str], first: int, last: int, new: list[str],
                positions: tuple[int, ...], equation: str, label: str, merges: int) -> ModeStep:
    sizes = net.sizes
    prod = lambda legs: math.prod(sizes[i] for i in legs)  # noqa: E731
    M = batch * prod(axes[:first])
    k, n, r = prod(axes[first:last + 1]), prod(new), prod(axes[last + 1:])
    merge_flops = k * n * merges
    return ModeStep(Segment(0, merges, M, k, n, r, merge_flops, equation), positions, equation, label)


#: Per-GEMM overhead (FLOP-equivalents) of a batched mode product.  A factor matrix is small
#: (leg x rank) but its GEMMs are long (the trailing axes), so the chain's ``MIN_GEMM_FLOPS`` floor
#: overstates them; measured on the 4096x4096 Tucker layers of benchmarks/README.md.
MODE_GEMM_OVERHEAD = 2_000.0


def _mode_cost(s: Segment, cached: bool) -> float:
    if s.mode == "batched":
        cost = s.flops + s.M * MODE_GEMM_OVERHEAD + MEMORY_WEIGHT * s.moved + STEP_OVERHEAD
    else:
        cost = segment_cost(s, True)
    if not cached:
        cost += s.merge_flops + MEMORY_WEIGHT * s.k * s.n + STEP_OVERHEAD * (1 + s.last - s.first)
    return cost


@lru_cache(maxsize=256)
def plan_modes(net: TensorNetwork, batch: int, cached: bool = False) -> "ModesPlan":
    """Tucker: one GEMM per factor on its leg (the legs that shrink most first), one core GEMM,
    one GEMM per output factor; CP: the Khatri-Rao product of the input factors as one GEMM to the
    rank, and that of the output factors back.  Every step is a GEMM on a reshape of the state."""
    layout = _modes_layout(net)
    if layout is None:
        raise StrategyError(
            f"the 'modes' strategy needs a Tucker (core + one factor per leg) or CP network; "
            f"{net.name or 'this network'!r} is neither"
        )
    sym = net.symbols
    steps: list[ModeStep] = []
    if layout[0] == "cp":
        factors = layout[1]
        h = net.hyperedges[0]
        for legs, to_rank in ((net.inputs, True), (net.outputs, False)):
            pos = tuple(factors[i][0] for i in legs)
            terms = ",".join("".join(sym[i] for i in net.tensors[p].indices) for p in pos)
            legs_sym = "".join(sym[i] for i in legs)
            out = legs_sym + sym[h] if to_rank else sym[h] + legs_sym
            axes = list(net.inputs) if to_rank else [h]
            steps.append(_mode_step(net, batch, axes, 0, len(axes) - 1, [h] if to_rank else list(net.outputs),
                                    pos, f"{terms}->{out}", "KR(" + ",".join(net.tensor_names[p] for p in pos) + ")",
                                    len(pos) - 1))
        return ModesPlan(net, batch, tuple(steps), "cp")
    _, c, factors = layout
    sizes = net.sizes
    core = net.tensors[c]
    axes = list(net.inputs)
    todo = [i for i in net.inputs if i in factors]
    # shrink most first; among equal shrinks the last leg first, so that the step that reads the
    # input is one GEMM over the whole state (no trailing axes), as the output's last step is
    todo.sort(key=lambda i: (sizes[factors[i][1]] / max(sizes[i], 1), -axes.index(i)))
    for leg in todo:
        p, q = factors[leg]
        k = axes.index(leg)
        t = net.tensors[p]
        eq = "".join(sym[i] for i in t.indices) + "->" + sym[leg] + sym[q]
        steps.append(_mode_step(net, batch, axes, k, k, [q], (p,), eq, net.tensor_names[p], 0))
        axes[k] = q
    out_side = [factors[o][1] if o in factors else o for o in net.outputs]
    eq = "".join(sym[i] for i in core.indices) + "->" + "".join(sym[i] for i in axes + out_side)
    steps.append(_mode_step(net, batch, axes, 0, len(axes) - 1, out_side, (c,), eq, net.tensor_names[c], 0))
    axes = list(out_side)
    todo = [o for o in net.outputs if o in factors]
    todo.sort(key=lambda o: sizes[o] / max(sizes[factors[o][1]], 1))  # grow least first
    for leg in todo:
        p, q = factors[leg]
        k = axes.index(q)
        t = net.tensors[p]
        eq = "".join(sym[i] for i in t.indices) + "->" + sym[q] + sym[leg]
        steps.append(_mode_step(net, batch, axes, k, k, [leg], (p,), eq, net.tensor_names[p], 0))
        axes[k] = leg
    return ModesPlan(net, batch, tuple(steps), "tucker")


@dataclass(frozen=True)
class ModesPlan:
    """One GEMM per step on a reshape of the state (Tucker factors and core, or CP's two
    Khatri-Rao products)."""

    net: TensorNetwork
    batch: int
    steps: tuple[ModeStep, ...]
    kind: str  # "tucker" or "cp"

    def flops(self, step: bool = False) -> int:
        """The steps' GEMMs; with ``step`` a training step (:func:`tnviz.nn.plan.sweep_flops`)."""
        return sweep_flops([s.seg for s in self.steps], step)

    @property
    def largest(self) -> int:
        return max(max(s.seg.M * s.seg.n * s.seg.r, s.seg.M * s.seg.k * s.seg.r, s.seg.k * s.seg.n)
                   for s in self.steps)

    def estimate(self, cached: bool = False) -> float:
        return sum(_mode_cost(s.seg, cached) for s in self.steps)

    def describe(self) -> str:
        return " | ".join(s.label for s in self.steps)

    def __call__(self, x2d, ctx: PlanContext):
        tensors = ctx.ordered_tensors()
        state = x2d
        for j, step in enumerate(self.steps):
            state = sweep(state, step.seg, ctx, ("modes", j), lambda step=step: self._matrix(step, tensors),
                          last=step is self.steps[-1])
        return state.reshape(self.batch, self.net.out_features)

    def _matrix(self, step: ModeStep, tensors: list[Any]):
        arrays = [tensors[p] for p in step.positions]
        if len(arrays) == 1:
            import torch

            return torch.einsum(step.equation, arrays[0]).reshape(step.seg.k, step.seg.n)
        if self.kind == "cp":
            return _khatri_rao_matrix(step.equation, arrays).reshape(step.seg.k, step.seg.n)
        return oe.contract(step.equation, *arrays, backend="torch").reshape(step.seg.k, step.seg.n)


def _khatri_rao_matrix(equation: str, factors: list[Any]):
    """The Khatri-Rao product of CP factors (``"ar,rb,...->ab...r"`` or ``"->r ab..."``): each
    factor as ``(leg, rank)``, then neighbours merged pairwise, ``(d1 d2, R)`` and so on, rank
    last throughout.  opt_einsum built it rank first and then transposed the full matrix, and
    its backward made a full-size product per factor: forward and backward of the (4096, 256)
    product of four (8, 256) factors took 6.1-7.5 ms that way, 1.7 ms this way (one thread)."""
    terms, out = equation.split("->")
    terms = terms.split(",")
    (rank,) = set(terms[0]).intersection(*terms[1:])
    mats = [f if t[1] == rank else f.t() for t, f in zip(terms, factors)]
    R = mats[0].shape[1]
    while len(mats) > 1:
        merged = [(a[:, None, :] * b[None, :, :]).reshape(-1, R) for a, b in zip(mats[::2], mats[1::2])]
        mats = merged + mats[len(merged) * 2:]
    kr = mats[0]  # (legs in the order of the terms, R)
    return kr if out[-1] == rank else kr.t()


class Modes(TorchStrategy):
    name = "modes"
    description = "Tucker: a GEMM per factor and one core GEMM; CP: Khatri-Rao GEMMs to the rank and back"

    def supports(self, net: TensorNetwork) -> bool:
        return _modes_layout(net) is not None

    def plan(self, net: TensorNetwork, batch: int, cached: bool = False) -> ModesPlan:
        return plan_modes(net, batch, cached)


MODES = Modes()
