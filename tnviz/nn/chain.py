"""The ``chain`` strategy's sweep: MPO/TT chains swept as (batched) GEMMs on reshapes of the state.

The chain is cut into segments of neighbouring cores (chosen by dynamic programming on the cost
model for the batch at hand), each segment merged into one matrix, and ``x`` swept through the
segments as a sequence of GEMMs whose operands are reshapes of the running state: no permute
copies at all.  One segment is the rebuilt weight, one core per segment the classical TT sweep;
anything between is allowed.  The strategy object (``CHAIN``) lives in
:mod:`tnviz.nn.chain_strategy`, which also has the chain's other plans (the input half first).

>>> from tnviz.builders import mpo
>>> plan_chain(mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=8), 1024).describe()   # merged where cheaper
'AB | CD'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..network import TensorNetwork
from .plan import (PlanContext, Segment, StrategyError, cheapest_segments, contraction_flops,
                   segment_cost, sweep, sweep_flops)


# ---------------------------------------------------------------------- structure
@dataclass(frozen=True)
class ChainCore:
    """One core of an open chain, with its axes' roles: ``(left bond, inputs, outputs, right bond)``."""

    name: str
    position: int  # index in net.tensors
    left: str | None
    ins: tuple[str, ...]
    outs: tuple[str, ...]
    right: str | None
    perm: tuple[int, ...]  # axes of the stored tensor in the order (left, ins, outs, right)


@lru_cache(maxsize=256)
def chain_cores(net: TensorNetwork) -> tuple[ChainCore, ...] | None:
    """The cores of ``net`` in sweep order when it is an open chain whose input and output legs
    appear in row-major order along it (every MPO/TT built by :func:`tnviz.mpo`); else ``None``."""
    if net.hyperedges:
        return None
    names = net.tensor_names
    neighbours: dict[str, list[tuple[str, str]]] = {n: [] for n in names}
    for bond in net.bonds:
        a, b = net.tensors_on(bond)
        neighbours[a].append((b, bond))
        neighbours[b].append((a, bond))
    if any(len(v) > 2 for v in neighbours.values()):
        return None
    if any(len({m for m, _ in v}) != len(v) for v in neighbours.values()):
        return None  # two bonds between the same pair: not a simple chain
    ends = [n for n in names if len(neighbours[n]) <= 1]
    if len(names) == 1:
        ends = [names[0]]
    elif len(ends) != 2:
        return None  # a ring or disconnected
    for start in ends:
        order, bonds_between = [start], []
        prev = None
        while True:
            nxt = [(m, b) for m, b in neighbours[order[-1]] if m != prev]
            if not nxt:
                break
            prev = order[-1]
            order.append(nxt[0][0])
            bonds_between.append(nxt[0][1])
        if len(order) != len(names):
            return None  # disconnected
        cores = cores_along(net, order, [None, *bonds_between], [*bonds_between, None])
        if cores is not None:
            return cores
    return None


def cores_along(net: TensorNetwork, order: list[str], lefts: list[str | None],
                 rights: list[str | None]) -> tuple[ChainCore, ...] | None:
    """The cores in ``order`` with their bonds to the previous and next core, when every index of
    each is one of (left, its inputs, its outputs, right) and the legs come in row-major order."""
    names = net.tensor_names
    cores = []
    for name, left, right in zip(order, lefts, rights):
        t = net.tensor(name)
        ins = tuple(i for i in net.inputs if i in t.indices)
        outs = tuple(o for o in net.outputs if o in t.indices)
        roles = ([left] if left else []) + list(ins) + list(outs) + ([right] if right else [])
        if len(roles) != len(t.indices) or set(roles) != set(t.indices):
            return None
        cores.append(ChainCore(name, names.index(name), left, ins, outs, right,
                               tuple(t.indices.index(i) for i in roles)))
    if sum((c.ins for c in cores), ()) == net.inputs and sum((c.outs for c in cores), ()) == net.outputs:
        return tuple(cores)
    return None


# ---------------------------------------------------------------------- plan
MAX_MERGED_CORES = 8
"""The longest run of neighbouring cores merged into one step.  The plan is exact for chains of up
to this many cores; on longer chains it bounds the search (every run of up to 8 cores at every cut)
so that planning a 500-core chain takes seconds, not hours (100 cores took 48 s unbounded)."""


def chain_segment(net: TensorNetwork, cores: tuple[ChainCore, ...], first: int, last: int, batch: int) -> Segment:
    """Cores ``first..last`` of the chain as one step of the sweep at ``batch``."""
    sizes = net.sizes
    prod = lambda legs: math.prod(sizes[i] for i in legs)  # noqa: E731
    seg = cores[first:last + 1]
    left, right = seg[0].left, seg[-1].right
    ins = sum((c.ins for c in seg), ())
    outs = sum((c.outs for c in seg), ())
    M = batch * prod(sum((c.outs for c in cores[:first]), ()))
    r = prod(sum((c.ins for c in cores[last + 1:]), ()))
    k = (sizes[left] if left else 1) * prod(ins)
    n = prod(outs) * (sizes[right] if right else 1)
    sym = net.symbols
    terms = []
    for c in seg:
        roles = ([c.left] if c.left else []) + list(c.ins) + list(c.outs) + ([c.right] if c.right else [])
        terms.append("".join(sym[i] for i in roles))
    out = "".join(sym[i] for i in ([left] if left else []) + list(ins) + list(outs) + ([right] if right else []))
    equation = ",".join(terms) + "->" + out
    merge = 0
    if len(seg) > 1:
        shapes = [tuple(net.sizes[i] for i in ([c.left] if c.left else []) + list(c.ins) + list(c.outs)
                        + ([c.right] if c.right else [])) for c in seg]
        merge = contraction_flops(equation, shapes)
    return Segment(first, last, M, k, n, r, merge, equation)


@dataclass(frozen=True)
class ChainPlan:
    """The chain cut into ``segments``, swept left to right."""

    net: TensorNetwork
    batch: int
    cores: tuple[ChainCore, ...]
    segments: tuple[Segment, ...]
    cached_segments: bool  # planned assuming merged segments come from the cache

    def flops(self, step: bool = False) -> int:
        """The sweep's GEMMs; with ``step`` a training step (:func:`tnviz.nn.plan.sweep_flops`)."""
        return sweep_flops(self.segments, step)

    @property
    def largest(self) -> int:
        return max(max(s.M * s.n * s.r, s.k * s.n) for s in self.segments)

    def estimate(self, cached: bool = False) -> float:
        return sum(segment_cost(s, cached) for s in self.segments)

    def describe(self) -> str:
        names = [c.name for c in self.cores]
        return " | ".join("".join(names[s.first:s.last + 1]) for s in self.segments)

    def __call__(self, x2d, ctx: PlanContext):
        tensors = ctx.ordered_tensors()
        state = x2d
        for s in self.segments:
            state = sweep(state, s, ctx, ("chain", s.first, s.last), lambda s=s: self.merge(s, tensors),
                          last=s is self.segments[-1])
        return state.reshape(self.batch, self.net.out_features)

    def merge(self, s: Segment, tensors: list[Any]) -> Any:
        """Segment ``s``'s cores (of ``tensors``, in network order) merged into its ``(k, n)`` matrix."""
        seg = self.cores[s.first:s.last + 1]
        arrays = [tensors[c.position].permute(c.perm) for c in seg]
        if len(arrays) == 1:
            return arrays[0].reshape(s.k, s.n)
        return merge_along(arrays, merge_shapes(self.net, seg))


def merge_shapes(net: TensorNetwork, seg: tuple[ChainCore, ...]) -> tuple[tuple[int, int, int, int], ...]:
    """Each core of a segment as ``(left bond, inputs, outputs, right bond)`` sizes."""
    sizes = net.sizes
    prod = lambda legs: math.prod(sizes[i] for i in legs)  # noqa: E731
    return tuple((sizes[c.left] if c.left else 1, prod(c.ins), prod(c.outs), sizes[c.right] if c.right else 1)
                 for c in seg)


def merge_along(arrays: list[Any], shapes: tuple[tuple[int, int, int, int], ...]) -> Any:
    """Neighbouring cores (each viewed as ``(left, ins, outs, right)``) merged into the segment's
    ``(left * ins, outs * right)`` matrix: GEMMs over the bonds left to right on reshapes, then one
    permute that gathers the inputs before the outputs.  opt_einsum's tensordot steps permute and
    copy every operand and result instead: 2x slower under autograd on MiniLM's shapes
    (benchmarks/bench_minilm_shapes.py)."""
    acc = arrays[0].reshape(-1, shapes[0][3])
    for a, (l, i, o, r) in zip(arrays[1:], shapes[1:]):
        acc = (acc @ a.reshape(l, i * o * r)).reshape(-1, r)
    left, right = shapes[0][0], shapes[-1][3]
    ins = [sh[1] for sh in shapes]
    outs = [sh[2] for sh in shapes]
    n = len(shapes)
    acc = acc.reshape(left, *[d for pair in zip(ins, outs) for d in pair], right)
    order = [0, *[1 + 2 * c for c in range(n)], *[2 + 2 * c for c in range(n)], 2 * n + 1]
    return acc.permute(order).reshape(left * math.prod(ins), math.prod(outs) * right)


def open_chain(net: TensorNetwork, what: str, least: int = 1) -> tuple[ChainCore, ...]:
    """:func:`chain_cores` of ``net``, or :class:`StrategyError` saying that ``what`` needs an open
    chain of at least ``least`` cores."""
    cores = chain_cores(net)
    if cores is None or len(cores) < least:
        size = f" of at least {least} cores" if least > 1 else ""
        raise StrategyError(
            f"{what} needs an open chain (MPO/TT){size} with its legs in row-major order; "
            f"{net.name or 'this network'!r} is not one"
        )
    return cores


def two_halves(net: TensorNetwork, cores: tuple[ChainCore, ...], cut: int, batch: int,
               cached: bool) -> tuple[ChainPlan, tuple[int, int, int, int, int]]:
    """The chain cut after core ``cut`` into two merged segments, and their sizes ``(I, J, O, P, K)``:
    the left half's inputs, the right half's inputs, the left half's outputs, the right half's
    outputs, the bond between them (``W[o, p, i, j] = sum_k L[o, i, k] R[k, p, j]``)."""
    left = chain_segment(net, cores, 0, cut, batch)
    right = chain_segment(net, cores, cut + 1, len(cores) - 1, batch)
    K = net.sizes[cores[cut].right]
    return ChainPlan(net, batch, cores, (left, right), cached), (left.k, left.r, left.n // K, right.n, K)


@lru_cache(maxsize=512)
def plan_chain(net: TensorNetwork, batch: int, cached: bool = False) -> ChainPlan:
    """The cheapest segmentation of the chain for ``batch`` (dynamic programming over cut points)."""
    cores = open_chain(net, "the 'chain' strategy")

    def option(first: int, last: int) -> tuple[float, Segment] | None:
        if last - first >= MAX_MERGED_CORES:
            return None
        seg = chain_segment(net, cores, first, last, batch)
        return segment_cost(seg, cached), seg

    return ChainPlan(net, batch, cores, cheapest_segments(len(cores), option)[1], cached)
