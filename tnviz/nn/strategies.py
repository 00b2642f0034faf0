"""Execution strategies of a TN layer: how ``y = x W^T`` is computed from the tensors.

Every strategy is planned once per (network, batch) and the plan is reused.  A plan is a small
object with ``estimate`` (modelled cost, FLOP-equivalents), ``largest`` (elements of its largest
intermediate, for the memory guard) and ``__call__(x2d, ctx) -> y2d``; ``ctx`` is the layer
(:class:`~tnviz.nn.linear.TNLinear`), which hands out its tensors in network order and caches
weight-only results (the rebuilt matrix, merged cores) while the weights are unchanged.

Registry :data:`STRATEGIES` (name -> strategy), used by the layer, the benchmarks, the tests:

* ``factorized``: ``x`` contracted through the tensors along the planned opt_einsum path (the
  same path the cost model reports); works for every network.
* ``rebuilt``: the dense weight rebuilt from the tensors (cached in eval mode), one matmul.
* ``chain``: MPO/TT chains only.  The chain is cut into segments of neighbouring cores (chosen by
  dynamic programming on the cost model for the batch at hand), each segment merged into one
  matrix, and ``x`` swept through the segments as a sequence of (batched) GEMMs whose operands are
  reshapes of the running state: no permute copies at all.  One segment is the rebuilt weight,
  one core per segment the classical TT sweep; anything between is allowed.

* ``ring``: tensor rings.  The ring is cut at its closing bond, which the sweep carries along like
  the batch; otherwise as ``chain`` (segments by dynamic programming, GEMMs on reshapes).
* ``modes``: Tucker and CP (one GEMM per factor / Khatri-Rao product, one for the core).
* ``fused`` (:mod:`tnviz.nn.fused`): MPO chains as one Triton kernel on CUDA, when triton is
  installed; chosen by measurement only (it runs the chain plan where there is no kernel).

``auto`` (in the layer) picks the supported strategy with the lowest :func:`estimate`.

>>> from tnviz.builders import mpo
>>> net = mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=8)
>>> sorted(name for name, s in STRATEGIES.items() if s.supports(net))
['chain', 'factorized', 'rebuilt']
>>> choose(net, batch=64)
'chain'
>>> plan_chain(net, 1024).describe()       # cores merged where that is cheaper at this batch
'AB | CD'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Protocol

import opt_einsum as oe

from ..cost import forward_path, rebuild_path
from ..errors import BudgetError, TnvizError
from ..network import TensorNetwork
from .workspace import halves_product, halves_product_ok, pooled_sweep, worth_pooling

#: FLOP-equivalents charged per element read or written by a step.  Small contractions are
#: bound by memory traffic, not arithmetic; this weight makes the cost model say so.  Measured
#: benchmarks (benchmarks/bench_forward.py) are the judge; issue 7 may replace this by timings.
MEMORY_WEIGHT = 8.0

#: opt_einsum executes each pairwise step as tensordot, which copies (permutes) its operands and
#: its result: about this many passes over every intermediate.
FACTORIZED_PASSES = 3.0

#: Measured: per modelled FLOP-equivalent, opt_einsum's pairwise steps (tensordot on permuted
#: copies, often thin GEMMs) ran 2-4x slower than the reshape-GEMM sweeps (``chain``, ``ring``,
#: ``modes``) and the rebuilt GEMM on the 4096x4096 MPO and tensor-ring grids (benchmarks/README.md).
FACTORIZED_SLOWDOWN = 3.0

#: Fixed overhead per executed step (kernel launch / Python dispatch), in FLOP-equivalents.
STEP_OVERHEAD = 20_000.0

#: Inside a batched matmul each GEMM is charged at least this many FLOPs: tens of thousands of
#: tiny GEMMs (a core applied to a state with few trailing inputs) run far below peak.
MIN_GEMM_FLOPS = 2 * 64**3

#: A batched step whose GEMMs are thinner than this (trailing inputs ``r``) is run instead as one
#: large GEMM on a transposed copy of the state (two state-sized copies, one efficient GEMM).
THIN_GEMM = 8


class StrategyError(TnvizError, ValueError):
    """An execution strategy was asked for that does not exist or does not fit the network."""


class Context(Protocol):
    """What a plan needs from the layer."""

    def ordered_tensors(self) -> list[Any]: ...

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any: ...


# ---------------------------------------------------------------------- factorized
@dataclass(frozen=True)
class FactorizedPlan:
    """Contract ``x`` through the tensors along one opt_einsum path."""

    net: TensorNetwork
    batch: int
    path: tuple[tuple[int, ...], ...]
    flops: int
    largest: int
    moved: int  # elements of all operands and intermediates (memory traffic)
    steps: int

    def estimate(self, cached: bool = False) -> float:
        work = self.flops + FACTORIZED_PASSES * MEMORY_WEIGHT * self.moved
        return FACTORIZED_SLOWDOWN * work + STEP_OVERHEAD * self.steps

    @property
    def expression(self):
        return _layer_expression(self.net, self.batch, self.path)

    def __call__(self, x2d, ctx: Context):
        xs = x2d.reshape((self.batch, *self.net.in_dims))
        y = self.expression(xs, *ctx.ordered_tensors(), backend="torch")
        return y.reshape(self.batch, self.net.out_features)


@lru_cache(maxsize=256)
def _layer_expression(net: TensorNetwork, batch: int, path: tuple[tuple[int, ...], ...]):
    shapes = [(batch, *net.in_dims), *net.shapes]
    return oe.contract_expression(net.layer_equation(), *shapes, optimize=[tuple(p) for p in path])


class Factorized:
    name = "factorized"
    description = "x contracted through the tensors along the planned opt_einsum path"

    def supports(self, net: TensorNetwork) -> bool:
        return True

    def plan(self, net: TensorNetwork, batch: int) -> FactorizedPlan:
        pc = forward_path(net, batch, "auto")
        moved = batch * (net.in_features + net.out_features) + sum(s.size for s in pc.steps)
        return FactorizedPlan(net, batch, pc.path, pc.flops, pc.largest_intermediate, moved, len(pc.steps))


# ---------------------------------------------------------------------- rebuilt
@lru_cache(maxsize=256)
def rebuild_expression(net: TensorNetwork):
    """The planned contraction of the tensors alone into ``W[outputs..., inputs...]``."""
    pc = rebuild_path(net, "auto")
    return oe.contract_expression(net.equation(), *net.shapes, optimize=[tuple(p) for p in pc.path])


def dense_weight(net: TensorNetwork, tensors: list[Any]):
    """The ``(out_features, in_features)`` matrix from torch tensors (autograd-aware)."""
    if len(net.tensors) == 1 and net.tensors[0].indices == (*net.outputs, *net.inputs):
        w = tensors[0]
    elif (halves := rebuild_halves(net)) is not None:
        return halves(tensors)
    else:
        w = rebuild_expression(net)(*tensors, backend="torch")
    return w.reshape(net.out_features, net.in_features)


@dataclass(frozen=True)
class Halves:
    """An MPO or tensor ring rebuilt as two merged halves and GEMMs over the bonds ``K`` between
    them, ``W[o, p, i, j] = sum_k L[o, i, k] R[k, p, j]``.  On CPU one batched GEMM per ``o``
    writes ``W`` in its layout (:func:`tnviz.nn.workspace.halves_product`: no permuted copy in
    forward or backward); elsewhere ``L[O, I, K] @ R[K, P, J] -> (O, I, P, J)`` and one permute
    with contiguous inner blocks of ``J`` to ``(O, P, I, J)``, or, where ``K`` is small, one GEMM
    per ``(o, p)`` writing ``W`` in place.  opt_einsum's path ends in one tensordot whose result
    is permuted over all ``2n`` leg axes, several times slower at 4096x4096 (benchmarks/README.md)."""

    left: str  # einsum merging the left cores into (outputs, inputs, bonds to the right half)
    right: str  # ... the right cores into (the same bonds, outputs, inputs)
    positions: tuple[tuple[int, ...], tuple[int, ...]]
    O: int
    I: int
    K: int
    P: int
    J: int
    flops: int

    def __call__(self, tensors: list[Any]):
        import torch

        halves = []
        for eq, pos in zip((self.left, self.right), self.positions):
            arrays = [tensors[p] for p in pos]
            if len(arrays) == 1:
                halves.append(torch.einsum(eq, arrays[0]))
            else:
                halves.append(oe.contract(eq, *arrays, backend="torch"))
        O, I, K, P, J = self.O, self.I, self.K, self.P, self.J
        if halves_product_ok(halves[0], O):  # CPU: W written in its layout, no permuted copies
            return halves_product(halves[0], halves[1], O, I, K, P, J)
        if K * (I + J) < I * J:
            # W[o, p, i, j] = sum_k L[o, i, k] R[k, p, j] as one GEMM per (o, p), written straight
            # into W's layout: the broadcast copies of the halves (K (I + J) per pair) are smaller
            # than W's permuted copy (I J per pair); 1.6x faster at bond 16 on 4096x4096
            L = halves[0].reshape(O, 1, I, K)
            R = halves[1].reshape(K, P, J).transpose(0, 1).unsqueeze(0)
            return torch.matmul(L, R).reshape(O * P, I * J)
        w = (halves[0].reshape(O * I, K) @ halves[1].reshape(K, P * J)).reshape(O, I, P, J)
        return w.permute(0, 2, 1, 3).reshape(O * P, I * J)


@lru_cache(maxsize=256)
def rebuild_halves(net: TensorNetwork) -> Halves | None:
    """The two-halves rebuild of an MPO/TT chain or a tensor ring (cut where merges, GEMM and the
    halves' memory cost least), or ``None`` for other networks and single cores."""
    cores = chain_cores(net) or ring_cores(net)
    if cores is None or len(cores) < 2:
        return None
    sizes, sym = net.sizes, net.symbols
    closing = cores[0].left  # a ring's closing bond (None for a chain)
    prod = lambda legs: math.prod(sizes[i] for i in legs)  # noqa: E731

    def links(cut: int) -> list[str]:
        return ([closing] if closing else []) + [cores[cut].right]

    def merge(part, out) -> str:
        terms = ["".join(sym[i] for i in net.tensors[c.position].indices) for c in part]
        return ",".join(terms) + "->" + "".join(sym[i] for i in out)

    options = []
    for cut in range(len(cores) - 1):
        left, right = cores[:cut + 1], cores[cut + 1:]
        K = links(cut)
        ins_l, outs_l = sum((c.ins for c in left), ()), sum((c.outs for c in left), ())
        ins_r, outs_r = sum((c.ins for c in right), ()), sum((c.outs for c in right), ())
        O, I, P, J = prod(outs_l), prod(ins_l), prod(outs_r), prod(ins_r)
        eqs = (merge(left, [*outs_l, *ins_l, *K]), merge(right, [*K, *outs_r, *ins_r]))
        flops = 2 * O * I * P * J * prod(K)
        for part, eq in zip((left, right), eqs):
            if len(part) > 1:
                shapes = [net.shapes[c.position] for c in part]
                flops += int(oe.contract_path(eq, *shapes, shapes=True, optimize="auto")[1].opt_cost)
        moved = prod(K) * (O * I + P * J)  # the merged halves, written and read
        options.append((flops + MEMORY_WEIGHT * moved, Halves(*eqs, (tuple(c.position for c in left),
                        tuple(c.position for c in right)), O, I, prod(K), P, J, flops)))
    return min(options, key=lambda o: o[0])[1]


@dataclass(frozen=True)
class RebuiltPlan:
    net: TensorNetwork
    batch: int
    reconstruct_flops: int
    largest: int

    def estimate(self, cached: bool = False) -> float:
        io = self.net.in_features * self.net.out_features
        gemm = 2 * self.batch * io + MEMORY_WEIGHT * (io + self.batch * (self.net.in_features + self.net.out_features))
        if cached:
            return gemm + STEP_OVERHEAD
        if rebuild_halves(self.net) is not None:  # two merges, one GEMM, one blocked permute
            rebuild = self.reconstruct_flops + 3 * MEMORY_WEIGHT * io
        else:  # opt_einsum's pairwise steps, like ``factorized``
            rebuild = FACTORIZED_SLOWDOWN * (self.reconstruct_flops + MEMORY_WEIGHT * io)
        return gemm + rebuild + STEP_OVERHEAD * len(self.net.tensors)

    def __call__(self, x2d, ctx: Context):
        import torch.nn.functional as F

        w = ctx.cached(("rebuilt",), lambda: dense_weight(self.net, ctx.ordered_tensors()))
        return F.linear(x2d, w)


class Rebuilt:
    name = "rebuilt"
    description = "rebuild the dense weight (cached while unchanged in eval mode), one matmul"

    def supports(self, net: TensorNetwork) -> bool:
        return True

    def plan(self, net: TensorNetwork, batch: int) -> RebuiltPlan:
        halves = rebuild_halves(net)
        if halves is not None:  # the halves, their product and its permuted copy
            h, io = halves, net.in_features * net.out_features
            return RebuiltPlan(net, batch, halves.flops, max(2 * io, h.O * h.I * h.K, h.K * h.P * h.J))
        pc = rebuild_path(net, "auto")
        largest = max(pc.largest_intermediate, net.in_features * net.out_features)
        return RebuiltPlan(net, batch, pc.flops, largest)


# ---------------------------------------------------------------------- chain (MPO sweep)
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
        cores = _cores_along(net, order, [None, *bonds_between], [*bonds_between, None])
        if cores is not None:
            return cores
    return None


def _cores_along(net: TensorNetwork, order: list[str], lefts: list[str | None],
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


@dataclass(frozen=True)
class Segment:
    """Cores ``first..last`` (sweep positions) merged into one ``(k, n)`` matrix."""

    first: int
    last: int
    M: int  # batch * outputs already produced
    k: int  # left bond * inputs of the segment
    n: int  # outputs of the segment * right bond
    r: int  # inputs still to come
    merge_flops: int
    equation: str  # einsum merging the segment's (permuted) cores into (left, ins, outs, right)

    @property
    def flops(self) -> int:
        return 2 * self.M * self.k * self.n * self.r

    @property
    def moved(self) -> int:
        return self.M * self.r * (self.k + self.n) + self.k * self.n

    @property
    def mode(self) -> str:
        """How the step runs: one GEMM on the state (``gemm``: no inputs left; ``left``: batch of
        one), ``batched`` (M GEMMs ``mat^T @ S[m]``) or ``transposed`` (one GEMM on a transposed
        copy, for thin GEMMs)."""
        if self.r == 1:
            return "gemm"
        if self.M == 1:
            return "left"
        return "transposed" if self.r <= THIN_GEMM else "batched"


def _sweep(state, s: Segment, ctx: Context, key: Any, build: Callable[[], Any], last: bool = False):
    """One step of a sweep: the axes of size ``s.k`` of the state ``(s.M, s.k, s.r)`` become
    ``s.n`` through the ``(k, n)`` matrix ``build()`` (cached under ``key`` in eval mode).
    Large CPU states go through the shared workspace (:mod:`tnviz.nn.workspace`: reused
    buffers, no page faults); ``last`` marks the step whose result is the layer's output, to
    which that path also adds the layer's bias (``ctx.bias``, then ``ctx.bias_added``)."""
    import torch

    mode = s.mode
    ws = getattr(ctx, "workspace", None)
    if ws is not None and worth_pooling(state, s.M * s.n * s.r):
        if mode in ("gemm", "transposed"):
            w = ctx.cached(key, build)
        else:
            w = ctx.cached((*key, "t"), lambda: build().t().contiguous())
        if w.dtype == state.dtype:
            bias = getattr(ctx, "bias", None) if last else None
            if bias is not None and bias.dtype == state.dtype:
                ctx.bias_added = True
            else:
                bias = None
            return pooled_sweep(state, w, s.M, s.k, s.n, s.r, mode, ws, bias=bias)
    if mode == "gemm":
        return state.reshape(s.M, s.k) @ ctx.cached(key, build)
    if mode == "transposed":
        mat = ctx.cached(key, build)
        return torch.matmul(state.reshape(s.M, s.k, s.r).transpose(1, 2), mat).transpose(1, 2).contiguous()
    # left / batched: the transposed matrix, made contiguous once (cached in eval mode)
    mat_t = ctx.cached((*key, "t"), lambda: build().t().contiguous())
    if mode == "left":
        return mat_t @ state.reshape(s.k, s.r)
    # bmm on a stride-0 expand: torch.matmul would copy the matrix M times under autograd
    return torch.bmm(mat_t.expand(s.M, s.n, s.k), state.reshape(s.M, s.k, s.r))


def _segment(net: TensorNetwork, cores: tuple[ChainCore, ...], first: int, last: int, batch: int) -> Segment:
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
        _, info = oe.contract_path(equation, *shapes, shapes=True, optimize="auto")
        merge = int(info.opt_cost)
    return Segment(first, last, M, k, n, r, merge, equation)


@dataclass(frozen=True)
class ChainPlan:
    net: TensorNetwork
    batch: int
    cores: tuple[ChainCore, ...]
    segments: tuple[Segment, ...]
    cached_segments: bool  # planned assuming merged segments come from the cache

    @property
    def flops(self) -> int:
        return sum(s.flops for s in self.segments)

    @property
    def largest(self) -> int:
        return max(max(s.M * s.n * s.r, s.k * s.n) for s in self.segments)

    def estimate(self, cached: bool = False) -> float:
        return sum(_segment_cost(s, cached) for s in self.segments)

    def describe(self) -> str:
        names = [c.name for c in self.cores]
        return " | ".join("".join(names[s.first:s.last + 1]) for s in self.segments)

    def __call__(self, x2d, ctx: Context):
        tensors = ctx.ordered_tensors()
        state = x2d
        for s in self.segments:
            state = _sweep(state, s, ctx, ("chain", s.first, s.last), lambda s=s: self._merge(s, tensors),
                           last=s is self.segments[-1])
        return state.reshape(self.batch, self.net.out_features)

    def _merge(self, s: Segment, tensors: list[Any]):
        seg = self.cores[s.first:s.last + 1]
        arrays = [tensors[c.position].permute(c.perm) for c in seg]
        if len(arrays) == 1:
            return arrays[0].reshape(s.k, s.n)
        return oe.contract(s.equation, *arrays, backend="torch").reshape(s.k, s.n)


def _segment_cost(s: Segment, cached: bool) -> float:
    mode = s.mode
    if mode == "batched":
        cost = s.M * max(2 * s.k * s.n * s.r, MIN_GEMM_FLOPS) + MEMORY_WEIGHT * s.moved + STEP_OVERHEAD
    elif mode == "transposed":
        cost = s.flops + 4 * MEMORY_WEIGHT * s.moved + STEP_OVERHEAD
    else:
        cost = s.flops + MEMORY_WEIGHT * s.moved + STEP_OVERHEAD
    if not cached:
        cost += s.merge_flops + (MEMORY_WEIGHT * s.k * s.n + STEP_OVERHEAD) * (s.last - s.first)
    return cost


@lru_cache(maxsize=512)
def plan_chain(net: TensorNetwork, batch: int, cached: bool = False) -> ChainPlan:
    """The cheapest segmentation of the chain for ``batch`` (dynamic programming over cut points)."""
    cores = chain_cores(net)
    if cores is None:
        raise StrategyError(
            f"the 'chain' strategy needs an open chain (MPO/TT) with its legs in row-major order; "
            f"{net.name or 'this network'!r} is not one"
        )
    def option(first: int, last: int) -> tuple[float, Segment]:
        seg = _segment(net, cores, first, last, batch)
        return _segment_cost(seg, cached), seg

    return ChainPlan(net, batch, cores, _cheapest_segments(len(cores), option)[1], cached)


def _cheapest_segments(n: int, option: Callable[[int, int], tuple[float, Segment] | None]
                       ) -> tuple[float, tuple[Segment, ...]]:
    """The cheapest cover of cores ``0..n-1`` by runs of neighbours and its cost (dynamic
    programming over cut points); ``option(first, last)`` gives a run's cost and segment, or
    ``None`` where not allowed."""
    best: list[tuple[float, tuple[Segment, ...]]] = [(0.0, ())]
    for last in range(n):
        options = []
        for first in range(last + 1):
            o = option(first, last)
            if o is not None:
                options.append((best[first][0] + o[0], best[first][1] + (o[1],)))
        best.append(min(options, key=lambda o: o[0]))
    return best[n]


class Chain:
    name = "chain"
    description = "MPO sweep: merged neighbouring cores as batched GEMMs on reshapes, no permutes"

    def supports(self, net: TensorNetwork) -> bool:
        return chain_cores(net) is not None

    def plan(self, net: TensorNetwork, batch: int, cached: bool = False) -> ChainPlan:
        return plan_chain(net, batch, cached)


# ---------------------------------------------------------------------- ring (tensor ring sweep)
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
            cores = _cores_along(net, order, lefts, [*lefts[1:], closing])
            if cores is not None:
                return cores
    return None


def _ring_segment(net: TensorNetwork, cores: tuple[ChainCore, ...], first: int, last: int, batch: int) -> Segment:
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
        _, info = oe.contract_path(equation, *shapes, shapes=True, optimize="auto")
        merge = int(info.opt_cost)
    return Segment(first, last, M, k, n, r, merge, equation)


def _middle_outputs(net: TensorNetwork, cores: tuple[ChainCore, ...], first_end: int, last_first: int) -> int:
    """Outputs emitted by the cores between the first segment (ending at ``first_end``) and the
    last (starting at ``last_first``): the axes the ring bond is moved past before the last GEMM."""
    return math.prod(net.sizes[o] for c in cores[first_end + 1:last_first] for o in c.outs)


def _ring_cost(s: Segment, cached: bool, transposes: bool) -> float:
    cost = _segment_cost(s, cached)
    if transposes:
        cost += 2 * MEMORY_WEIGHT * s.M * s.k  # the transpose moving the ring axis past the middle's outputs
    if not cached and s.first == s.last:
        cost += MEMORY_WEIGHT * s.k * s.n  # a single core is still permuted into its matrix
    return cost


@dataclass(frozen=True)
class RingPlan:
    net: TensorNetwork
    batch: int
    cores: tuple[ChainCore, ...]
    segments: tuple[Segment, ...]
    cached_segments: bool

    @property
    def flops(self) -> int:
        return sum(s.flops for s in self.segments)

    @property
    def largest(self) -> int:
        return max(max(s.M * s.n * s.r, s.M * s.k * s.r, s.k * s.n) for s in self.segments)

    @property
    def middle_outputs(self) -> int:
        return _middle_outputs(self.net, self.cores, self.segments[0].last, self.segments[-1].first)

    def estimate(self, cached: bool = False) -> float:
        last = self.segments[-1]
        return sum(_ring_cost(s, cached, s is last and self.middle_outputs > 1) for s in self.segments)

    def describe(self) -> str:
        names = [c.name for c in self.cores]
        cut = f"cut at {self.cores[0].left}: "
        return cut + " | ".join("".join(names[s.first:s.last + 1]) for s in self.segments)

    def __call__(self, x2d, ctx: Context):
        tensors = ctx.ordered_tensors()
        R = self.net.sizes[self.cores[0].left]
        state = x2d
        middle = self.middle_outputs
        for s in self.segments:
            if s is self.segments[-1] and middle > 1:
                # (batch * first outputs, a, middle outputs, k/R) -> (..., middle outputs, a, k/R)
                state = state.reshape(s.M // middle, R, middle, s.k // R).transpose(1, 2)
            state = _sweep(state, s, ctx, ("ring", s.first, s.last), lambda s=s: self._merge(s, tensors),
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
        first = _ring_segment(net, cores, 0, end, batch)

        def option(a: int, b: int, end: int = end) -> tuple[float, Segment]:
            seg = _ring_segment(net, cores, a + end + 1, b + end + 1, batch)
            transposes = seg.last == n - 1 and _middle_outputs(net, cores, end, seg.first) > 1
            return _ring_cost(seg, cached, transposes), seg

        cost, rest = _cheapest_segments(n - end - 1, option)
        plans.append((_ring_cost(first, cached, False) + cost, (first, *rest)))
    return RingPlan(net, batch, cores, min(plans, key=lambda p: p[0])[1], cached)


class Ring:
    name = "ring"
    description = "tensor ring sweep: cut at the closing bond, carried along the batch; GEMMs on reshapes"

    def supports(self, net: TensorNetwork) -> bool:
        return ring_cores(net) is not None

    def plan(self, net: TensorNetwork, batch: int, cached: bool = False) -> RingPlan:
        return plan_ring(net, batch, cached)


# ---------------------------------------------------------------------- modes (Tucker, CP)
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
        cost = _segment_cost(s, True)
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
    net: TensorNetwork
    batch: int
    steps: tuple[ModeStep, ...]
    kind: str  # "tucker" or "cp"

    @property
    def flops(self) -> int:
        return sum(s.seg.flops for s in self.steps)

    @property
    def largest(self) -> int:
        return max(max(s.seg.M * s.seg.n * s.seg.r, s.seg.M * s.seg.k * s.seg.r, s.seg.k * s.seg.n)
                   for s in self.steps)

    def estimate(self, cached: bool = False) -> float:
        return sum(_mode_cost(s.seg, cached) for s in self.steps)

    def describe(self) -> str:
        return " | ".join(s.label for s in self.steps)

    def __call__(self, x2d, ctx: Context):
        tensors = ctx.ordered_tensors()
        state = x2d
        for j, step in enumerate(self.steps):
            state = _sweep(state, step.seg, ctx, ("modes", j), lambda step=step: self._matrix(step, tensors),
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


class Modes:
    name = "modes"
    description = "Tucker: a GEMM per factor and one core GEMM; CP: Khatri-Rao GEMMs to the rank and back"

    def supports(self, net: TensorNetwork) -> bool:
        return _modes_layout(net) is not None

    def plan(self, net: TensorNetwork, batch: int, cached: bool = False) -> ModesPlan:
        return plan_modes(net, batch, cached)


# ---------------------------------------------------------------------- registry and choice
class Strategy(Protocol):
    name: str
    description: str

    def supports(self, net: TensorNetwork) -> bool: ...

    def plan(self, net: TensorNetwork, batch: int) -> Any: ...


#: Execution strategies by name.  ``auto`` is not an entry: it chooses among these.
STRATEGIES: dict[str, Strategy] = {
    "factorized": Factorized(),
    "rebuilt": Rebuilt(),
    "chain": Chain(),
    "ring": Ring(),
    "modes": Modes(),
}

AUTO = "auto"


def check_name(name: str) -> str:
    if name != AUTO and name not in STRATEGIES:
        raise StrategyError(f"unknown execution strategy {name!r}; choose one of {[AUTO, *STRATEGIES]}")
    return name


def make_plan(name: str, net: TensorNetwork, batch: int, cached: bool = False) -> Any:
    strategy = STRATEGIES[check_name(name)]
    if not strategy.supports(net):
        raise StrategyError(
            f"strategy {name!r} does not fit this network ({strategy.description}); "
            f"{net.name or 'the network'!r} is not supported, use 'auto' or 'factorized'"
        )
    if name in ("chain", "ring", "modes", "fused"):
        return strategy.plan(net, batch, cached)  # type: ignore[call-arg]
    return strategy.plan(net, batch)


def estimates(net: TensorNetwork, batch: int, cached: bool = False) -> dict[str, float]:
    """Modelled cost (FLOP-equivalents) of every supported strategy at ``batch``."""
    return {
        name: make_plan(name, net, batch, cached).estimate(cached)
        for name, s in STRATEGIES.items() if s.supports(net) and not measured_only(name)
    }


def measured_only(name: str) -> bool:
    """Strategies that depend on the device (``fused``: a Triton kernel on CUDA) are chosen by
    measurement only (:func:`tnviz.nn.measure.autotune`), never by the cost model."""
    return hasattr(STRATEGIES[name], "available")


def choose(net: TensorNetwork, batch: int, cached: bool = False, budget: int | None = None) -> str:
    """The cheapest supported strategy whose largest intermediate fits ``budget`` elements."""
    ranked = sorted(estimates(net, batch, cached).items(), key=lambda kv: kv[1])
    for name, _ in ranked:
        if budget is None or make_plan(name, net, batch, cached).largest <= budget:
            return name
    largest = min(make_plan(name, net, batch, cached).largest for name, _ in ranked)
    raise BudgetError(
        f"contractions are limited to {budget:,} elements per intermediate; every strategy for "
        f"{net.name or 'this network'!r} at batch {batch} needs at least {largest:,}"
    )


# The Triton kernel's module builds on the chain above (hence imported last); it imports without
# triton, and then ``fused`` supports nothing.
from .fused import FUSED  # noqa: E402

STRATEGIES[FUSED.name] = FUSED
