"""The ``rebuilt`` strategy: the dense weight rebuilt from the tensors (cached in eval mode), then
one matmul; and :func:`dense_weight`, the layer's ``(out_features, in_features)`` matrix.

MPOs and tensor rings are rebuilt as two merged halves and GEMMs over the bonds between them
(:class:`Halves`); other networks along opt_einsum's path.

>>> from tnviz.builders import mpo
>>> REBUILT.plan(mpo([4, 4], [4, 4], ranks=2), 8, cached=True).describe()
'W from two halves (cached), one GEMM'
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import opt_einsum as oe

from ..cost import rebuild_path
from ..network import TensorNetwork
from .chain import chain_cores
from .plan import FACTORIZED_SLOWDOWN, MEMORY_WEIGHT, STEP_OVERHEAD, PlanContext, TorchStrategy, contraction_flops
from .ring import ring_cores


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
        # torch where tensors arrive: planning (rebuild_halves) runs without it
        import torch

        from . import workspace

        halves = []
        for eq, pos in zip((self.left, self.right), self.positions):
            arrays = [tensors[p] for p in pos]
            if len(arrays) == 1:
                halves.append(torch.einsum(eq, arrays[0]))
            else:
                halves.append(oe.contract(eq, *arrays, backend="torch"))
        O, I, K, P, J = self.O, self.I, self.K, self.P, self.J
        if workspace.halves_product_ok(halves[0], O):  # CPU: W written in its layout, no permuted copies
            return workspace.halves_product(halves[0], halves[1], O, I, K, P, J)
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
                flops += contraction_flops(eq, shapes)
        moved = prod(K) * (O * I + P * J)  # the merged halves, written and read
        options.append((flops + MEMORY_WEIGHT * moved, Halves(*eqs, (tuple(c.position for c in left),
                        tuple(c.position for c in right)), O, I, prod(K), P, J, flops)))
    return min(options, key=lambda o: o[0])[1]


@dataclass(frozen=True)
class RebuiltPlan:
    """Rebuild ``W`` (:func:`dense_weight`; cached in eval mode), then ``F.linear``."""

    net: TensorNetwork
    batch: int
    reconstruct_flops: int
    largest: int
    cached: bool = False  # planned for eval mode: the rebuilt weight comes from the cache

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

    def flops(self, step: bool = False) -> int:
        """The GEMM, plus the rebuild unless it is cached; with ``step`` a training step: the
        GEMM and the weight's gradient (no input gradient), the rebuild and its gradients (3x)."""
        dense = 2 * self.batch * self.net.in_features * self.net.out_features
        if step:
            return 2 * dense + 3 * self.reconstruct_flops
        return dense + (0 if self.cached else self.reconstruct_flops)

    def describe(self) -> str:
        how = "two halves" if rebuild_halves(self.net) is not None else "the opt_einsum path"
        return f"W from {how}{' (cached)' if self.cached else ''}, one GEMM"

    def __call__(self, x2d, ctx: PlanContext):
        import torch.nn.functional as F  # torch where tensors arrive: planning runs without it

        w = ctx.cached(("rebuilt",), lambda: dense_weight(self.net, ctx.ordered_tensors()))
        bias = ctx.bias
        if bias is not None and bias.dtype == w.dtype == x2d.dtype:
            ctx.bias_added = True  # one addmm, as nn.Linear does
            return F.linear(x2d, w, bias)
        return F.linear(x2d, w)


class Rebuilt(TorchStrategy):
    name = "rebuilt"
    description = "rebuild the dense weight (cached while unchanged in eval mode), one matmul"

    def supports(self, net: TensorNetwork) -> bool:
        return True

    def plan(self, net: TensorNetwork, batch: int, cached: bool = False) -> RebuiltPlan:
        halves = rebuild_halves(net)
        if halves is not None:  # the halves, their product and its permuted copy
            h, io = halves, net.in_features * net.out_features
            return RebuiltPlan(net, batch, halves.flops, max(2 * io, h.O * h.I * h.K, h.K * h.P * h.J), cached)
        pc = rebuild_path(net, "auto")
        largest = max(pc.largest_intermediate, net.in_features * net.out_features)
        return RebuiltPlan(net, batch, pc.flops, largest, cached)


REBUILT = Rebuilt()
