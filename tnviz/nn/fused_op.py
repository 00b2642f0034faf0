"""The fused kernel as a torch operation: :func:`fused_mpo` launches the Triton kernel of
:mod:`tnviz.nn.fused_kernel` on the two merged parts of an MPO, :class:`FusedMPO` gives it a
backward of plain torch GEMMs.  See :mod:`tnviz.nn.fused` for what it computes and why.
"""
from __future__ import annotations

import torch

from .fused_launch import TILES, available, block, triton_importable
from .plan import StrategyError

#: Element types the kernel takes (all three operands alike); others run the chain.
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fused_mpo(x, a_t, b, max_block: int | None = None):
    """``y (batch, oa*ob)`` from ``x (batch, ia*ib)``, the left part ``a_t (r, oa, ia)`` and the
    right part ``b (r*ib, ob)``, by the fused kernel (no autograd; :class:`FusedMPO` adds it).
    ``max_block`` caps every tile edge of :data:`TILES` (tests use 16 to reach the tile loops with
    small shapes).

    >>> import os; from unittest import mock
    >>> x, a_t, b = torch.randn(2, 6), torch.randn(3, 4, 2), torch.randn(3 * 3, 5)
    >>> ref = torch.einsum("bij,roi,rjp->bop", x.view(2, 2, 3), a_t, b.view(3, 3, 5)).reshape(2, 20)
    >>> with mock.patch.dict(os.environ, {"TRITON_INTERPRET": "1"}):  # CPU tensors: interpreted
    ...     y = fused_mpo(x, a_t, b) if triton_importable() else ref  # (nothing to run without triton)
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
    block_ia, block_ib, block_oa, block_ob = (block(size, min(tile, max_block or tile))
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

