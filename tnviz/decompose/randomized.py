"""Truncated SVD of one matrix, exact or randomized (Halko, Martinsson, Tropp 2011; block Krylov
as in Musco & Musco 2015).

:func:`truncated_svd` is the one place every method asks for an SVD.  It decides between the
exact LAPACK/cuSOLVER SVD and a randomized one: with ``randomized="auto"`` the randomized path
is taken when a rank cap is known, the smaller matrix side is at least 256 and ``cap + oversample``
is at most an eighth of it; ``True`` forces it (with ``rtol``/``energy`` the sketch grows by
doubling until the threshold is met), ``False`` forbids it.

The randomized SVD is a block Krylov iteration that watches the energy it captures at the kept
rank and stops once that has converged (estimated missing energy below :data:`ENERGY_TOL`, 0.5%);
SPEC 5 asks for the result's captured energy ``1 - err^2`` within 2% of the exact one's.  If the
basis would pass half the short side first, ``"auto"`` runs the exact SVD instead (and says so:
``fell_back`` here, ``extra['randomized_fallback']`` on the decomposition).  Plain power
iteration with a fixed 2 steps, the earlier default, captured 10-17% less energy than the exact
SVD on flat spectra (issue 13).

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
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from ..errors import DecompositionError
from .truncation import Truncation, choose_rank, tail_squares

#: Default oversampling of the randomized SVD's block, and its number of Krylov steps (None:
#: until the captured energy converges, see :func:`block_krylov_svd`).
OVERSAMPLE = 10
POWER_ITERS: int | None = None
#: The randomized SVD stops adding Krylov steps when the energy it is still estimated to miss at
#: the kept rank is below this fraction of what it captured (SPEC 5 allows 2% on the whole result).
ENERGY_TOL = 0.005
#: The fewest Krylov steps the adaptive rule takes (it needs two increments to estimate the rest).
MIN_STEPS = 2
#: An increment below this fraction of the captured energy counts as converged (float rounding).
NOISE_FLOOR = 1e-6
#: "auto" lets the Krylov basis grow to this fraction of the short side; past it the exact SVD
#: is the cheaper way to the energy target, and "auto" falls back to it.
AUTO_MAX_BASIS = 0.5
#: "auto" goes randomized when (cap + oversample) * AUTO_FACTOR <= min(m, n): room for four
#: Krylov blocks within AUTO_MAX_BASIS of the short side.
AUTO_FACTOR = 8
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
    steps: int | None = None   # Krylov steps of the randomized SVD (None: exact or Gram path)
    gap: float | None = None   # its estimated missing energy at the kept rank (relative)
    fell_back: bool = False    # "auto" tried the randomized SVD, found it short, ran the exact one

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


def randomized_svd(A, k: int, *, power_iters: int = 2, seed: int = 0):
    """Rank-``k`` randomized SVD by simultaneous (power) iteration (Halko et al.; kept as the
    reference the block Krylov SVD of :func:`truncated_svd` is compared with) ``A ≈ U diag(S) Vh`` with ``power_iters`` subspace iterations
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


@dataclass
class KrylovResult:
    """A randomized block Krylov SVD ``A ≈ U diag(S) Vh`` over the whole Krylov basis, and how it stopped."""

    U: Any
    S: Any
    Vh: Any
    SVh: Any
    steps: int                 # Krylov steps taken (each: one product with A and one with A^T)
    converged: bool            # the estimated missing energy fell below the tolerance
    gap: float | None          # that estimate, relative to the captured energy at the target rank
    energies: list[float]      # captured energy at the target rank after each step (sum of S_r^2)


def block_krylov_svd(A, block: int, rank: int, *, steps: int | None = None, tol: float = ENERGY_TOL,
                     max_basis: int | None = None, seed: int = 0) -> KrylovResult:
    """Randomized block Krylov SVD (Musco & Musco 2015) of ``A`` with a ``block``-column start.

    The basis ``K = [X_0, X_1, ...]`` spans ``A·Ω, (A A^T) A·Ω, ...`` (orthonormalised block by
    block, two passes of Gram-Schmidt); ``B = K^T A`` is kept as ``Z = A^T K`` and its Gram
    matrix, so the energy captured at ``rank`` (the sum of the top ``rank`` squared singular
    values of ``B``, which can only grow: the Krylov spaces are nested) is known after each step
    at the cost of one small eigen-decomposition.  Without fixed ``steps`` it stops when that
    energy has converged: the increments shrink geometrically, so the energy still missing is
    estimated as ``inc·ρ/(1-ρ)`` with ``ρ`` the ratio of the last two increments, and the run
    stops when it is below ``tol`` of the captured energy (or when ``max_basis`` columns would
    be exceeded: ``converged=False``).  On flat spectra this converges in a few steps where
    simultaneous (power) iteration needs many more (``benchmarks/README_decompose.md``).
    """
    import torch

    m, n = A.shape
    block = max(1, min(block, m, n))
    rank = max(1, min(rank, block))
    max_basis = min(m, n) if max_basis is None else max(block, min(max_basis, m, n))
    gen = torch.Generator(device=A.device).manual_seed(int(seed))
    omega = torch.randn(n, block, generator=gen, device=A.device, dtype=A.dtype)
    blocks = max_basis // block if steps is None else min(steps + 1, max_basis // block)
    K = torch.empty(m, blocks * block, device=A.device, dtype=A.dtype)       # the basis, block by block
    Z = torch.empty(n, blocks * block, device=A.device, dtype=A.dtype)       # A^T K
    gram = torch.zeros(blocks * block, blocks * block, device=A.device, dtype=torch.float64)  # Z^T Z
    K[:, :block] = _qr(A @ omega)
    Z[:, :block] = A.mT @ K[:, :block]
    gram[:block, :block] = (Z[:, :block].mT @ Z[:, :block]).double()

    def captured(cols: int) -> float:
        ev = torch.linalg.eigvalsh(gram[:cols, :cols])
        return float(ev[-rank:].clamp(min=0).sum())

    energies = [captured(block)]
    converged, gap = False, None
    cols = block
    while True:
        j = cols // block - 1
        if steps is not None:
            if j >= steps:
                break
        elif j >= MIN_STEPS:
            inc, prev = energies[-1] - energies[-2], energies[-2] - energies[-3]
            top = max(energies[-1], 1e-300)
            if inc <= NOISE_FLOOR * top:
                converged, gap = True, max(inc, 0.0) / top
                break
            ratio = inc / prev if prev > 0 else 1.0
            if ratio < 1.0:
                gap = inc * ratio / (1.0 - ratio) / top
                if gap <= tol:
                    converged = True
                    break
        if cols + block > blocks * block:
            break
        Kc = K[:, :cols]
        Y = A @ Z[:, cols - block:cols]
        for _ in range(2):
            Y = Y - Kc @ (Kc.mT @ Y)
        X = _qr(Y)
        X = _qr(X - Kc @ (Kc.mT @ X))   # a near-exhausted Krylov space leaves Y tiny: re-orthogonalise
        new = slice(cols, cols + block)
        K[:, new] = X
        Z[:, new] = A.mT @ X
        cross = (Z[:, :cols + block].mT @ Z[:, new]).double()
        gram[:cols + block, new] = cross
        gram[new, :cols + block] = cross.mT
        cols += block
        energies.append(captured(cols))
    # B = K^T A = Z^T; its SVD from the Gram matrix already at hand (one small eigh instead of a
    # QR + SVD of the wide B).  S·Vh is formed directly as V^T Z^T = U^T A, so the factorization
    # is the exact projection of A on span(U) whatever rounding does to the smallest eigenvalues.
    evals, evecs = torch.linalg.eigh(gram[:cols, :cols])
    V = evecs.flip(-1).to(A.dtype)
    S = evals.flip(-1).clamp(min=0).sqrt().to(A.dtype)
    SVh = (Z[:, :cols] @ V).mT
    Vh = SVh / torch.where(S > 0, S, torch.ones_like(S))[:, None]
    return KrylovResult(K[:, :cols] @ V, S, Vh, SVh, cols // block - 1, converged, gap, energies)


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


#: Bytes a :func:`shared_svds` block keeps (matrices and their factors); the oldest go first.
SHARED_SVD_BYTES = 256 * 2 ** 20
_shared = threading.local()


@contextmanager
def shared_svds(max_bytes: int = SHARED_SVD_BYTES) -> Iterator[None]:
    """Within the block (on this thread), :func:`exact_svd` of a matrix equal bit for bit to one it
    already factored returns copies of that factorization instead of running LAPACK again (and
    :func:`shared`'s other products likewise: the whitened weight ``W·L`` of a data-aware MPO,
    which the bond split and the decomposition both form).

    For callers that decompose one weight several ways: ``method="auto"``'s candidates
    (:func:`tnviz.model.auto.candidates`) run TT-SVD and TR-SVD on the same whitened tensor, whose
    first unfoldings are the same matrix, and the bond split's candidates meet the same second
    unfolding.  An SVD of the same input on the same thread settings gives the same bytes, so the
    results are those of the SVDs run afresh; the match is checked on the whole matrix
    (``torch.equal``), never on a summary.
    """
    outer = getattr(_shared, "cache", None)
    _shared.cache = {"entries": [], "bytes": 0, "max": int(max_bytes)}
    try:
        yield
    finally:
        _shared.cache = outer


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def exact_svd(A):
    """Thin SVD by LAPACK/cuSOLVER, returning ``U, S, Vh, S·Vh``.

    A strongly rectangular matrix is first reduced by a QR factorization (exact, and several
    times faster than a direct SVD of a 64 x 262144 unfolding).  For a wide matrix only the
    triangular factor is formed (no explicit Q): ``A = K Q`` gives the singular values and ``U``
    from ``K``, and ``S·Vh = U^T A`` directly.  Inside :func:`shared_svds` a repeated matrix is
    factored once.
    """
    return shared("svd", None, A, _exact_svd)


def shared(kind: str, tag: Any, A, compute: Callable):
    """``compute(A)`` (a tensor or a tuple of tensors and ``None``), or inside :func:`shared_svds`
    copies of what it gave for a matrix equal bit for bit to ``A`` with the same ``kind`` and the
    same ``tag`` object (by identity: e.g. the factored covariance a product is taken with)."""
    import torch

    cache = getattr(_shared, "cache", None)
    if cache is None:
        return compute(A)

    def copies(parts):
        return tuple(None if x is None else x.clone() for x in parts)

    for (k, t, key), parts, single in cache["entries"]:
        if (k == kind and t is tag and key.shape == A.shape and key.dtype == A.dtype and key.device == A.device
                and torch.equal(key, A)):
            found = copies(parts)
            return found[0] if single else found
    out = compute(A)
    single = isinstance(out, torch.Tensor)
    kept = ((kind, tag, A.clone()), copies((out,) if single else out), single)
    size = _nbytes((kept[0][2], *kept[1]))
    if size <= cache["max"]:
        entries = cache["entries"]
        while entries and cache["bytes"] + size > cache["max"]:
            old = entries.pop(0)
            cache["bytes"] -= _nbytes((old[0][2], *old[1]))
        entries.append(kept)
        cache["bytes"] += size
    return out


def _exact_svd(A):
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


def _exact(A, trunc: Truncation, bond: str, cap: int | None, fell_back: bool = False) -> SVDResult:
    U, S, Vh, SVh = exact_svd(A)
    spectrum = S.detach().double().cpu()
    r = choose_rank(spectrum, trunc, bond=bond, cap=cap)
    tails = tail_squares(spectrum)
    return SVDResult(U[:, :r], S[:r], Vh[:r], spectrum, tails[r] ** 0.5, False, False,
                     SVh[:r] if SVh is not None else None, fell_back=fell_back)


def truncated_svd(
    A,
    trunc: Truncation,
    *,
    bond: str,
    cap: int | None = None,
    randomized: Any = "auto",
    seed: int = 0,
    oversample: int = OVERSAMPLE,
    power_iters: int | None = POWER_ITERS,
) -> SVDResult:
    """SVD of ``A`` truncated by ``trunc`` on ``bond`` (with the per-bond ``cap``).

    The randomized path is a block Krylov SVD with a ``cap + oversample`` block; ``power_iters``
    fixes its number of Krylov steps, ``None`` (default) adds steps until the energy captured at
    the kept rank has converged (:data:`ENERGY_TOL`).  With ``randomized="auto"`` a run that has
    not converged when its basis reaches :data:`AUTO_MAX_BASIS` of the short side is dropped for
    the exact SVD (``fell_back=True`` on the result).
    """
    import torch

    full = min(A.shape)
    if not use_randomized(tuple(A.shape), cap, randomized, oversample):
        return _exact(A, trunc, bond, cap)
    if power_iters is not None and (isinstance(power_iters, bool) or not isinstance(power_iters, int)
                                    or power_iters < 0):
        raise DecompositionError(f"power_iters (Krylov steps) must be a non-negative integer or None; got {power_iters!r}")
    total_sq = float(torch.linalg.matrix_norm(A.double() if A.dtype != torch.float64 else A) ** 2)
    k = min(full, (cap + oversample) if cap is not None else max(32, oversample * 2))
    max_basis = full if randomized is True else max(k, int(full * AUTO_MAX_BASIS))
    while True:
        SVh = steps = gap = None
        # A Krylov basis with fewer than MIN_STEPS steps is a bare sketch; where not even that fits
        # within the short side, the Gram / exact SVD of that side is the fast path.
        whole = k * (MIN_STEPS + 1) > max_basis if power_iters is None else k * (power_iters + 1) > full
        if whole and A.shape[0] <= A.shape[1]:
            U, S, SVh = gram_svd(A)
            Vh = None
        elif whole:
            U, S, Vh, _ = exact_svd(A)
        else:
            kr = block_krylov_svd(A, k, cap if cap is not None else k, steps=power_iters, max_basis=max_basis,
                                  seed=seed)
            if not kr.converged and power_iters is None and randomized == "auto":
                return _exact(A, trunc, bond, cap, fell_back=True)
            U, S, Vh, SVh, steps, gap = kr.U, kr.S, kr.Vh, kr.SVh, kr.steps, kr.gap
            U, S, Vh, SVh = U[:, :k], S[:k], Vh[:k], SVh[:k]   # the leading k are the accurate ones
        spectrum = S.detach().double().cpu()
        r = choose_rank(spectrum, trunc, bond=bond, cap=cap, total_sq=total_sq)
        # A threshold rule that needs every computed value may need more: grow the sketch.
        if cap is None and not whole and r >= k:
            if 2 * k >= full:
                return truncated_svd(A, trunc, bond=bond, cap=cap, randomized=False)
            k = 2 * k
            continue
        tails = tail_squares(spectrum, total_sq)
        if SVh is not None and Vh is None:
            Vh = SVh[:r] / torch.where(S[:r] > 0, S[:r], torch.ones_like(S[:r]))[:, None]
            return SVDResult(U[:, :r], S[:r], Vh, spectrum, tails[r] ** 0.5, True, False, SVh[:r])
        return SVDResult(U[:, :r], S[:r], Vh[:r], spectrum, tails[r] ** 0.5, True, not whole,
                         SVh[:r] if SVh is not None else None, steps=steps, gap=gap)


def describe(results: dict[str, SVDResult]) -> dict[str, Any]:
    """What ran on each bond, for a method's ``extra``: ``randomized`` (the bonds whose SVD was
    randomized), ``krylov_steps`` (their Krylov steps), ``randomized_fallback`` (bonds where
    ``randomized="auto"`` tried the randomized SVD, found it short of the energy target, and ran
    the exact one)."""
    out: dict[str, Any] = {"randomized": [b for b, r in results.items() if r.randomized]}
    steps = {b: r.steps for b, r in results.items() if r.randomized and r.steps is not None}
    if steps:
        out["krylov_steps"] = steps
    fallback = [b for b, r in results.items() if r.fell_back]
    if fallback:
        out["randomized_fallback"] = fallback
    return out
