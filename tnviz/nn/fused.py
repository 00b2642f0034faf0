"""The ``fused`` strategy: an MPO layer's forward as one Triton kernel, intermediates kept on chip.

The chain is cut at one bond ``r`` into a left part ``A[ia, oa, r]`` (the cores before the cut,
merged) and a right part ``B[r, ib, ob]`` (the cores after it), so that, with ``x[b, ia, ib]``
(input legs row-major, the leading ones in ``ia``)::

    y[b, oa, ob] = sum_r  sum_ib ( sum_ia A[ia, oa, r] x[b, ia, ib] )  B[r, ib, ob]
                               `-------- U_r[oa, ib], GEMM 1 --------'
                   `------------------ GEMM 2 with B[r] ------------------'

The two-segment ``chain`` plan computes the same two GEMMs but writes the whole intermediate
``U[b, oa, r, ib]`` to memory and reads it back: ``batch * oa * r * ib`` elements twice (a
4096x4096 layer as (8,8,8,8) at bond 16 and batch 1024: 67 M elements, 268 MB in float32, 8x
more than x and y together).  The kernel instead runs, for one batch row and one tile of
``(oa, ob)``, a loop over ``r`` (and tiles of ``ib``, ``ia``) that builds a tile of ``U_r`` in
registers (GEMM 1) and at once multiplies it into the accumulator (GEMM 2), flash-attention
style: the FLOPs are the chain's, the memory traffic is ``x``, ``y`` and the two merged parts
(read from L2 by every program).  Where ``ob`` needs several tiles, ``U_r`` is recomputed per tile
(the plan's ``flops`` counts that).

Training: a :class:`torch.autograd.Function` runs the kernel forward and a backward of plain torch
GEMMs on the merged parts (``U`` recomputed once, then ``dB = U^T dy``, ``dU = dy B^T``,
``dA = sum_b dU_b x_b^T``, ``dx = A^T dU``); gradients reach the cores through the merge, which
autograd records.  Without a kernel for the device (CPU without the interpreter, no triton) or
the dtype (see :data:`KERNEL_DTYPES`), the plan runs the ``chain`` plan instead, so the strategy is
correct everywhere.

Triton is optional: without it this module imports and :meth:`Fused.supports` is False.  This
module plans from shapes alone (no torch, no triton); the torch operation is :mod:`tnviz.nn.fused_op`,
the kernel :mod:`tnviz.nn.fused_kernel`, and where it can run :mod:`tnviz.nn.fused_launch`.  On CPU
tensors the kernel runs in Triton's interpreter when ``TRITON_INTERPRET=1`` is set (slow; tests).

>>> import tnviz
>>> net = tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=4)
>>> FUSED.plan(net, 64).describe()      # cut at the middle bond: A = AB, B = CD
'AB | CD (fused)'
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ..network import TensorNetwork
from .chain import ChainPlan, chain_cores, open_chain, plan_chain, two_halves
from .fused_launch import BLOCK_OB, available, block, triton_importable
from .plan import MEMORY_WEIGHT, STEP_OVERHEAD, PlanContext


@dataclass(frozen=True)
class FusedPlan:
    """The chain cut at one bond into two merged parts, run by the fused kernel; the best
    ``chain`` plan where the kernel cannot run (``fallback``)."""

    net: TensorNetwork
    batch: int
    halves: ChainPlan  # the two segments: left part A, right part B
    fallback: ChainPlan
    IA: int
    IB: int
    OA: int
    OB: int
    R: int

    def flops(self, step: bool = False) -> int:
        """Kernel FLOPs, counting GEMM 1 once per tile of ``ob`` (it is recomputed per tile); with
        ``step`` a training step: the kernel, then a backward in plain GEMMs over the two parts
        (the first part's product ``U`` recomputed, the gradients of ``U`` and of both parts, no
        input gradient: twice each part's sweep) and the merges' gradients (3x their forward)."""
        tiles = -(-self.OB // block(self.OB, BLOCK_OB))
        kernel = 2 * self.batch * self.R * self.OA * self.IB * (self.IA * tiles + self.OB)
        if not step:
            return kernel
        first, second = self.halves.segments
        return kernel + 2 * (first.flops + second.flops) + 3 * (first.merge_flops + second.merge_flops)

    @property
    def parts(self) -> int:
        """Elements of the two merged parts."""
        return self.R * (self.OA * self.IA + self.IB * self.OB)

    @property
    def largest(self) -> int:
        """Largest tensor in memory: output and parts in inference; with gradients (plans made
        uncached) the backward's recomputed ``U`` (``batch * oa * r * ib``)."""
        largest = max(self.batch * self.OA * self.OB, self.parts)
        if not self.halves.cached_segments:
            largest = max(largest, self.batch * self.OA * self.R * self.IB)
        return largest

    def estimate(self, cached: bool = False) -> float:
        moved = self.batch * (self.IA * self.IB + self.OA * self.OB) + self.parts
        cost = self.flops() + MEMORY_WEIGHT * moved + STEP_OVERHEAD
        if not cached:
            for s in self.halves.segments:
                cost += s.merge_flops + (MEMORY_WEIGHT * s.k * s.n + STEP_OVERHEAD) * (s.last - s.first + 1)
        return cost

    def describe(self) -> str:
        return f"{self.halves.describe()} (fused)"

    def __call__(self, x2d, ctx: PlanContext):
        from .fused_op import KERNEL_DTYPES, FusedMPO  # torch: loaded where tensors arrive, not to plan

        tensors = ctx.ordered_tensors()
        if not (available(x2d.device) and x2d.dtype in KERNEL_DTYPES and all(t.dtype == x2d.dtype for t in tensors)):
            return self.fallback(x2d, ctx)
        left, right = self.halves.segments
        a_t = ctx.cached(("fused-a", left.last), lambda: self.halves.merge(left, tensors)
                         .reshape(self.IA, self.OA, self.R).permute(2, 1, 0).contiguous())
        b = ctx.cached(("fused-b", right.first), lambda: self.halves.merge(right, tensors))
        return FusedMPO.apply(x2d, a_t, b)


@functools.lru_cache(maxsize=256)
def plan_fused(net: TensorNetwork, batch: int, cached: bool = False) -> FusedPlan:
    """Cut the chain at the bond with the fewest kernel FLOPs (ties: smaller merged parts)."""
    cores = open_chain(net, "the 'fused' strategy", least=2)
    options = []
    for cut in range(len(cores) - 1):
        halves, (I, J, O, P, K) = two_halves(net, cores, cut, batch, cached)
        plan = FusedPlan(net, batch, halves, plan_chain(net, batch, cached), I, J, O, P, K)
        options.append(((plan.flops(), plan.parts), plan))
    return min(options, key=lambda o: o[0])[1]


class Fused:
    """The strategy (registered as ``fused`` by :mod:`tnviz.nn`): supports MPO chains of two
    cores or more where triton imports; runs where :func:`available`; chosen by measurement only."""

    name = "fused"
    description = "MPO cut in two merged parts, both GEMMs in one Triton kernel (intermediate on chip)"
    measured_only = True

    def supports(self, net: TensorNetwork) -> bool:
        cores = chain_cores(net)
        return triton_importable() and cores is not None and len(cores) >= 2

    def available(self, device: Any) -> bool:
        """CUDA with triton, or CPU under Triton's interpreter (:func:`tnviz.nn.fused_launch.available`)."""
        return available(device)

    def plan(self, net: TensorNetwork, batch: int, cached: bool = False) -> FusedPlan:
        return plan_fused(net, batch, cached)


FUSED = Fused()
