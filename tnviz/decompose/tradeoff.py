"""Error vs parameters for every method over a sweep of ranks, and the Pareto front.

The SVDs are not redone per point where the math allows:

* ``svd``: one truncated SVD at the largest rank; each point keeps the leading ``r`` triplets
  (identical to a fresh truncated SVD).
* ``tucker``: one HOSVD at the largest ranks; a point starts from the leading ``r`` columns of
  each factor (the HOSVD at rank ``r``, since ``T ×_k U_k[:, :r]^T`` is the corner of
  ``T ×_k U_k^T``) and runs the HOOI sweeps from there, as a fresh decomposition does
  (``hooi_iters=0``: the corner itself).
* ``mpo``: one TT-SVD at the largest rank; each point is its TT-rounding to rank ``r`` (a
  right-to-left sweep of small SVDs over the left-orthogonal cores), i.e. the TT-SVD of the
  largest-rank approximation.
* ``tr`` and ``cp`` (and a full input covariance with ``refit_sweeps``): one decomposition per point.

A full input covariance on a method with several input tensors is whitened with its per-leg
Kronecker approximation, as :func:`tnviz.decompose.decompose` does; the data error is measured
on the full covariance.

Every point's errors are measured on the dense reconstruction, not estimated.

>>> import torch
>>> W = torch.randn(64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
>>> pts = tradeoff(W, methods=("svd", "mpo"), ranks=[1, 4, 16], in_dims=[8, 8], out_dims=[8, 8])
>>> [p.rank for p in pts if p.method == "svd"]
[1, 4, 16]
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import DecompositionError, RankError
from ..threads import map_ordered
from . import data_aware as da
from .api import METHODS, _check_weight, _inputs_on_one_tensor, decompose
from .legs import make_legs
from .randomized import truncated_svd
from .svd import svd_network
from .truncation import Truncation
from .tt import chain_network, permuted, tt_svd
from .tucker import hooi, hosvd, tucker_network

DEFAULT_RANKS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class TradeoffPoint:
    """One point of a trade-off curve: ``rank`` is the uniform rank setting (the CP rank for cp)."""

    method: str
    rank: int
    params: int
    rel_error: float
    data_error: float | None
    ranks: Mapping[str, int]
    seconds: float

    @property
    def error(self) -> float:
        """The data error when there is one, else the weight error."""
        return self.data_error if self.data_error is not None else self.rel_error


def _errors(Wm, approx, cov, in_dims) -> tuple[float, float | None]:
    import torch

    w = float(torch.linalg.vector_norm(Wm.reshape(-1)))
    d = float(torch.linalg.vector_norm((Wm - approx).reshape(-1)))
    rel = d / w if w > 0 else d
    return rel, (da.data_error(Wm, approx, cov, in_dims) if cov is not None else None)


def _absorb(net, tensors, cov, in_dims):
    if cov is None:
        return tensors
    if len(da.input_tensors(net)) == 1:
        return da.absorb_single(net, tensors, cov, in_dims)
    return da.absorb_per_leg(net, tensors, cov)


def tt_round(cores: list, shapes: list[tuple[int, ...]], caps: Sequence[int]) -> list:
    """Round a left-orthogonal TT (builder core shapes) to the bond ``caps``, right to left."""
    import torch

    n = len(cores)
    cs = []
    for k, c in enumerate(cores):
        d = math.prod(shapes[k])
        left = 1 if k == 0 else c.shape[0]
        cs.append(c.reshape(left, d, -1))
    for k in range(n - 1, 0, -1):
        left, d, right = cs[k].shape
        U, S, Vh = torch.linalg.svd(cs[k].reshape(left, d * right), full_matrices=False)
        r = min(caps[k - 1], S.shape[0])
        cs[k] = Vh[:r].reshape(r, d, right)
        cs[k - 1] = torch.tensordot(cs[k - 1], U[:, :r] * S[:r], dims=([2], [0]))
    out = []
    for k, c in enumerate(cs):
        shape = list(shapes[k])
        if k > 0:
            shape = [c.shape[0]] + shape
        if k < n - 1:
            shape = shape + [c.shape[2]]
        out.append(c.reshape(shape))
    return out


def tradeoff(
    weight,
    methods: Iterable[str] = ("mpo", "tr", "tucker", "cp", "svd"),
    ranks: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    input_cov=None,
    *,
    in_dims=None,
    out_dims=None,
    randomized: Any = "auto",
    seed: int = 0,
    cov_eps: float = da.DEFAULT_EPS,
    progress: Callable[[float, str], None] | None = None,
    **options: Any,
) -> list[TradeoffPoint]:
    """Error vs parameters for each method over ``ranks`` (one list for all, or per method;
    default 1, 2, 4, ... 64).  ``options`` go to the methods that take them (e.g.
    ``n_iter_max`` for cp); ``progress(fraction, message)`` is called on the calling thread as
    each point of tr and cp, and each other method, is done (the share of those tasks done:
    ``'cp r=4 done'``, ``'cp done'`` when a method's last point is), the last call at 1.0.  The tasks run on :func:`tnviz.threads.map_ordered`'s
    workers with single-threaded torch operations; the points come in the order of ``methods``,
    ranks ascending."""
    W = _check_weight(weight)
    legs = make_legs(W.shape, in_dims, out_dims)
    Wm = W.reshape(legs.out_features, legs.in_features)
    methods = list(methods)
    for m in methods:
        if m not in METHODS:
            raise DecompositionError(f"unknown decomposition method {m!r}; choose one of {list(METHODS)}")
    cov_full = da.parse_covariance(input_cov, legs, Wm, cov_eps) if input_cov is not None else None
    # what each method shares between its points, then the work in independent tasks: one per
    # point where each point is its own decomposition (tr, cp, a refit), else one per method
    # (its points read from one SVD / HOSVD / TT-SVD)
    setups, tasks = [], []
    for method in methods:
        rs = ranks.get(method, DEFAULT_RANKS) if isinstance(ranks, Mapping) else (ranks or DEFAULT_RANKS)
        rs = sorted({int(r) for r in rs})
        if not rs or rs[0] < 1:
            raise RankError(f"trade-off ranks must be positive integers; got {list(rs)}")
        cov = cov_full
        multi = cov is not None and cov.kind == "full" and not _inputs_on_one_tensor(method, legs)
        refit = {k: options[k] for k in ("refit_sweeps", "refit_iters", "refit_ridge") if k in options}
        if multi:
            cov = da.kron_approximation(cov_full, legs, cov_eps)   # as decompose does without a refit
        opts = {k: v for k, v in options.items() if k in _options_of(method)}
        each = method in ("tr", "cp") or bool(multi and refit.get("refit_sweeps"))
        setups.append((method, rs, cov, refit, opts))
        tasks += [(len(setups) - 1, r) for r in rs] if each else [(len(setups) - 1, None)]

    def run(task: tuple[int, int | None]) -> list[TradeoffPoint]:
        method, rs, cov, refit, opts = setups[task[0]]
        if task[1] is not None:
            res = decompose(W, method, in_dims=in_dims, out_dims=out_dims, max_rank=task[1], input_cov=cov_full,
                            randomized=randomized, seed=seed, cov_eps=cov_eps, **refit, **opts)
            return [TradeoffPoint(method, task[1], res.params, res.rel_error, res.data_error, res.ranks, res.seconds)]
        return _shared(method, rs, W, Wm, legs, cov, cov_full, dict(opts), randomized, seed)

    left = {k: sum(1 for t in tasks if t[0] == k) for k in range(len(setups))}

    def finished(count: int, task: tuple[int, int | None]) -> None:
        left[task[0]] -= 1
        if progress is not None:
            method, _, _, _, _ = setups[task[0]]
            progress(count / len(tasks), f"{method} done" if not left[task[0]] else f"{method} r={task[1]} done")

    # every task on single-threaded torch operations, as many at once as there are workers: these
    # are small LAPACK calls, which two intra-op threads slowed 10x on the 2-core development CPU
    # (a 64x2304 SVD); the costliest tasks (highest ranks) start first
    order = sorted(range(len(tasks)), key=lambda k: -(tasks[k][1] or 0))
    done = map_ordered(run, [tasks[k] for k in order], done=finished)
    results: list = [None] * len(tasks)
    for k, out in zip(order, done):
        results[k] = out
    if progress is not None and not tasks:
        progress(1.0, "nothing to do")
    return [p for out in results for p in out]


def _shared(method, rs, W, Wm, legs, cov, measure, opts, randomized, seed) -> list[TradeoffPoint]:
    """The points of ``method`` at ranks ``rs`` read from one SVD (svd), HOSVD (tucker) or TT-SVD (mpo)."""
    import torch

    points: list[TradeoffPoint] = []
    start = time.perf_counter()
    M = da.right_multiply(Wm, cov, "chol", legs.in_dims) if cov is not None else Wm
    norm = float(torch.linalg.vector_norm(M.reshape(-1)))
    T = M.reshape(legs.dims)
    top = rs[-1]
    if method == "svd":
        res = truncated_svd(M, Truncation("max_rank", top), bond="r", cap=top, randomized=randomized, seed=seed)
        setup = time.perf_counter() - start
        for r in rs:
            t0 = time.perf_counter()
            k = min(r, res.U.shape[1])
            root = torch.sqrt(res.S[:k])
            net = svd_network(legs, k)
            tensors = {"U": res.U[:, :k] * root, "V": (root[:, None] * res.Vh[:k]).reshape(net.shape("V"))}
            points.append(_point(method, r, net, tensors, Wm, cov, measure, legs, setup + time.perf_counter() - t0))
    elif method == "tucker":
        sweeps = opts.pop("hooi_iters", None)
        out = hosvd(T, legs, Truncation("max_rank", top), norm=norm, randomized=randomized, seed=seed,
                    hooi_iters=0, **opts)
        setup = time.perf_counter() - start
        N = len(legs.dims)
        for r in rs:
            t0 = time.perf_counter()
            ks = [min(r, out.tensors[f"U{k + 1}"].shape[1]) for k in range(N)]
            factors = [out.tensors[f"U{k + 1}"][:, : ks[k]] for k in range(N)]
            if sweeps == 0:
                G = out.tensors["G"][tuple(slice(0, k) for k in ks)].contiguous()
            else:
                factors, G, _, _ = hooi(T, factors, norm=norm, iters=sweeps)
            tensors = {"G": G.contiguous()}
            tensors.update({f"U{k + 1}": factors[k] for k in range(N)})
            net = tucker_network(legs, ks)
            points.append(_point(method, r, net, tensors, Wm, cov, measure, legs, setup + time.perf_counter() - t0))
    else:  # mpo
        out = tt_svd(T, legs, Truncation("max_rank", top), norm=norm, randomized=randomized, seed=seed, **opts)
        setup = time.perf_counter() - start
        base = chain_network(legs, ring=False)
        _, shapes = permuted(T, base, legs)
        cores = [out.tensors[n] for n in out.network.tensor_names]
        bonds = list(out.network.bonds)
        for r in rs:
            t0 = time.perf_counter()
            rounded = tt_round(cores, shapes, [r] * len(bonds)) if bonds else cores
            sizes = {b: rounded[k].shape[-1] for k, b in enumerate(bonds)}
            net = base.with_sizes(**sizes) if sizes else base
            tensors = dict(zip(net.tensor_names, rounded))
            points.append(_point(method, r, net, tensors, Wm, cov, measure, legs, setup + time.perf_counter() - t0))
    return points


def _options_of(method: str) -> list[str]:
    from .api import method_options

    return method_options(method)


def _point(method, r, net, tensors, Wm, cov, measure, legs, seconds) -> TradeoffPoint:
    from ..contract import to_dense

    tensors = _absorb(net, tensors, cov, legs.in_dims)
    rel, data = _errors(Wm, to_dense(net, tensors), measure, legs.in_dims)
    ranks = {k: net.sizes[k] for k in net.internal_indices}
    return TradeoffPoint(method, r, net.params, rel, data, ranks, seconds)


def pareto_front(points: Iterable[TradeoffPoint], *, by: str = "error") -> list[TradeoffPoint]:
    """The points no other point beats on both parameters and error (``by``: ``'error'`` = the
    data error when present, ``'rel_error'``, or ``'data_error'``), sorted by parameters."""
    if by not in ("error", "rel_error", "data_error"):
        raise DecompositionError(f"pareto_front ranks points by 'error', 'rel_error' or 'data_error'; got {by!r}")

    def err(p: TradeoffPoint) -> float:
        v = getattr(p, by)
        if v is None:
            raise DecompositionError(f"pareto_front by {by!r} needs that error on every point; {p.method} r={p.rank} has none")
        return v

    front: list[TradeoffPoint] = []
    best = math.inf
    for p in sorted(points, key=lambda p: (p.params, err(p))):
        if err(p) < best:
            front.append(p)
            best = err(p)
    return front
