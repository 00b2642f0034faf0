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

Triton is optional: without it this module imports and :meth:`Fused.supports` is False.  On CPU
tensors the kernel runs in Triton's interpreter when ``TRITON_INTERPRET=1`` is set (slow; tests).

>>> import tnviz
>>> net = tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=4)
>>> FUSED.plan(net, 64).describe()      # cut at the middle bond: A = AB, B = CD
'AB | CD (fused)'
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import torch

from ..network import TensorNetwork
from .strategies import (MEMORY_WEIGHT, STEP_OVERHEAD, ChainPlan, Context, StrategyError, _segment, chain_cores,
                         plan_chain)

#: Tile edges ``(ia, ib, oa, ob)`` and warps of one program, by element size in bytes: the largest
#: tiles whose compiled kernel spills no registers on sm_90 (``ptxas -v`` on the kernel compiled for
#: sm_90: 188, 232 and 197 registers for 2, 4 and 8 bytes).  Not yet tuned by timing on a GPU.
TILES = {2: ((64, 64, 64, 64), 8), 4: ((32, 32, 32, 64), 8), 8: ((32, 32, 32, 64), 8)}

#: Element types the kernel takes (all three operands alike); others run the chain.
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: The ``ob`` tile of every entry of :data:`TILES`: ``U_r`` is recomputed once per ``ob`` tile.
BLOCK_OB = 64

#: ``tl.dot`` needs every tile edge at least this long; smaller legs are padded by masks.
MIN_BLOCK = 16


@functools.lru_cache(maxsize=1)
def triton_importable() -> bool:
    """Whether the optional dependency ``triton`` imports (tried once, on first use)."""
    try:
        import triton  # noqa: F401
    except Exception:  # not installed, or built for another torch/python: the kernel is unavailable
        return False
    return True


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's CPU interpreter (read at each call)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def available(device: Any) -> bool:
    """Whether the kernel can run on ``device``: CUDA with triton, or CPU under the interpreter."""
    kind = torch.device(device).type
    return triton_importable() and (kind == "cuda" or (kind == "cpu" and interpreting()))


def _block(size: int, largest: int) -> int:
    return max(MIN_BLOCK, min(largest, 1 << max(0, size - 1).bit_length()))


def fused_mpo(x, a_t, b, max_block: int | None = None):
    """``y (batch, oa*ob)`` from ``x (batch, ia*ib)``, the left part ``a_t (r, oa, ia)`` and the
    right part ``b (r*ib, ob)``, by the fused kernel (no autograd; :class:`FusedMPO` adds it).
    ``max_block`` caps every tile edge of :data:`TILES` (tests use 16 to reach the tile loops with
    small shapes).

    >>> import os; from unittest import mock
    >>> x, a_t, b = torch.randn(2, 6), torch.randn(3, 4, 2), torch.randn(3 * 3, 5)
    >>> with mock.patch.dict(os.environ, {"TRITON_INTERPRET": "1"}):  # CPU tensors: interpreted
    ...     y = fused_mpo(x, a_t, b)
    >>> ref = torch.einsum("bij,roi,rjp->bop", x.view(2, 2, 3), a_t, b.view(3, 3, 5)).reshape(2, 20)
    >>> bool(torch.allclose(y, ref, atol=1e-5))
    True
    """
    if not available(x.device):
        raise StrategyError(
            f"the fused kernel runs on CUDA with triton, or on CPU with TRITON_INTERPRET=1; "
            f"got a {x.device.type} tensor (triton importable: {triton_importable()})"
        )
    if x.dtype not in KERNEL_DTYPES or a_t.dtype != x.dtype or b.dtype != x.dtype:
        raise StrategyError(
            f"the fused kernel takes operands of one type among {[str(d) for d in KERNEL_DTYPES]}; "
            f"got {x.dtype}, {a_t.dtype}, {b.dtype}"
        )
    from .fused_kernel import kernel, tl

    R, OA, IA = a_t.shape
    OB = b.shape[1]
    IB = b.shape[0] // R
    batch = x.shape[0]
    x, a_t, b = x.contiguous(), a_t.contiguous(), b.contiguous()
    y = torch.empty(batch, OA * OB, device=x.device, dtype=x.dtype)
    tiles, warps = TILES[x.element_size()]
    block_ia, block_ib, block_oa, block_ob = (_block(size, min(tile, max_block or tile))
                                              for size, tile in zip((IA, IB, OA, OB), tiles))
    grid = (batch, -(-OA // block_oa), -(-OB // block_ob))
    # float32 follows torch's matmul setting (TF32 off by default), as nn.Linear does
    tf32 = x.dtype == torch.float32 and x.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    kernel(x.device.type == "cpu")[grid](
        x, a_t, b, y, IA, IB, OA, OB, R,
        BLOCK_IA=block_ia, BLOCK_IB=block_ib, BLOCK_OA=block_oa, BLOCK_OB=block_ob,
        ACC_DTYPE=tl.float64 if x.dtype == torch.float64 else tl.float32, PRECISION="tf32" if tf32 else "ieee",
        num_warps=warps,
    )
    return y


class FusedMPO(torch.autograd.Function):
    """The fused kernel forward; a backward of plain torch GEMMs on the merged parts (the
    intermediate ``U`` is recomputed there, not kept from the forward)."""

    @staticmethod
    def forward(ctx, x, a_t, b):
        ctx.save_for_backward(x, a_t, b)
        return fused_mpo(x, a_t, b)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        x, a_t, b = ctx.saved_tensors
        R, OA, IA = a_t.shape
        OB, IB, batch = b.shape[1], b.shape[0] // R, x.shape[0]
        x3 = x.reshape(batch, IA, IB)
        a = a_t.transpose(0, 1).reshape(OA * R, IA)  # a[(oa, r), ia], so that U_b = a @ x_b
        grad_y2 = grad_y.reshape(batch * OA, OB)
        grad_u = (grad_y2 @ b.t()).reshape(batch, OA * R, IB)
        grad_x = grad_a_t = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.matmul(a.t(), grad_u).reshape(batch, IA * IB)
        if ctx.needs_input_grad[1]:
            grad_a = torch.tensordot(grad_u, x3, dims=([0, 2], [0, 2]))  # sum_b dU_b x_b^T
            grad_a_t = grad_a.reshape(OA, R, IA).transpose(0, 1)
        if ctx.needs_input_grad[2]:
            u = torch.matmul(a, x3).reshape(batch * OA, R * IB)
            grad_b = u.t() @ grad_y2
        return grad_x, grad_a_t, grad_b


# ---------------------------------------------------------------------- plan and strategy
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

    @property
    def flops(self) -> int:
        """Kernel FLOPs, counting GEMM 1 once per tile of ``ob`` (it is recomputed per tile)."""
        tiles = -(-self.OB // _block(self.OB, BLOCK_OB))
        return 2 * self.batch * self.R * self.OA * self.IB * (self.IA * tiles + self.OB)

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
        cost = self.flops + MEMORY_WEIGHT * moved + STEP_OVERHEAD
        if not cached:
            for s in self.halves.segments:
                cost += s.merge_flops + (MEMORY_WEIGHT * s.k * s.n + STEP_OVERHEAD) * (s.last - s.first + 1)
        return cost

    def describe(self) -> str:
        return f"{self.halves.describe()} (fused)"

    def __call__(self, x2d, ctx: Context):
        tensors = ctx.ordered_tensors()
        if not (available(x2d.device) and x2d.dtype in KERNEL_DTYPES and all(t.dtype == x2d.dtype for t in tensors)):
            return self.fallback(x2d, ctx)
        left, right = self.halves.segments
        a_t = ctx.cached(("fused-a", left.last), lambda: self.halves._merge(left, tensors)
                         .reshape(self.IA, self.OA, self.R).permute(2, 1, 0).contiguous())
        b = ctx.cached(("fused-b", right.first), lambda: self.halves._merge(right, tensors))
        return FusedMPO.apply(x2d, a_t, b)


def _halves(net: TensorNetwork, cores, cut: int, batch: int, cached: bool) -> tuple[ChainPlan, tuple[int, ...]]:
    left = _segment(net, cores, 0, cut, batch)
    right = _segment(net, cores, cut + 1, len(cores) - 1, batch)
    R = net.sizes[cores[cut].right]
    dims = (left.k, left.r, left.n // R, right.n, R)  # IA, IB, OA, OB, R
    return ChainPlan(net, batch, cores, (left, right), cached), dims


@functools.lru_cache(maxsize=256)
def plan_fused(net: TensorNetwork, batch: int, cached: bool = False) -> FusedPlan:
    """Cut the chain at the bond with the fewest kernel FLOPs (ties: smaller merged parts)."""
    cores = chain_cores(net)
    if cores is None or len(cores) < 2:
        raise StrategyError(
            f"the 'fused' strategy needs an open chain (MPO/TT) of at least two cores with its legs in "
            f"row-major order; {net.name or 'this network'!r} is not one"
        )
    options = []
    for cut in range(len(cores) - 1):
        halves, dims = _halves(net, cores, cut, batch, cached)
        plan = FusedPlan(net, batch, halves, plan_chain(net, batch, cached), *dims)
        options.append(((plan.flops, plan.parts), plan))
    return min(options, key=lambda o: o[0])[1]


class Fused:
    """Registry entry: ``STRATEGIES["fused"] = FUSED``."""

    name = "fused"
    description = "MPO cut in two merged parts, both GEMMs in one Triton kernel (intermediate on chip)"

    def supports(self, net: TensorNetwork) -> bool:
        cores = chain_cores(net)
        return triton_importable() and cores is not None and len(cores) >= 2

    def available(self, device: Any) -> bool:
        return available(device)

    def plan(self, net: TensorNetwork, batch: int, cached: bool = False) -> FusedPlan:
        return plan_fused(net, batch, cached)


FUSED = Fused()
