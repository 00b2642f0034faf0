"""Neuron-order search: a permutation of a weight's output index that lowers its MPO/TT error.

The hidden neurons of a feed-forward pair are interchangeable (permuting the rows of ``W_in`` and
the columns of ``W_out`` leaves the model's function unchanged), so the order in which they are
stored is arbitrary; but a tensor train over the factorized output index ``n = (a_1, ..., a_k)``
(``a_1`` most significant) only sees structure that is aligned with that order.  This module
searches for an order in which the train's unfoldings are lower-rank.

The objective is exact and cheap: with every input leg on the last core (the data-aware MPO's
placement, :func:`tnviz.model.apply.inputs_last_cores`) the decomposition of ``W`` under the input
covariance ``C = L L^T`` is the TT-SVD of ``M = W·L``, whose data error is
``sqrt(sum of the squared discarded singular values) / ||M||`` (:mod:`tnviz.decompose.split`).
The rows of ``M`` are the (whitened) neurons; a permutation of them is scored by
:func:`tt_error` at given bond ranks.

The search (:func:`search_order`), deterministic for a given ``seed``:

1. **Starts.** The stored order; and a spectral order aligned with the leg dims: the neurons are
   cut into ``d_1`` equal blocks along the leading principal coordinate of ``M``, each block into
   ``d_2`` along the second, and so on (a recursive bisection generalised to the leg sizes, on
   global coordinates so that position ``a_j`` means the same in every block); given the input
   legs, the nearest-Kronecker order (:func:`kron_order`: each neuron's row split into its leading
   Kronecker factors over the input legs, neurons grouped by those factors); plus ``restarts``
   seeded random orders.
2. **Refinement** (alternating, on the truncation error at the ranks, from the start that scores
   best; every start is scored by :func:`tt_error`'s loss): the TT-SVD at the ranks
   gives a reconstruction ``M~``; every neuron is then moved to the slot whose reconstructed row
   it matches best, by one linear assignment maximising ``sum_i <m_i, m~_slot(i)>``.  That
   assignment cannot raise ``||M_p - M~||``, and the projection of the re-ordered ``M`` is no
   farther than ``M~`` (for one bond the step is monotone; for several TT-SVD is quasi-optimal,
   so the best order seen is kept).  It stops when a sweep no longer lowers the error.
3. The stored order is kept unless another order is strictly better, so the search never
   returns a worse error than the identity.

>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> A, B = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g, dtype=torch.float64)
>>> W = torch.kron(A, B)[torch.randperm(24, generator=g)]          # a Kronecker product, rows shuffled
>>> found = search_order(W, (4, 6), (2, 6), in_dims=(2, 3))
>>> found.error_before > 0.1, found.error_after < 1e-6
(True, True)
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import DecompositionError


@dataclass(frozen=True)
class OrderSearch:
    """The order found: ``perm[k]`` is the stored index of the neuron placed at position ``k``
    (``weight[perm]`` is the re-ordered weight); the errors at ``ranks`` before and after."""

    perm: tuple[int, ...]
    dims: tuple[int, ...]
    ranks: tuple[int, ...]
    error_before: float
    error_after: float
    start: str              # which start the kept order came from: identity, spectral, random k
    sweeps: int             # refinement sweeps that lowered the error (from the best-scoring start)
    seconds: float
    history: tuple[tuple[str, float], ...] = field(default=(), repr=False)

    @property
    def identity(self) -> bool:
        return all(i == p for i, p in enumerate(self.perm))


def _check_dims(n: int, dims: Sequence[int], ranks: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    dims = tuple(int(d) for d in dims)
    ranks = tuple(int(r) for r in ranks)
    if not dims or any(d < 1 for d in dims) or math.prod(dims) != n:
        raise DecompositionError(f"the order search needs leg dims whose product is the index size {n}; got {list(dims)}")
    if len(ranks) != len(dims) or any(r < 1 for r in ranks):
        raise DecompositionError(
            f"the order search needs one positive rank per bond ({len(dims)}: between the {len(dims)} index cores "
            f"and the rest); got {list(ranks)}")
    return dims, ranks


def _tt(M, dims: Sequence[int], ranks: Sequence[int], reconstruct: bool):
    """TT-SVD of ``M`` (rows: the index of sizes ``dims``, row-major; columns: the rest, one core)
    at bond caps ``ranks``: the squared discarded weight, and the reconstruction if asked."""
    import torch

    lost = 0.0
    C = M.reshape(-1)
    r_prev = 1
    cores = []
    for d, cap in zip(dims, ranks):
        C = C.reshape(r_prev * d, -1)
        # from the eigenvectors of the smaller Gram matrix: several times faster than an SVD of these
        # wide or tall unfoldings, and its discarded eigenvalues are the squared discarded singular values
        wide = C.shape[0] <= C.shape[1]
        evals, evecs = torch.linalg.eigh(C @ C.mT if wide else C.mT @ C)
        evals, evecs = evals.flip(-1).clamp_min(0), evecs.flip(-1)
        r = max(1, min(cap, evals.shape[0]))
        lost += float(evals[r:].sum())
        if wide:
            U = evecs[:, :r]
        else:  # U = C V / s on the kept directions (null directions: a zero column, they carry nothing)
            keep = evals[:r] > 1e-13 * float(evals[0]) if float(evals[0]) > 0 else torch.zeros_like(evals[:r], dtype=torch.bool)
            inv = torch.where(keep, evals[:r].clamp_min(1e-300).rsqrt(), torch.zeros_like(evals[:r]))
            U = (C @ evecs[:, :r]) * inv
        if reconstruct:
            cores.append((U, r_prev))
        C = U.mT @ C  # = S Vh on the kept directions
        r_prev = r
    if not reconstruct:
        return lost, None
    R = C  # (r_k, rest); back through the cores: (r_{j-1} d_j, r_j) @ (r_j, ...) -> (r_{j-1}, d_j ...)
    for U, r_before in reversed(cores):
        R = (U @ R).reshape(r_before, -1)
    return lost, R.reshape(M.shape)


def tt_error(M, dims: Sequence[int], ranks: Sequence[int]) -> float:
    """Relative error ``||M - M~|| / ||M||`` of the TT-SVD of ``M`` (``(n, rest)``, the rows
    factorized as ``dims``) with bond caps ``ranks`` (one per bond: between consecutive index
    cores, and the last index core to the rest)."""
    dims, ranks = _check_dims(M.shape[0], dims, ranks)
    total = float((M.double() ** 2).sum())
    lost, _ = _tt(M, dims, ranks, False)
    return math.sqrt(max(lost, 0.0) / total) if total > 0 else 0.0


def whiten(weight, input_cov=None, eps: float = 1e-6):
    """``W·L`` with ``L L^T = C + eps·mean(diag C)·I`` (float64); ``W`` itself without a covariance.
    The rows of the result are the neurons in the coordinates where the data error is a Frobenius norm."""
    import torch

    W = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    if input_cov is None:
        return W
    C = torch.as_tensor(input_cov).to(W.device, torch.float64)
    if C.shape != (W.shape[1], W.shape[1]):
        raise DecompositionError(f"input_cov must be {W.shape[1]}x{W.shape[1]} for a weight of shape "
                                 f"{list(weight.shape)}; got {list(C.shape)}")
    C = (C + C.mT) / 2
    scale = float(torch.diagonal(C).mean().clamp_min(1e-30))
    L, info = torch.linalg.cholesky_ex(C + eps * scale * torch.eye(C.shape[0], dtype=C.dtype, device=C.device))
    if int(info) != 0:
        raise DecompositionError(f"input_cov must be positive semi-definite; its Cholesky factor fails at row {int(info)}")
    return W @ L


def spectral_order(M, dims: Sequence[int]):
    """The spectral start: cut the rows into ``dims[0]`` equal blocks along the leading principal
    coordinate, each block into ``dims[1]`` along the second, and so on (global coordinates, so a
    position means the same in every block)."""
    import torch

    n = M.shape[0]
    X = M - M.mean(0, keepdim=True)
    k = min(len(dims), min(X.shape))
    U, S, _ = torch.linalg.svd(X, full_matrices=False)
    coords = U[:, :k] * S[:k]
    order = torch.arange(n, device=M.device)
    blocks = [order]
    for level, d in enumerate(dims):
        c = coords[:, min(level, k - 1)]
        nxt = []
        for block in blocks:
            sorted_block = block[torch.argsort(c[block], stable=True)]
            nxt.extend(sorted_block.chunk(d) if d > 1 else [sorted_block])
        blocks = nxt
    return torch.cat(blocks)


def _balanced_labels(D, size: int):
    """Labels ``argmin``-like but with every cluster taking exactly ``size`` rows: the (row, centre)
    pairs are taken greedily from the closest, skipping full centres and labelled rows."""
    import torch

    n, k = D.shape
    order = torch.argsort(D.reshape(-1), stable=True)
    labels = [-1] * n
    room = [size] * k
    left = n
    for i, j in zip(torch.div(order, k, rounding_mode="floor").tolist(), (order % k).tolist()):
        if labels[i] < 0 and room[j] > 0:
            labels[i] = j
            room[j] -= 1
            left -= 1
            if not left:
                break
    return torch.as_tensor(labels, dtype=torch.long)


def _balanced_kmeans(F, k: int, g, iters: int = 8):
    """Labels of the rows of ``F`` in ``k`` clusters of equal size (``len(F) / k``): k-means++
    seeding, then k-means with a greedy balanced assignment (closest pairs first)."""
    import torch

    n = F.shape[0]
    size = n // k
    if k == 1:
        return torch.zeros(n, dtype=torch.long)
    centres = [F[int(torch.randint(n, (1,), generator=g))]]  # k-means++ seeding
    diff = torch.empty_like(F)  # ((F - c) ** 2).sum(1) in one buffer: the same numbers, no F-sized allocations per centre

    def sq_dist(c):
        torch.sub(F, c, out=diff)
        return diff.mul_(diff).sum(1)

    d2 = sq_dist(centres[0])
    for _ in range(1, k):
        probs = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full((n,), 1.0 / n, dtype=F.dtype)
        centres.append(F[int(torch.multinomial(probs.float().cpu(), 1, generator=g))])
        d2 = torch.minimum(d2, sq_dist(centres[-1]))
    C = torch.stack(centres)
    labels = None
    for _ in range(int(iters)):
        new = _balanced_labels(torch.cdist(F, C), size)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        C = torch.stack([F[labels == j].mean(0) for j in range(k)])
    return labels


def _rank_one(M, first: int):
    """Each row of ``M`` reshaped to ``(first, rest)``: its leading singular pair (``u`` unit, ``s·v``)."""
    import torch

    X = M.reshape(M.shape[0], first, -1)
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)
    return U[:, :, 0], S[:, :1] * Vh[:, 0, :]


def kron_order(M, dims: Sequence[int], in_dims: Sequence[int], seed: int = 0):
    """The nearest-Kronecker start: each neuron's row, reshaped over the input legs
    ``(in_dims[0], rest)``, is split into its leading factors ``u ⊗ v``; the neurons are cut into
    ``dims[0]`` blocks of equal size by ``u`` (balanced k-means on ``u u^T``, sign-free), into
    ``n / dims[0]`` slot classes by ``v``, each block's neurons are assigned one per slot class,
    and the slot classes are ordered the same way, recursively, over ``dims[1:]`` and
    ``in_dims[1:]``.  Exact on a shuffled Kronecker product whose factors sit on those legs.
    ``None`` where the input legs are too few to pair with the output legs."""
    import torch
    from scipy.optimize import linear_sum_assignment

    dims, in_dims = tuple(dims), tuple(in_dims)
    n = M.shape[0]
    if len(dims) == 1:
        return torch.arange(n)
    if len(in_dims) < len(dims) or math.prod(in_dims) != M.shape[1]:
        return None
    g = torch.Generator().manual_seed(int(seed))
    Mc = M.detach().cpu().double()
    u, v = _rank_one(Mc, in_dims[0])
    m = n // dims[0]
    feats = lambda x: (x[:, :, None] * x[:, None, :]).reshape(x.shape[0], -1)  # noqa: E731  sign-free
    vn = v / v.norm(dim=1, keepdim=True).clamp_min(1e-300)
    fv = feats(vn)
    blocks = _balanced_kmeans(feats(u), dims[0], g)
    classes = _balanced_kmeans(fv, m, g)
    centre = torch.stack([fv[classes == s].mean(0) for s in range(m)])
    slot_of = torch.empty(n, dtype=torch.long)  # each block: its neurons one per slot class
    for a in range(dims[0]):
        members = torch.nonzero(blocks == a).flatten()
        cost = torch.cdist(fv[members], centre).cpu().numpy()
        rows, cols = linear_sum_assignment(cost)
        slot_of[members[torch.as_tensor(rows)]] = torch.as_tensor(cols)
    reps = []
    for s in range(m):  # a class's representative: its members' v, signs aligned to the first
        vs = v[slot_of == s]
        signs = torch.sign(vs @ vs[0]).clamp_min(0) * 2 - 1
        reps.append((vs * signs[:, None]).mean(0))
    inner = kron_order(torch.stack(reps), dims[1:], in_dims[1:], seed)
    if inner is None:
        return None
    position = torch.empty(m, dtype=torch.long)
    position[inner] = torch.arange(m)
    perm = torch.empty(n, dtype=torch.long)
    for a in range(dims[0]):
        members = torch.nonzero(blocks == a).flatten()
        perm[a * m + position[slot_of[members]]] = members
    return perm.to(M.device)


def _assign(M, target):
    """The permutation ``p`` maximising ``sum_k <M[p[k]], target[k]>`` (one linear assignment)."""
    import numpy as np
    import torch
    from scipy.optimize import linear_sum_assignment

    score = (target @ M.mT).cpu().numpy()  # score[slot, neuron]
    slots, neurons = linear_sum_assignment(score, maximize=True)
    perm = np.empty(M.shape[0], dtype=np.int64)
    perm[slots] = neurons
    return torch.as_tensor(perm, device=M.device)


def refine(M, perm, dims: Sequence[int], ranks: Sequence[int], sweeps: int = 20, tol: float = 1e-12):
    """Alternate the TT-SVD at ``ranks`` and the assignment of neurons to its reconstruction's rows,
    from ``perm``; returns the best order seen, its squared loss, and the sweeps that lowered it."""
    lost, recon = _tt(M[perm], dims, ranks, True)
    best, best_lost, improved = perm, lost, 0
    for _ in range(int(sweeps)):
        perm = _assign(M, recon)
        lost, recon = _tt(M[perm], dims, ranks, True)
        if lost < best_lost * (1 - tol) - 1e-300:
            best, best_lost, improved = perm, lost, improved + 1
        else:
            break
    return best, best_lost, improved


def search_order(weight, dims: Sequence[int], ranks: Sequence[int], *, input_cov: Any = None,
                 in_dims: Sequence[int] | None = None, seed: int = 0, sweeps: int = 20, restarts: int = 2,
                 spectral: bool = True) -> OrderSearch:
    """A permutation of the output index (rows) of ``weight`` that lowers the (data) error of its
    TT-SVD with the rows factorized as ``dims`` and bond caps ``ranks``; see the module docstring.

    ``input_cov``: the input covariance (the search then scores the data error, as the
    data-aware MPO with every input leg on its last core sees it).  ``in_dims``: the input legs,
    for the nearest-Kronecker start (:func:`kron_order`, on the whitened rows).  ``restarts``:
    seeded random starts beside the stored, spectral and Kronecker orders.  Never worse than the
    stored order."""
    import torch

    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise DecompositionError(f"the order search needs a 2-D weight tensor (out, in); got {getattr(weight, 'shape', type(weight))}")
    dims, ranks = _check_dims(weight.shape[0], dims, ranks)
    if int(restarts) < 0 or int(sweeps) < 0:
        raise DecompositionError(f"restarts and sweeps must be non-negative; got {restarts}, {sweeps}")
    started = time.perf_counter()
    M = whiten(weight, input_cov)
    n = M.shape[0]
    total = float((M ** 2).sum())
    rel = (lambda lost: math.sqrt(max(lost, 0.0) / total)) if total > 0 else (lambda lost: 0.0)
    identity = torch.arange(n, device=M.device)
    base_lost, _ = _tt(M, dims, ranks, False)
    g = torch.Generator().manual_seed(int(seed))
    starts = [("identity", identity)]
    if spectral and n > 1:
        starts.append(("spectral", spectral_order(M, dims)))
    if in_dims is not None and len(dims) > 1:
        kron = kron_order(M, dims, in_dims, seed)
        if kron is not None:
            starts.append(("kronecker", kron))
    starts += [(f"random {k + 1}", torch.randperm(n, generator=g).to(M.device)) for k in range(int(restarts))]
    scored = []
    for label, start in starts:  # every start scored; the refinement runs from the best of them
        lost, _ = (base_lost, None) if label == "identity" else _tt(M[start], dims, ranks, False)
        scored.append((lost, len(scored), label, start))
    history = [(label, rel(lost)) for lost, _, label, _ in scored]
    lost, _, best_start, start = min(scored, key=lambda t: (t[0], t[1]))
    best, best_lost, total_sweeps = refine(M, start, dims, ranks, sweeps) if sweeps else (start, lost, 0)
    if total_sweeps:
        history.append((f"{best_start}, refined", rel(best_lost)))
    # the stored order unless another is better by more than rounding: the discarded weight is a sum
    # of eigenvalues of Gram matrices, each known to about eps times the total (where the stored
    # order is already exact, another order "won" by 7e-9 against 7e-9 on one CPU's BLAS)
    noise = 64 * torch.finfo(M.dtype).eps * total
    if not best_lost < base_lost * (1 - 1e-9) - noise:
        best, best_lost, best_start = identity, base_lost, "identity"
    elif total_sweeps:
        best_start = f"{best_start}, refined"
    return OrderSearch(tuple(int(i) for i in best.tolist()), dims, ranks, rel(base_lost), rel(best_lost), best_start,
                       total_sweeps, time.perf_counter() - started, tuple(history))


def check_permutation(perm: Sequence[int], n: int, what: str = "a permutation") -> tuple[int, ...]:
    """``perm`` as a tuple if it is a permutation of ``0..n-1``; else one clear error naming the rule."""
    try:
        values = tuple(int(p) for p in perm)
    except (TypeError, ValueError):
        raise DecompositionError(f"{what} must be a list of integers; got {type(perm).__name__}") from None
    if len(values) != n:
        raise DecompositionError(f"{what} must list each of the {n} indices once; got {len(values)} entries")
    if sorted(values) != list(range(n)):
        seen, bad = set(), None
        for v in values:
            if not 0 <= v < n or v in seen:
                bad = v
                break
            seen.add(v)
        raise DecompositionError(f"{what} must list each of 0..{n - 1} exactly once; {bad} is "
                                 f"{'out of range' if bad is not None and not 0 <= bad < n else 'repeated'}")
    return values
