"""The Triton kernel of :mod:`tnviz.nn.fused` (imports triton: :mod:`tnviz.nn.fused_op` loads it
at the first launch).  See :mod:`tnviz.nn.fused` for what it computes and why.

Without triton the module still imports (the kernel's annotations are strings) and
:func:`kernel` refuses."""
from __future__ import annotations

import functools

from .plan import StrategyError

try:
    import triton
    import triton.language as tl
except Exception:  # not installed, or built for another torch/python (as fused_launch.triton_importable)
    triton = tl = None


def _fused_mpo_kernel(x_ptr, a_ptr, b_ptr, y_ptr, IA, IB, OA, OB, R,
                      BLOCK_IA: tl.constexpr, BLOCK_IB: tl.constexpr, BLOCK_OA: tl.constexpr,
                      BLOCK_OB: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr):
    """One program: batch row ``program_id(0)``, output tile ``(program_id(1), program_id(2))``
    of ``y[b, oa, ob] = sum_r (A_r^T x_b) B_r``.  ``x`` is ``(batch, IA, IB)``, ``a`` the left
    part as ``(R, OA, IA)``, ``b`` the right part as ``(R, IB, OB)``, ``y`` is ``(batch, OA, OB)``;
    all contiguous.  Legs shorter than a tile are padded with zeros by the load masks."""
    row = tl.program_id(0).to(tl.int64)
    oa = tl.program_id(1) * BLOCK_OA + tl.arange(0, BLOCK_OA)
    ob = tl.program_id(2) * BLOCK_OB + tl.arange(0, BLOCK_OB)
    x_row = x_ptr + row * IA * IB
    # tl.full, not tl.zeros: tl.zeros is a @jit helper, which the interpreter can run only when
    # TRITON_INTERPRET was set before triton.language was imported; builtins work either way
    acc = tl.full((BLOCK_OA, BLOCK_OB), 0, dtype=ACC_DTYPE)
    for r in range(0, R):
        for ib0 in range(0, IB, BLOCK_IB):
            ib = ib0 + tl.arange(0, BLOCK_IB)
            # GEMM 1: a tile of U_r = A_r^T x_b, kept in registers
            u = tl.full((BLOCK_OA, BLOCK_IB), 0, dtype=ACC_DTYPE)
            for ia0 in range(0, IA, BLOCK_IA):
                ia = ia0 + tl.arange(0, BLOCK_IA)
                a = tl.load(a_ptr + (r * OA + oa[:, None]) * IA + ia[None, :],
                            mask=(oa[:, None] < OA) & (ia[None, :] < IA), other=0.0)
                x = tl.load(x_row + ia[:, None] * IB + ib[None, :],
                            mask=(ia[:, None] < IA) & (ib[None, :] < IB), other=0.0)
                u = tl.dot(a, x, acc=u, input_precision=PRECISION)
            # GEMM 2: straight into the output tile
            b = tl.load(b_ptr + (r * IB + ib[:, None]) * OB + ob[None, :],
                        mask=(ib[:, None] < IB) & (ob[None, :] < OB), other=0.0)
            acc = tl.dot(u.to(b.dtype), b, acc=acc, input_precision=PRECISION)
    tl.store(y_ptr + row * OA * OB + oa[:, None] * OB + ob[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(oa[:, None] < OA) & (ob[None, :] < OB))


@functools.lru_cache(maxsize=2)
def kernel(interpreted: bool):
    """The kernel compiled for the GPU, or wrapped for Triton's interpreter (CPU tensors).  Both
    are built here rather than by ``@triton.jit`` at import, which fixes the choice by the
    ``TRITON_INTERPRET`` seen at import time: a process may interpret on CPU and compile for CUDA."""
    if triton is None:
        raise StrategyError("the fused kernel needs the optional dependency triton, which does not import here")
    if interpreted:
        from triton.runtime.interpreter import InterpretedFunction

        return InterpretedFunction(_fused_mpo_kernel)
    return triton.jit(_fused_mpo_kernel)
