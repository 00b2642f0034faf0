"""The ``ring`` strategy: tensor rings swept like chains, cut at their closing bond.

The ring is cut at its closing bond, which the sweep carries along like the batch; otherwise as
``chain`` (segments by dynamic programming on the cost model, GEMMs on reshapes of the state).

>>> from tnviz.builders import tensor_ring
>>> plan_ring(tensor_ring([8, 8, 8, 8], [8, 8, 8, 8], ranks=4), 64).describe()
'cut at b4: AB | CD'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import opt_einsum as oe

from ..network import TensorNetwork
from .chain import ChainCore, cores_along
from .plan import (MEMORY_WEIGHT, PlanContext, Segment, StrategyError, TorchStrategy, cheapest_segments,
                   contraction_flops, segment_cost, sweep, sweep_flops)


@lru_cache(maxsize=256)
def ring_cores(net: TensorNetwork) -> tuple[ChainCore, ...] | None:
    """The cores of ``net`` in sweep order when it is a ring whose legs appear in row-major order
    around it starting after one bond (every tensor ring built by :func:`tnviz.tensor_ring`); the
    first core's ``left`` and the last core's ``right`` are that closing bond.  Else ``None``."""
    if net.hyperedges or len(net.tensors) < 2:
        return None
    bonds = set(net.bonds)
    bonds_of = {t.name: [i for i in t.indices if i in bonds] for t in net.tensors}
    if any(len(v) != 2 for v in bonds_of.values()):
        return None
    for start in net.tensor_names:
        for closing in bonds_of[start]:
            order, lefts, left = [start], [closing], closing
            while True:
                right = next(b for b in bonds_of[order[-1]] if b != left)
                nxt = next(t for t in net.tensors_on(right) if t != order[-1])
                if nxt == start:
                    break
                if nxt in order:
                    return None
                order.append(nxt)
                lefts.append(right)
                left = right
            if len(order) != len(net.tensors):
                return None  # more than one ring
            if right != closing:
                continue
            cores = cores_along(net, order, lefts, [*lefts[1:], closing])
            if cores is not None:
                return cores
    return None


def ring_segment(net: TensorNetwork, cores: tuple[ChainCore, ...], first: int, last: int, batch: int) -> Segment:
    """Cores ``first..last`` of a ring as one step of the sweep.  The ring is cut at its closing
    bond ``a`` (size ``R``): the first segment emits ``a`` as a new axis of the state after its
    outputs (``(inputs) -> (outputs, a, right)``), the middle ones carry it inside ``M`` like the
    batch, and the last one takes it back as its leading input (``(a, left, inputs) -> (outputs)``).
    With two segments ``a`` already sits next to the last one's inputs; middle segments that emit
    outputs put them between, and one transpose of the state moves ``a`` past them."""
    sizes, sym = net.sizes, net.symbols
    prod = lambda legs: math.prod(sizes[i] for i in legs)  # noqa: E731
    seg = cores[first:last + 1]
    a = cores[0].left
    R = sizes[a]
    left, right = seg[0].left, seg[-1].right
    ins = sum((c.ins for c in seg), ())
    outs = sum((c.outs for c in seg), ())
    done = prod(sum((c.outs for c in cores[:first]), ()))
    r = prod(sum((c.ins for c in cores[last + 1:]), ()))
    if first == 0:
        M, k, n = batch, prod(ins), prod(outs) * R * sizes[right]
        out = [*ins, *outs, a, right]
    elif last == len(cores) - 1:
        M, k, n = batch * done, R * sizes[left] * prod(ins), prod(outs)
        out = [a, left, *ins, *outs]
    else:
        M, k, n = batch * R * done, sizes[left] * prod(ins), prod(outs) * sizes[right]
        out = [left, *ins, *outs, right]
    terms = ["".join(sym[i] for i in ([c.left] + list(c.ins) + list(c.outs) + [c.right])) for c in seg]
    equation = ",".join(terms) + "->" + "".join(sym[i] for i in out)
    merge = 0
    if len(seg) > 1:
        shapes = [tuple(sizes[i] for i in ([c.left] + list(c.ins) + list(c.outs) + [c.right])) for c in seg]
        merge = contraction_flops(equation, shapes)
    return Segment(first, last, M, k, n, r, merge, equation)


def _middle_outputs(net: TensorNetwork, cores: tuple[ChainCore, ...], first_end: int, last_first: int) -> int:
    """Outputs emitted by the cores between the first segment (ending at ``first_end``) and the
    last (starting at ``last_first``): the axes the ring bond is moved past before the last GEMM."""
    return math.prod(net.sizes[o] for c in cores[first_end + 1:last_first] for o in c.outs)


def _ring_cost(s: Segment, cached: bool, transposes: bool) -> float:
    cost = segment_cost(s, cached)
    if transposes:
        cost += 2 * MEMORY_WEIGHT * s.M * s.k  # the transpose moving the ring axis past the middle's outputs
    if not cached and s.first == s.last:
        cost += MEMORY_WEIGHT * s.k * s.n  # a single core is still permuted into its matrix
    return cost


@dataclass(frozen=True)
class RingPlan:
    """The ring cut at its closing bond into ``segments``, swept left to right."""

    net: TensorNetwork
    batch: int
    cores: tuple[ChainCore, ...]
    segments: tuple[Segment, ...]
    cached_segments: bool

    def flops(self, step: bool = False) -> int:
        """The sweep's GEMMs; with ``step`` a training step (:func:`tnviz.nn.plan.sweep_flops`)."""
        return sweep_flops(self.segments, step)

    @property
    def largest(self) -> int:
        return max(max(s.M * s.n * s.r, s.M * s.k * s.r, s.k * s.n) for s in self.segments)

    @property
    def middle_outputs(self) -> int:
        """Outputs of the middle segments, which the ring axis is moved past before the last."""
        return _middle_outputs(self.net, self.cores, self.segments[0].last, self.segments[-1].first)

    def estimate(self, cached: bool = False) -> float:
        last = self.segments[-1]
        return sum(_ring_cost(s, cached, s is last and self.middle_outputs > 1) for s in self.segments)

    def describe(self) -> str:
        names = [c.name for c in self.cores]
        cut = f"cut at {self.cores[0].left}: "
        return cut + " | ".join("".join(names[s.first:s.last + 1]) for s in self.segments)

    def __call__(self, x2d, ctx: PlanContext):
        tensors = ctx.ordered_tensors()
        R = self.net.sizes[self.cores[0].left]
        state = x2d
        middle = self.middle_outputs
        for s in self.segments:
            if s is self.segments[-1] and middle > 1:
                # (batch * first outputs, a, middle outputs, k/R) -> (..., middle outputs, a, k/R)
                state = state.reshape(s.M // middle, R, middle, s.k // R).transpose(1, 2)
            state = sweep(state, s, ctx, ("ring", s.first, s.last), lambda s=s: self._merge(s, tensors),
                          last=s is self.segments[-1])
        return state.reshape(self.batch, self.net.out_features)

    def _merge(self, s: Segment, tensors: list[Any]):
        arrays = [tensors[c.position] for c in self.cores[s.first:s.last + 1]]
        # the terms of s.equation list each core's indices as (left, ins, outs, right)
        arrays = [t.permute(c.perm) for t, c in zip(arrays, self.cores[s.first:s.last + 1])]
        if len(arrays) == 1:
            import torch

            return torch.einsum(s.equation, arrays[0]).reshape(s.k, s.n)
        return oe.contract(s.equation, *arrays, backend="torch").reshape(s.k, s.n)


@lru_cache(maxsize=512)
def plan_ring(net: TensorNetwork, batch: int, cached: bool = False) -> RingPlan:
    """The cheapest segmentation of the ring (at least two segments; one would be the rebuilt
    weight) for ``batch``: for each end of the first segment, the rest by dynamic programming over
    cut points like :func:`plan_chain` (the last segment's transpose depends on that end)."""
    cores = ring_cores(net)
    if cores is None:
        raise StrategyError(
            f"the 'ring' strategy needs a tensor ring with its legs in row-major order around it; "
            f"{net.name or 'this network'!r} is not one"
        )
    n = len(cores)
    plans = []
    for end in range(n - 1):  # the first segment is cores 0..end; the rest by dynamic programming
        first = ring_segment(net, cores, 0, end, batch)

        def option(a: int, b: int, end: int = end) -> tuple[float, Segment]:
            seg = ring_segment(net, cores, a + end + 1, b + end + 1, batch)
            transposes = seg.last == n - 1 and _middle_outputs(net, cores, end, seg.first) > 1
            return _ring_cost(seg, cached, transposes), seg

        cost, rest = cheapest_segments(n - end - 1, option)
        plans.append((_ring_cost(first, cached, False) + cost, (first, *rest)))
    return RingPlan(net, batch, cores, min(plans, key=lambda p: p[0])[1], cached)


class Ring(TorchStrategy):
    name = "ring"
    description = "tensor ring sweep: cut at the closing bond, carried along the batch; GEMMs on reshapes"

    def supports(self, net: TensorNetwork) -> bool:
        return ring_cores(net) is not None

    def plan(self, net: TensorNetwork, batch: int, cached: bool = False) -> RingPlan:
        return plan_ring(net, batch, cached)


RING = Ring()
