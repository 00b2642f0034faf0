"""Truncated SVD of one matrix, exact or by randomized range finding (Halko, Martinsson, Tropp 2011).

:func:`truncated_svd` is the one place every method asks for an SVD.  It decides between the
exact LAPACK/cuSOLVER SVD and a randomized one: with ``randomized="auto"`` the randomized path
is taken when a rank cap is known, the smaller matrix side is at least 256 and ``cap + oversample``
is at most a quarter of it; ``True`` forces it (with ``rtol``/``energy`` the sketch grows by doubling until the
threshold is met), ``False`` forbids it.

The randomized result is a projection ``U U^T A``, so its discarded weight is exact:
``||A - U_r S_r V_r^T||_F^2 = ||A||_F^2 - sum(S_r^2)``; only the spectrum is partial (the
leading ``cap + oversample`` values).

>>> import torch
>>> A = torch.randn(300, 200, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
>>> res = truncated_svd(A, Truncation("max_rank", 5), bond="b1", cap=5, randomized=True)
>>> res.U.shape, res.randomized
(torch.Size([300, 5]), True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .truncation import Truncation, choose_rank, tail_squares

#: Default oversampling and power iterations of the randomized range finder.
OVERSAMPLE = 10
POWER_ITERS = 2
#: "auto" goes randomized when (cap + oversample) * AUTO_FACTOR <= min(m, n).
AUTO_FACTOR = 4
#: ... and the matrix is at least this large on its smaller side (below it exact SVDs are cheap).
AUTO_MIN_SIDE = 256


@dataclass
class SVDResult:
    """Truncated factors ``A ≈ U diag(S) Vh`` and what is needed to report the cut."""

    U: Any
    S: Any
    Vh: Any
    spectrum: Any          # singular values before truncation (cpu float64); partial if randomized
    discarded: float       # sqrt of the squared discarded weight (absolute)
    randomized: bool
    partial: bool
    SVh: Any = None        # diag(S) @ Vh computed directly as U^T A (Gram path), else None

    def s_vh(self):
        """``diag(S) @ Vh`` = ``U^T A``: what TT/TR carry to the next bond."""
        return self.SVh if self.SVh is not None else self.S[:, None] * self.Vh


def _qr(Y):
    """Orthonormal basis of the columns of a tall-skinny ``Y``: CholeskyQR2 (two Gram
    matrices and Cholesky factors, GEMM-bound and fast), falling back to Householder QR when the
    Gram matrix is too ill-conditioned for Cholesky (e.g. a rank-deficient sketch)."""
    import torch

    Q = Y
    for _ in range(2):
        L, info = torch.linalg.cholesky_ex(Q.mT @ Q)
        if int(info) != 0 or not bool(torch.isfinite(L).all()):
            return torch.linalg.qr(Y, mode="reduced")[0]
        Q = torch.linalg.solve_triangular(L, Q.mT, upper=False).mT
    eye = torch.eye(Q.shape[1], device=Q.device, dtype=Q.dtype)
    if float(torch.linalg.matrix_norm(Q.mT @ Q - eye)) > 1e3 * torch.finfo(Q.dtype).eps * Q.shape[1]:
        return torch.linalg.qr(Y, mode="reduced")[0]
    return Q


def randomized_svd(A, k: int, *, power_iters: int = POWER_ITERS, seed: int = 0):
    """Rank-``k`` randomized SVD ``A ≈ U diag(S) Vh`` with ``power_iters`` subspace iterations
    (re-orthonormalised each half step for stability).  Runs on ``A``'s device and dtype."""
    import torch

    m, n = A.shape
    k = min(k, m, n)
    gen = torch.Generator(device=A.device).manual_seed(int(seed))
    omega = torch.randn(n, k, generator=gen, device=A.device, dtype=A.dtype)
    Q = _qr(A @ omega)
    for _ in range(power_iters):
        Q = _qr(A.mT @ Q)
        Q = _qr(A @ Q)
    B = Q.mT @ A
    Ub, S, Vh, _ = exact_svd(B)
    return Q @ Ub, S, Vh


def _wide_r_factor(A):
    """A lower-triangular ``K`` with ``A = K·Q`` (``Q`` orthonormal rows) for a wide ``A``.

    CholeskyQR2 (two Gram matrices, GEMM speed) when ``A`` is well enough conditioned for it
    (checked exactly on the small first factor: cond < 0.1/sqrt(eps)); Householder ``geqrf``
    otherwise (e.g. a rank-deficient unfolding).
    """
    import torch

    m = A.shape[0]
    L, info = torch.linalg.cholesky_ex(A @ A.mT)
    if int(info) == 0 and bool(torch.isfinite(L).all()):
        s = torch.linalg.svdvals(L)
        if float(s[-1]) > 0 and float(s[0] / s[-1]) < 0.1 / math.sqrt(torch.finfo(A.dtype).eps):
            Q1 = torch.linalg.solve_triangular(L, A, upper=False)
            L2, info2 = torch.linalg.cholesky_ex(Q1 @ Q1.mT)
            if int(info2) == 0 and bool(torch.isfinite(L2).all()):
                return L @ L2
    return torch.geqrf(A.mT)[0][:m].triu().mT


def exact_svd(A):
    """Thin SVD by LAPACK/cuSOLVER, returning ``U, S, Vh, S·Vh``.

    A strongly rectangular matrix is first reduced by a QR factorization (exact, and several
    times faster than a direct SVD of a 64 x 262144 unfolding).  For a wide matrix only the
    triangular factor is formed (no explicit Q): ``A = K Q`` gives the singular values and ``U``
    from ``K``, and ``S·Vh = U^T A`` directly.
    """
    import torch

    m, n = A.shape
    if n >= 4 * m:
        K = _wide_r_factor(A)                                   # A = K Q, Q orthonormal rows
        U, S, _ = torch.linalg.svd(K)
        SVh = U.mT @ A
        safe = torch.where(S > 0, S, torch.ones_like(S))
        return U, S, SVh / safe[:, None], SVh
    if m >= 4 * n:
        Q, R = torch.linalg.qr(A, mode="reduced")             # A = Q R
        U, S, Vh = torch.linalg.svd(R)
        return Q @ U, S, Vh, None
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    return U, S, Vh, None


def gram_svd(A):
    """SVD of a wide matrix (``m <= n``) from the eigendecomposition of ``A A^T`` (``m x m``).

    Used on the randomized path when the sketch would cover the whole short side anyway (e.g.
    the 64 x 262144 first TT unfolding at bond 64).  ``U^T A`` is formed directly, so keeping
    every vector reconstructs ``A`` to rounding; only small singular values (below about
    ``sqrt(eps)·s_max``) lose relative accuracy.  Returns ``U, S, U^T A``.
    """
    import torch

    evals, evecs = torch.linalg.eigh(A @ A.mT)
    U = evecs.flip(-1)
    S = torch.sqrt(torch.clamp(evals.flip(-1), min=0))
    return U, S, U.mT @ A


def use_randomized(shape: tuple[int, int], cap: int | None, randomized: Any, oversample: int = OVERSAMPLE) -> bool:
    """Whether :func:`truncated_svd` takes the randomized path for a matrix of ``shape``."""
    full = min(shape)
    if randomized is True:
        return full > 1
    if randomized is False or cap is None:
        return False
    return full >= AUTO_MIN_SIDE and (cap + oversample) * AUTO_FACTOR <= full


def truncated_svd(
    A,
    trunc: Truncation,
    *,
    bond: str,
    cap: int | None = None,
    randomized: Any = "auto",
    seed: int = 0,
    oversample: int = OVERSAMPLE,
    power_iters: int = POWER_ITERS,
) -> SVDResult:
    """SVD of ``A`` truncated by ``trunc`` on ``bond`` (with the per-bond ``cap``)."""
    import torch

    full = min(A.shape)
    if not use_randomized(tuple(A.shape), cap, randomized, oversample):
        U, S, Vh, SVh = exact_svd(A)
        spectrum = S.detach().double().cpu()
        r = choose_rank(spectrum, trunc, bond=bond, cap=cap)
        tails = tail_squares(spectrum)
        return SVDResult(U[:, :r], S[:r], Vh[:r], spectrum, tails[r] ** 0.5, False, False,
                         SVh[:r] if SVh is not None else None)
    total_sq = float(torch.linalg.matrix_norm(A.double() if A.dtype != torch.float64 else A) ** 2)
    k = min(full, (cap + oversample) if cap is not None else max(32, oversample * 2))
    while True:
        SVh = None
        if k >= full and A.shape[0] <= A.shape[1]:
            U, S, SVh = gram_svd(A)
            Vh = None
        elif k >= full:
            U, S, Vh, _ = exact_svd(A)
        else:
            U, S, Vh = randomized_svd(A, k, power_iters=power_iters, seed=seed)
        spectrum = S.detach().double().cpu()
        r = choose_rank(spectrum, trunc, bond=bond, cap=cap, total_sq=total_sq)
        # A threshold rule that needs every computed value may need more: grow the sketch.
        if cap is None and r >= k and k < full:
            if 2 * k >= full:
                return truncated_svd(A, trunc, bond=bond, cap=cap, randomized=False)
            k = 2 * k
            continue
        tails = tail_squares(spectrum, total_sq)
        if SVh is not None:
            Vh = SVh[:r] / torch.where(S[:r] > 0, S[:r], torch.ones_like(S[:r]))[:, None]
            return SVDResult(U[:, :r], S[:r], Vh, spectrum, tails[r] ** 0.5, True, False, SVh[:r])
        return SVDResult(U[:, :r], S[:r], Vh[:r], spectrum, tails[r] ** 0.5, True, k < full)
