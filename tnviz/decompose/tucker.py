"""Tucker decomposition: HOOI (higher-order orthogonal iteration) from a truncated-HOSVD start
(De Lathauwer et al. 2000), as TensorLy's default does.

One factor ``U_k[leg_k, r_k]`` per leg (outputs first, then inputs, as
:func:`tnviz.builders.tucker` orders them); the core ``G = T ×_k U_k^T``.  The HOSVD start takes
the leading left singular vectors of each mode-k unfolding; each HOOI sweep then replaces every
``U_k`` in turn by the leading left singular vectors of ``T`` projected on the other factors,
which can only raise ``||G||`` and so only lower the error ``sqrt(||T||^2 - ||G||^2)``.

``hooi_iters``: ``None`` (default) sweeps until the relative error improves by less than
:data:`HOOI_TOL` (at least :data:`HOOI_MIN_ITERS`, at most :data:`HOOI_MAX_ITERS` sweeps); ``0`` is plain HOSVD; ``n`` runs exactly
``n`` sweeps.  ``extra['hooi_history']`` holds the error after each sweep.

Ranks:

* ``max_rank``: per-mode caps (the HOSVD error obeys ``||T - T~||^2 <= sum_k discarded_k^2``).
* ``energy``: the kept fraction of each mode's squared spectrum.
* ``target_params``: per-mode ranks chosen greedily from the full HOSVD (:func:`choose_ranks`):
  starting from rank 1 everywhere, grow the mode whose next slice of the HOSVD core buys the most
  error reduction per added parameter, while the network fits the budget.  The error of any rank
  tuple is read exactly from prefix sums of the squared full HOSVD core, so the choice uses the
  true HOSVD error, not the bound.
* ``rtol``: the same greedy growth, stopped at the first ranks whose HOSVD error is within
  ``rtol`` (measured, or from the per-mode bound where rounding blurs the measured one), then
  trimmed mode by mode while it stays within; HOOI only lowers the error, so
  ``||W - W~|| <= rtol·||W||`` holds.

>>> import torch
>>> from tnviz.decompose import decompose
>>> W = torch.randn(64, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
>>> hosvd_only = decompose(W, "tucker", in_dims=[8, 6], out_dims=[8, 8], max_rank=4, hooi_iters=0)
>>> hooi = decompose(W, "tucker", in_dims=[8, 6], out_dims=[8, 8], max_rank=4)
>>> hooi.rel_error <= hosvd_only.rel_error, hooi.algorithm.startswith("HOOI")
(True, True)
"""
from __future__ import annotations

import math
from typing import Any, Sequence

from ..builders import tucker
from ..errors import RankError
from .legs import Legs
from .randomized import POWER_ITERS, describe, truncated_svd
from .result import MethodOutput
from .truncation import Truncation, choose_rank, tail_squares

#: HOOI stops when a sweep lowers the relative error by less than this (absolute, like
#: TensorLy's ``tol``, 10x tighter: TensorLy stops at 1e-4; 1e-6 would cost twice the sweeps on
#: MiniLM's weights for 5e-5 of error) ...
HOOI_TOL = 1e-5
#: ... after at least this many sweeps (as TensorLy: so the default never stops before it and is
#: never less accurate than TensorLy's default from the same start) ...
HOOI_MIN_ITERS = 3
#: ... and at most this many.
HOOI_MAX_ITERS = 50


def unfold(T, mode: int):
    """The mode-``mode`` unfolding ``(d_mode, prod(other dims))``."""
    return T.movedim(mode, 0).reshape(T.shape[mode], -1)


def mode_product(T, M, mode: int):
    """``T ×_mode M``: contract axis ``mode`` of ``T`` with the columns of ``M`` (``M[new, old]``)."""
    import torch

    return torch.movedim(torch.tensordot(M, T, dims=([1], [mode])), 0, mode)


def project(T, factors, skip: int | None = None, modes=None):
    """``T ×_k U_k^T`` over ``modes`` (default: every mode except ``skip``), the modes that shrink
    most first."""
    if modes is None:
        modes = [k for k in range(len(factors)) if k != skip]
    G = T
    for k in sorted(modes, key=lambda k: factors[k].shape[1] / factors[k].shape[0]):
        G = mode_product(G, factors[k].mT, k)
    return G


def tucker_network(legs: Legs, ranks):
    return tucker(legs.in_dims, legs.out_dims, list(ranks), in_names=legs.in_names, out_names=legs.out_names)


def tucker_params(dims: Sequence[int], ranks: Sequence[int]) -> int:
    """Parameters of a Tucker network: the core plus one ``d_k x r_k`` factor per mode."""
    return math.prod(ranks) + sum(d * r for d, r in zip(dims, ranks))


def _relative_error(norm: float, core_sq: float) -> float:
    return math.sqrt(max(norm ** 2 - core_sq, 0.0)) / norm if norm else 0.0


def leading_left_vectors(Y, r: int):
    """The ``r`` leading left singular vectors of a short ``Y`` (``d x M``, small ``d``), from the
    eigenvectors of its ``d x d`` Gram matrix: HOOI needs only that subspace, and a ``d x d``
    eigen-decomposition is far cheaper than an SVD of the wide unfolding."""
    import torch

    _, vectors = torch.linalg.eigh(Y @ Y.mT)
    return vectors[:, -r:].flip(-1).contiguous()


def hooi(T, factors: list, *, norm: float, iters: int | None = None, tol: float = HOOI_TOL,
         min_iters: int = HOOI_MIN_ITERS, max_iters: int = HOOI_MAX_ITERS, **_: Any) -> tuple[list, Any, list[float], bool]:
    """HOOI sweeps from ``factors`` (orthonormal columns, ranks fixed).  ``iters=None``: until a
    sweep improves the relative error by less than ``tol`` (at least ``min_iters``, at most
    ``max_iters`` sweeps); else exactly
    ``iters`` sweeps.  Returns the best factors seen (the start included), their core, the error
    after each sweep, and whether it converged.  (Each factor update maximises ``||G||`` over that
    factor, so the error never rises in exact arithmetic; the best is kept against rounding.)"""
    N = len(factors)
    factors = list(factors)
    G = project(T, factors)
    best_sq = float(G.double().pow(2).sum())
    best = (list(factors), G)
    history: list[float] = []
    previous = _relative_error(norm, best_sq)
    limit = max_iters if iters is None else int(iters)
    converged = False
    # Modes in two halves: while one half is updated the other's factors are fixed, so T is
    # projected on them once per half-sweep instead of once per mode (the same Gauss-Seidel order).
    halves = [list(range(0, max(1, N // 2))), list(range(max(1, N // 2), N))]
    for _ in range(limit):
        for half in halves:
            base = project(T, factors, modes=[j for j in range(N) if j not in half])
            for k in half:
                Y = project(base, factors, modes=[j for j in half if j != k])
                factors[k] = leading_left_vectors(unfold(Y, k), factors[k].shape[1])
        G = project(T, factors)
        core_sq = float(G.double().pow(2).sum())
        error = _relative_error(norm, core_sq)
        history.append(error)
        if core_sq > best_sq:
            best_sq, best = core_sq, (list(factors), G)
        if iters is None and len(history) >= min_iters and previous - error < tol:
            converged = True
            break
        previous = error
    return best[0], best[1], history, converged


# ---------------------------------------------------------------- per-mode ranks from the full HOSVD
class _CoreEnergy:
    """Squared norm of every leading corner ``G[:r_1, ..., :r_N]`` of the full HOSVD core, in O(1)
    per query from N-D prefix sums (``kept(r)``), and the per-mode bound of what a corner drops."""

    def __init__(self, G_full, spectra: Sequence, norm: float):
        import torch

        P = G_full.double().pow(2)
        for axis in range(P.ndim):
            P = torch.cumsum(P, dim=axis)
        self.prefix = P.cpu()
        self.full = tuple(G_full.shape)
        self.total = norm ** 2
        self.tails = [tail_squares(s) for s in spectra]
        self.noise = 100 * torch.finfo(G_full.dtype).eps * self.total

    def kept(self, ranks: Sequence[int]) -> float:
        return float(self.prefix[tuple(r - 1 for r in ranks)])

    def discarded(self, ranks: Sequence[int]) -> float:
        """The squared HOSVD error of ``ranks``: measured (``||T||^2 - kept``), or the per-mode
        bound where that is lower or where the measured value is down at the rounding level of
        the subtraction (then only the bound is safe)."""
        measured = self.total - self.kept(ranks)
        bound = sum(t[r] for t, r in zip(self.tails, ranks))
        if measured <= self.noise:
            return bound
        return min(measured, bound)


def _grow(energy: _CoreEnergy, dims: Sequence[int], ranks: list[int], target_params: int | None,
          done=lambda ranks: False) -> list[int]:
    """Grow ``ranks`` one mode at a time, each time the step with the most kept energy per added
    parameter among those that fit ``target_params``, until ``done(ranks)`` or nothing fits."""
    ranks = list(ranks)
    full = energy.full
    while not done(ranks):
        base_kept, base_params = energy.kept(ranks), tucker_params(dims, ranks)
        best, best_score = None, -1.0
        for k in range(len(full)):
            if ranks[k] >= full[k]:
                continue
            ranks[k] += 1
            params = tucker_params(dims, ranks)
            gain = energy.kept(ranks) - base_kept
            ranks[k] -= 1
            if target_params is not None and params > target_params:
                continue
            score = gain / (params - base_params)
            if score > best_score:
                best, best_score = k, score
        if best is None:
            break
        ranks[best] += 1
    return ranks


def _exchange(energy: _CoreEnergy, dims: Sequence[int], ranks: list[int], target_params: int,
              max_passes: int = 100) -> list[int]:
    """Local search after the greedy growth, which can stall with budget left: move one rank from
    mode ``a`` to mode ``b``, grow again into what the budget then allows, and keep the best such
    move while it raises the kept energy."""
    full = energy.full
    for _ in range(max_passes):
        best, best_kept = None, energy.kept(ranks)
        for a in range(len(full)):
            for b in range(len(full)):
                if a == b or ranks[a] <= 1 or ranks[b] >= full[b]:
                    continue
                moved = list(ranks)
                moved[a] -= 1
                moved[b] += 1
                if tucker_params(dims, moved) > target_params:
                    continue
                moved = _grow(energy, dims, moved, target_params)
                kept = energy.kept(moved)
                if kept > best_kept * (1 + 1e-12):
                    best, best_kept = moved, kept
        if best is None:
            break
        ranks = best
    return ranks


def choose_ranks(energy: _CoreEnergy, dims: Sequence[int], *, target_params: int | None = None,
                 max_discarded: float | None = None) -> list[int]:
    """Per-mode ranks by greedy growth on the full HOSVD.

    From rank 1 on every mode, repeatedly grow the mode whose next core slice adds the most kept
    energy per added parameter, among the steps that keep the network within ``target_params``
    (then exchange ranks between modes while that keeps more energy within the budget); with
    ``max_discarded`` (a squared absolute error) stop at the first ranks within it, then lower
    each mode while the ranks stay within it (largest saving first).
    """
    full = energy.full

    def done(ranks) -> bool:
        return max_discarded is not None and energy.discarded(ranks) <= max_discarded * (1 + 1e-12)

    ranks = _grow(energy, dims, [1] * len(full), target_params, done)
    if target_params is not None:
        ranks = _exchange(energy, dims, ranks, target_params)
    if max_discarded is not None:
        trimmed = True
        while trimmed:
            trimmed = False
            # Lowering mode k by one saves its factor column and a slice of the core.
            for k in sorted(range(len(full)), key=lambda k: -(math.prod(ranks) // ranks[k] + dims[k])):
                if ranks[k] > 1:
                    ranks[k] -= 1
                    if done(ranks):
                        trimmed = True
                        break
                    ranks[k] += 1
    return ranks


def uniform_rank(dims: Sequence[int], target_params: int) -> int:
    """The largest ``r`` whose Tucker network with ranks ``min(r, d_k)`` fits ``target_params`` (0 if none)."""
    best = 0
    for r in range(1, max(dims) + 1):
        if tucker_params(dims, [min(r, d) for d in dims]) > target_params:
            break
        best = r
    return best


def _check_hooi_iters(hooi_iters) -> None:
    if hooi_iters is not None and (isinstance(hooi_iters, bool) or not isinstance(hooi_iters, int) or hooi_iters < 0):
        raise RankError(f"hooi_iters must be None (until converged), 0 (plain HOSVD) or a positive integer; "
                        f"got {hooi_iters!r}")


def hosvd(T, legs: Legs, trunc: Truncation, *, norm: float, randomized: Any = "auto", seed: int = 0,
          oversample: int = 10, power_iters: int | None = POWER_ITERS,
          hooi_iters: int | None = None) -> MethodOutput:
    """Tucker of ``T`` (axes ``legs.names``): truncated HOSVD, then HOOI (``hooi_iters``: ``None``
    until converged, ``0`` none, ``n`` exactly n sweeps)."""
    _check_hooi_iters(hooi_iters)
    bonds = [f"r{k + 1}" for k in range(T.ndim)]
    caps = trunc.caps(bonds)
    by_error = trunc.kind in ("rtol", "target_params")
    svds = {}
    for k, bond in enumerate(bonds):
        # The greedy rank choice needs every singular vector of every mode: exact SVDs of the
        # unfoldings (short: d_k rows), truncated by from_factors.
        svds[bond] = truncated_svd(unfold(T, k), Truncation() if by_error else trunc, bond=bond,
                                   cap=None if by_error else caps[bond],
                                   randomized=False if by_error else randomized, seed=seed + k,
                                   oversample=oversample, power_iters=power_iters)
    out = from_factors(T, legs, [svds[b].U for b in bonds], [svds[b].spectrum for b in bonds], trunc, norm=norm,
                       hooi_iters=hooi_iters, discarded=None if by_error else [svds[b].discarded for b in bonds])
    out.extra.update(describe(svds))
    return out


def from_factors(T, legs: Legs, factors: Sequence, spectra: Sequence, trunc: Truncation, *, norm: float,
                 hooi_iters: int | None = None, discarded: Sequence[float] | None = None) -> MethodOutput:
    """The Tucker network of ``T`` from HOSVD factors (columns = leading left singular vectors of
    each unfolding, ``spectra`` its singular values): ranks by ``trunc``, then HOOI.

    This is the second half of :func:`hosvd`; a caller holding the *full* HOSVD (e.g. the exact
    decomposition that :func:`tnviz.decompose.spectra.cut` slices) gets exactly what a fresh
    ``decompose(W, "tucker", randomized=False, ...)`` returns for any truncation.  With
    ``rtol``/``target_params`` the factors must be full; ``max_rank``/``energy``/exact slice them.
    ``discarded`` (absolute, per mode) defaults to the spectra's tails at the chosen ranks.
    """
    _check_hooi_iters(hooi_iters)
    N = T.ndim
    dims = tuple(T.shape)
    bonds = [f"r{k + 1}" for k in range(N)]
    spectra = list(spectra)
    widths = [U.shape[1] for U in factors]
    tails = [tail_squares(s) for s in spectra]
    extra: dict[str, Any] = {}
    candidates: list[tuple[list[int], str]] = []
    energy = None
    if trunc.kind in ("rtol", "target_params"):
        energy = _CoreEnergy(project(T, list(factors)), spectra, norm)
        if trunc.kind == "target_params":
            ranks = choose_ranks(energy, dims, target_params=int(trunc.value))
            candidates.append((ranks, "greedy per-mode ranks (HOSVD error per parameter)"))
            uniform = [min(uniform_rank(dims, int(trunc.value)), f) for f in energy.full]
            if uniform != ranks and uniform[0] >= 1:
                # The greedy works on the HOSVD error; HOOI can reorder close candidates, so the
                # uniform ranks run too and the better final error wins: never worse than them.
                candidates.append((uniform, "uniform ranks (lower error than the greedy per-mode ranks)"))
        else:
            ranks = choose_ranks(energy, dims, max_discarded=(trunc.value * norm) ** 2)
            candidates.append((ranks, "smallest greedy per-mode ranks whose HOSVD error is within rtol"))
    elif trunc.kind == "max_rank":
        caps = trunc.caps(bonds)
        candidates.append(([min(w, caps[b]) if caps[b] is not None else w for w, b in zip(widths, bonds)], ""))
    elif trunc.kind == "energy":
        candidates.append(([min(w, choose_rank(s, trunc, bond=b)) for w, s, b in zip(widths, spectra, bonds)], ""))
    else:
        candidates.append((widths, ""))
    best = None
    for ranks, rule in candidates:
        start = [U[:, :r] for U, r in zip(factors, ranks)]
        untruncated = all(r >= int(s.shape[0]) for r, s in zip(ranks, spectra))
        if hooi_iters == 0 or untruncated:   # nothing cut: the HOSVD is exact, HOOI has nothing to do
            run = (start, project(T, start), None, None)
        else:
            run = hooi(T, start, norm=norm, iters=hooi_iters)
        core_sq = float(run[1].double().pow(2).sum())
        if best is None or core_sq > best[0]:
            best = (core_sq, ranks, rule, run, untruncated)
    _, ranks, rule, (factors, G, history, converged), untruncated = best
    if energy is not None:
        extra["rank_rule"] = rule
        extra["hosvd_error"] = math.sqrt(energy.discarded(ranks)) / norm if norm else 0.0
    if discarded is None:
        discarded = [t[r] ** 0.5 for t, r in zip(tails, ranks)]
    if hooi_iters == 0:
        extra["algorithm"] = "HOSVD"
    elif untruncated:
        extra["algorithm"] = "HOSVD (nothing truncated: exact, no HOOI sweep needed)"
    else:
        extra["hooi_history"] = history
        extra["hooi_converged"] = converged
        n = len(history)
        how = (f"converged: last sweep improved the error by < {HOOI_TOL:g}" if converged else
               (f"stopped at the {HOOI_MAX_ITERS}-sweep cap" if hooi_iters is None else "fixed hooi_iters"))
        extra["algorithm"] = f"HOOI from HOSVD, {n} sweep{'s' if n != 1 else ''} ({how})"
    net = tucker_network(legs, [U.shape[1] for U in factors])
    tensors = {"G": G.contiguous()}
    tensors.update({f"U{k + 1}": U.contiguous() for k, U in enumerate(factors)})
    return MethodOutput(net, tensors, dict(zip(bonds, spectra)), dict(zip(bonds, discarded)), extra)


def truncate_exact(exact, weight, trunc: Truncation, *, hooi_iters: int | None = None) -> MethodOutput:
    """Any truncation of an exact (untruncated, ``randomized=False``) Tucker decomposition of
    ``weight``, equal to a fresh ``decompose(weight, "tucker", randomized=False, ...)``: ranks
    by ``trunc`` from its HOSVD factors and spectra, then HOOI (see :func:`from_factors`).
    ``discarded`` in the output is absolute, as methods return it."""
    import torch

    net = exact.network
    sizes = net.sizes
    legs = Legs(in_dims=tuple(sizes[i] for i in net.inputs), out_dims=tuple(sizes[o] for o in net.outputs),
                in_names=tuple(net.inputs), out_names=tuple(net.outputs), weight_shape=tuple(weight.shape))
    factors = [exact.tensors[f"U{k + 1}"] for k in range(len(legs.dims))]
    T = weight.detach().to(factors[0].dtype).reshape(legs.dims)
    spectra = [exact.spectra[f"r{k + 1}"] for k in range(len(legs.dims))]
    return from_factors(T, legs, factors, spectra, trunc, norm=float(torch.linalg.vector_norm(T.reshape(-1))),
                        hooi_iters=hooi_iters)
