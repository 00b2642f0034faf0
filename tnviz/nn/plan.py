"""What every execution plan of a TN layer shares: the context it runs in, the cost model's
constants, a sweep step, and the dynamic programming that cuts a chain of cores into segments.

A *plan* is a frozen value made once per (network, batch, mode) by a strategy's
``plan(net, batch, cached)``.  It has ``estimate(cached)`` (modelled cost, FLOP-equivalents),
``largest`` (elements of its largest intermediate, for the memory guard), ``flops(step=False)``
(counted FLOPs of its forward, or with ``step`` of one training step with a first layer's input),
``describe()`` and ``__call__(x2d, ctx) -> y2d``, where ``ctx`` is a :class:`PlanContext`.

Nothing here imports torch: plans are made from shapes alone (the CLI's ``cost`` command asks
which strategy a layer runs without loading torch); they touch torch only through the tensors
that a call hands them.

>>> s = Segment(first=0, last=1, M=64, k=8, n=8, r=16, merge_flops=0, equation="ab,bc->ac")
>>> s.flops, s.mode
(131072, 'batched')
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import opt_einsum as oe

from ..errors import TnvizError

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

#: Fixed overhead per executed step (Python dispatch and the torch op, or a kernel launch), in
#: FLOP-equivalents: about 7 µs at this 2-core CPU's GEMM rate (~270 GFLOP/s).  Measured on
#: MiniLM's shapes (benchmarks/bench_minilm_shapes.py): a cached rebuilt layer at batch 1 runs one
#: F.linear in ~9 µs over nn.Linear's call, a chain segment ~8 µs, an opt_einsum pairwise step
#: (tensordot: permuted copies, reshapes, a GEMM) ~23 µs (hence ``FACTORIZED_SLOWDOWN`` per step).
#: At 20,000 (the earlier value, fitted on 4096x4096 layers where the FLOPs dominate) the model
#: sent batch-1 layers of MiniLM's size to ``factorized``, 4x slower than ``rebuilt``.
STEP_OVERHEAD = 2_000_000.0

#: Inside a batched matmul each GEMM is charged at least this many FLOPs: tens of thousands of
#: tiny GEMMs (a core applied to a state with few trailing inputs) run far below peak.
MIN_GEMM_FLOPS = 2 * 64**3

#: A batched step whose GEMMs are thinner than this (trailing inputs ``r``) is run instead as one
#: large GEMM on a transposed copy of the state (two state-sized copies, one efficient GEMM).
THIN_GEMM = 8


class StrategyError(TnvizError, ValueError):
    """An execution strategy was asked for that does not exist or does not fit the network."""


class SweepWorkspace(Protocol):
    """Reused buffers for large sweep states (:class:`tnviz.nn.workspace.Workspace`)."""

    def worth(self, state: Any, out_elements: int) -> bool: ...

    def sweep(self, state: Any, w: Any, M: int, k: int, n: int, r: int, mode: str, bias: Any = None) -> Any: ...


class PlanContext(Protocol):
    """What a plan needs from the layer for one call (:meth:`tnviz.nn.TNLinear.call_context`).

    ``ordered_tensors()`` gives the layer's tensors in network order; ``cached(key, compute)``
    caches weight-only results (merged cores, the rebuilt matrix) while the weights are unchanged
    (it just computes where caching is not allowed).  ``workspace`` lends buffers to large CPU
    states (``None``: plain tensors).  ``bias`` is the layer's bias (or ``None``): a plan may add
    it inside its last step, and then sets ``bias_added``."""

    workspace: SweepWorkspace | None
    bias: Any
    bias_added: bool

    def ordered_tensors(self) -> list[Any]: ...

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any: ...


class Plan(Protocol):
    """One strategy's recipe for a (network, batch, mode); see the module docstring."""

    largest: int

    def estimate(self, cached: bool = False) -> float: ...

    def flops(self, step: bool = False) -> int: ...

    def describe(self) -> str: ...

    def __call__(self, x2d: Any, ctx: PlanContext) -> Any: ...


class TorchStrategy:
    """Base of the strategies made of plain torch operations: they run on every device and the
    cost model chooses among them.  A subclass sets ``name`` and ``description`` and defines
    ``supports(net)`` and ``plan(net, batch, cached)``."""

    name: str
    description: str
    #: chosen by measurement only (a device kernel), never by the cost model
    measured_only = False

    def available(self, device: Any) -> bool:
        """Whether the strategy can run on ``device`` (a torch device or its name)."""
        return True


def contraction_flops(equation: str, shapes: Sequence[tuple[int, ...]]) -> int:
    """FLOPs of opt_einsum's ``auto`` path for ``equation`` on operands of ``shapes``."""
    return int(oe.contract_path(equation, *shapes, shapes=True, optimize="auto")[1].opt_cost)


@dataclass(frozen=True)
class Segment:
    """One step of a sweep: the axes of size ``k`` of the state ``(M, k, r)`` become ``n``
    through a ``(k, n)`` matrix merged from cores ``first..last`` (sweep positions)."""

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


def segment_cost(s: Segment, cached: bool) -> float:
    """Modelled cost of one sweep step, plus its merge where merged cores are not cached."""
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


def sweep_flops(segments: Sequence[Segment], step: bool = False) -> int:
    """Counted FLOPs of a sweep: its steps' GEMMs, or with ``step`` one training step with an
    input that needs no gradient.  A sweep's backward takes a weight and a state gradient per
    step, each as costly as the step, except the state gradient of the step that reads the
    input; a merge of cores costs 3x its forward (forward, and a gradient per operand pair)."""
    sweep = sum(s.flops for s in segments)
    if not step:
        return sweep
    return 3 * sweep - segments[0].flops + 3 * sum(s.merge_flops for s in segments)


def sweep(state: Any, s: Segment, ctx: PlanContext, key: Any, build: Callable[[], Any], last: bool = False) -> Any:
    """One step of a sweep: the axes of size ``s.k`` of the state ``(s.M, s.k, s.r)`` become
    ``s.n`` through the ``(k, n)`` matrix ``build()`` (cached under ``key`` in eval mode).
    Large CPU states go through the context's workspace (:mod:`tnviz.nn.workspace`: reused
    buffers, no page faults); ``last`` marks the step whose result is the layer's output, to
    which that path also adds the layer's bias (``ctx.bias``, then ``ctx.bias_added``)."""
    mode = s.mode
    ws = ctx.workspace
    if ws is not None and ws.worth(state, s.M * s.n * s.r):
        if mode in ("gemm", "transposed"):
            w = ctx.cached(key, build)
        else:
            w = ctx.cached((*key, "t"), lambda: build().t().contiguous())
        if w.dtype == state.dtype:
            bias = ctx.bias if last else None
            if bias is not None and bias.dtype == state.dtype:
                ctx.bias_added = True
            else:
                bias = None
            return ws.sweep(state, w, s.M, s.k, s.n, s.r, mode, bias=bias)
    if mode == "gemm":
        w = ctx.cached(key, build)
        bias = ctx.bias if last else None
        if bias is not None and bias.numel() == s.n and bias.dtype == state.dtype == w.dtype:
            ctx.bias_added = True  # one addmm, as nn.Linear does (an add after costs a pass over y)
            return torch_addmm(bias, state.reshape(s.M, s.k), w)
        return state.reshape(s.M, s.k) @ w
    if mode == "transposed":
        mat = ctx.cached(key, build)
        return (state.reshape(s.M, s.k, s.r).transpose(1, 2) @ mat).transpose(1, 2).contiguous()
    # left / batched: the transposed matrix, made contiguous once (cached in eval mode)
    mat_t = ctx.cached((*key, "t"), lambda: build().t().contiguous())
    if mode == "left":
        return mat_t @ state.reshape(s.k, s.r)
    # bmm on a stride-0 expand: matmul would copy the matrix M times under autograd
    return mat_t.expand(s.M, s.n, s.k).bmm(state.reshape(s.M, s.k, s.r))


def torch_addmm(bias: Any, a: Any, b: Any) -> Any:
    """``bias + a @ b`` as one addmm (torch where the tensors are: planning runs without it)."""
    import torch

    return torch.addmm(bias, a, b)


def cheapest_segments(n: int, option: Callable[[int, int], tuple[float, Segment] | None]
                      ) -> tuple[float, tuple[Segment, ...]]:
    """The cheapest cover of cores ``0..n-1`` by runs of neighbours and its cost (dynamic
    programming over cut points); ``option(first, last)`` gives a run's cost and segment, or
    ``None`` where not allowed.

    >>> cost, segs = cheapest_segments(3, lambda a, b: (1.0, Segment(a, b, 1, 1, 1, 1, 0, "")))
    >>> cost, [(s.first, s.last) for s in segs]
    (1.0, [(0, 2)])
    """
    best: list[tuple[float, tuple[Segment, ...]]] = [(0.0, ())]
    for last in range(n):
        options = []
        for first in range(last + 1):
            o = option(first, last)
            if o is not None:
                options.append((best[first][0] + o[0], best[first][1] + (o[1],)))
        best.append(min(options, key=lambda o: o[0]))
    return best[n]
