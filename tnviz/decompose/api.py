"""``decompose``: one entry point over the method registry :data:`DECOMPOSITIONS`."""
from __future__ import annotations

import inspect
import math
import time
from typing import Any, Callable

from ..errors import DecompositionError, RankError, TnvizError
from . import data_aware as da
from .cp import cp_als
from .legs import Legs, make_legs
from .result import Decomposition, MethodOutput
from .svd import truncated_svd_method
from .tr import tr_svd
from .tt import chain_network, tt_svd
from .tucker import hosvd
from .truncation import Truncation, parse_truncation

#: The methods' implementations: name -> function(T, legs, trunc, *, norm, randomized, seed, **options).
METHODS: dict[str, Callable[..., MethodOutput]] = {
    "mpo": tt_svd,
    "tr": tr_svd,
    "tucker": hosvd,
    "cp": cp_als,
    "svd": truncated_svd_method,
}

DESCRIPTIONS: dict[str, str] = {
    "mpo": "MPO / tensor train (TT-SVD)",
    "tr": "Tensor ring (TR-SVD)",
    "tucker": "Tucker (HOOI from a HOSVD start)",
    "cp": "CP (ALS)",
    "svd": "Low-rank SVD (baseline)",
}

_COMMON = {"norm", "randomized", "seed"}


def method_options(method: str) -> list[str]:
    """The extra keyword options a method accepts (e.g. ``hooi_iters`` for Tucker)."""
    sig = inspect.signature(METHODS[method])
    return [p for p, v in sig.parameters.items() if v.kind is v.KEYWORD_ONLY and p not in _COMMON]


def _check_weight(weight):
    import torch

    if not isinstance(weight, torch.Tensor):
        raise DecompositionError(f"a weight must be a torch.Tensor; got {type(weight).__name__}")
    if weight.ndim not in (2, 4):
        raise DecompositionError(
            f"a weight must be 2-D (out_features, in_features) or a 4-D conv kernel (out, in, kh, kw); "
            f"got shape {list(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise DecompositionError(f"a weight must hold floating-point numbers; got dtype {weight.dtype}")
    if weight.numel() == 0:
        raise DecompositionError(f"a weight must not be empty; got shape {list(weight.shape)}")
    W = weight.detach()
    if W.dtype not in (torch.float32, torch.float64):
        W = W.float()  # SVD/QR need float32 or float64; half precisions are upcast
    # The sum is finite whenever every entry is (bar an overflow, which the full check settles):
    # one reduction instead of a weight-sized mask on the common path.
    if not bool(torch.isfinite(W.sum())) and not bool(torch.isfinite(W).all()):
        raise DecompositionError("a weight must hold finite numbers; it has NaN or inf")
    return W


def _uniform_rank_for_params(method: str, legs: Legs, target: int) -> tuple[Truncation, int]:
    """The largest uniform rank (capped per bond at its useful maximum) whose network has at most
    ``target`` parameters."""
    from ..builders import tucker
    from .svd import svd_network

    if method in ("mpo", "tr"):
        net = chain_network(legs, ring=(method == "tr"))
        bonds = [f"b{k + 1}" for k in range(len(net.bonds))]
        if method == "mpo":
            per_core = [math.prod(net.shape(t)) for t in net.tensors]  # rank-1 core sizes = leg products
            left = [math.prod(per_core[: k + 1]) for k in range(len(bonds))]
            right = [math.prod(per_core[k + 1:]) for k in range(len(bonds))]
            useful = [min(a, b) for a, b in zip(left, right)]
        else:
            per_core = [math.prod(net.shape(t)) for t in net.tensors]

            def tr_caps(r: int) -> dict[str, int]:
                # What TR-SVD yields on a generic weight: R = r0·r1 <= min(r², d0, rest), then
                # each inner bond limited by its unfolding (r1·left legs) x (right legs·r0).
                from .tr import split_rank

                R = min(r * r, per_core[0], math.prod(per_core[1:]))
                r0, r1 = split_rank(R, r, r)
                out = {bonds[0]: r1, bonds[-1]: r0}
                for k in range(1, len(bonds) - 1):
                    out[bonds[k]] = min(r, r1 * math.prod(per_core[1: k + 1]), math.prod(per_core[k + 1:]) * r0)
                return out

            useful = [min(legs.in_features, legs.out_features)]

        def caps(r: int) -> dict[str, int]:
            if method == "tr":
                return tr_caps(r)
            return {b: min(r, u) for b, u in zip(bonds, useful)}

        def params(r: int) -> int:
            return net.with_sizes(**caps(r)).params if bonds else net.params

        hi = max(useful) if useful else 1
        make = lambda r: Truncation("max_rank", caps(r))  # noqa: E731
    elif method == "tucker":
        dims = legs.dims

        def params(r: int) -> int:
            return tucker(legs.in_dims, legs.out_dims, [min(r, d) for d in dims]).params

        hi = max(dims)
        make = lambda r: Truncation("max_rank", [min(r, d) for d in dims])  # noqa: E731
    elif method == "cp":
        def params(r: int) -> int:
            return r * sum(legs.dims)

        hi = max(1, target // sum(legs.dims))
        make = lambda r: Truncation("max_rank", r)  # noqa: E731
    else:
        def params(r: int) -> int:
            return svd_network(legs, r).params

        hi = min(legs.in_features, legs.out_features)
        make = lambda r: Truncation("max_rank", r)  # noqa: E731
    if params(1) > target:
        raise RankError(
            f"target_params must allow at least rank 1 ({params(1)} parameters for {method}); got {target}"
        )
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if params(mid) <= target:
            lo = mid
        else:
            hi = mid - 1
    return make(lo), lo


def _inputs_on_one_tensor(method: str, legs: Legs) -> bool:
    if method == "svd" or len(legs.in_dims) == 1:
        return True
    if method in ("mpo", "tr"):
        return len(da.input_tensors(chain_network(legs, ring=(method == "tr")))) == 1
    return False


def decompose(
    weight,
    method: str,
    *,
    in_dims=None,
    out_dims=None,
    max_rank=None,
    rtol=None,
    energy=None,
    target_params=None,
    input_cov=None,
    randomized: Any = "auto",
    seed: int = 0,
    in_cores=None,
    out_cores=None,
    cov_eps: float = da.DEFAULT_EPS,
    refit_sweeps: int = 0,
    refit_iters: int = 10,
    refit_ridge: float = 1e-3,
    **method_options_: Any,
) -> Decomposition:
    """Decompose ``weight`` (``(out, in)`` like ``nn.Linear.weight``, or a conv kernel
    ``(out, in, kh, kw)``) into the network of ``method`` (a key of :data:`DECOMPOSITIONS`).

    Runs on the weight's device and dtype (float32/float64; half precisions are upcast to
    float32).  ``in_dims``/``out_dims`` factor the features into legs (default
    :func:`tnviz.auto_legs`; a conv kernel keeps ``cin, kh, kw`` / ``cout``); ``in_cores`` /
    ``out_cores`` place the legs on MPO/TR cores.  Truncate with one of ``max_rank``, ``rtol``,
    ``energy``, ``target_params`` (none = exact).  ``input_cov`` (full or per-input-leg
    Kronecker factors) makes it data-aware, see :mod:`tnviz.decompose.data_aware`;
    ``randomized`` is ``"auto"``, ``True`` or ``False``, see :mod:`tnviz.decompose.randomized`.
    The result's ``algorithm`` says what ran (e.g. which bonds took the randomized SVD, or how
    many HOOI sweeps Tucker made) and ``compresses`` whether the network is smaller than the
    weight (a loose ``rtol`` on a flat spectrum may return one that is not; it is returned all
    the same, with ``extra['note']``).

    >>> import torch
    >>> W = torch.randn(64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> res = decompose(W, "mpo", in_dims=[8, 8], out_dims=[8, 8], max_rank=64)
    >>> res.rel_error < 1e-12, res.ranks
    (True, {'b1': 64})
    """
    import torch

    start = time.perf_counter()
    if not isinstance(method, str) or method not in METHODS:
        raise DecompositionError(f"unknown decomposition method {method!r}; choose one of {list(DECOMPOSITIONS)}")
    allowed = method_options(method)
    unknown = sorted(set(method_options_) - set(allowed))
    if unknown:
        raise DecompositionError(
            f"method {method!r} takes the options {allowed}; got unknown option {unknown[0]!r}"
        )
    if randomized not in ("auto", True, False):
        raise DecompositionError(f"randomized must be 'auto', True or False; got {randomized!r}")
    if (in_cores is not None or out_cores is not None) and method not in ("mpo", "tr"):
        raise DecompositionError(f"in_cores/out_cores place legs on MPO/TR cores; method {method!r} has none")
    W = _check_weight(weight)
    trunc = parse_truncation(max_rank, rtol, energy, target_params)
    try:
        legs = make_legs(W.shape, in_dims, out_dims, in_cores, out_cores)
        if method in ("mpo", "tr"):
            chain_network(legs, ring=(method == "tr"))  # validates in_cores/out_cores early
    except TnvizError as exc:
        raise DecompositionError(str(exc)) from None
    if method == "cp" and trunc.kind in ("exact", "rtol", "energy"):
        raise RankError(f"CP needs its rank: give max_rank (an int) or target_params; got {trunc.kind}")
    extra: dict[str, Any] = {}
    if trunc.kind == "target_params":
        uniform_trunc, uniform = _uniform_rank_for_params(method, legs, trunc.value)
        extra["target_params"], extra["uniform_rank"] = target_params, uniform
        if method != "tucker":   # Tucker picks per-mode ranks itself (tucker.choose_ranks)
            trunc = uniform_trunc

    Wm = W.reshape(legs.out_features, legs.in_features)
    cov = refit_cov = data_err = None
    M = Wm
    if input_cov is not None:
        cov = da.parse_covariance(input_cov, legs, Wm, cov_eps)
        if cov.kind == "full" and not _inputs_on_one_tensor(method, legs):
            refit_cov = cov
            cov = da.kron_approximation(cov, legs, cov_eps)
        M = da.right_multiply(Wm, cov, "chol", legs.in_dims)
    norm = float(torch.linalg.vector_norm(M.reshape(-1)))
    T = M.reshape(legs.dims)
    out = METHODS[method](T, legs, trunc, norm=norm, randomized=randomized, seed=seed, **method_options_)
    tensors = out.tensors
    if cov is not None:
        if len(da.input_tensors(out.network)) == 1:
            tensors = da.absorb_single(out.network, tensors, cov, legs.in_dims)
            extra["data_aware"] = f"{cov.kind} covariance absorbed exactly into {da.input_tensors(out.network)[0]}"
        else:
            tensors = da.absorb_per_leg(out.network, tensors, cov)
            extra["data_aware"] = "per-leg Kronecker factors absorbed exactly into the input cores"
        if refit_cov is not None:
            extra["data_aware"] = (
                "full covariance: whitened with its per-leg Kronecker approximation (partial traces), "
                "inverse factors absorbed per leg; data error measured on the full covariance"
            )
            # Safeguard: far from a Kronecker product the approximation can do worse on the data
            # than no whitening at all; keep whichever start is better on the full covariance.
            from ..contract import to_dense as _dense

            plain = METHODS[method](Wm.reshape(legs.dims), legs, trunc,
                                    norm=float(torch.linalg.vector_norm(Wm.reshape(-1))),
                                    randomized=randomized, seed=seed, **method_options_)
            denom = da.quad(Wm, refit_cov, legs.in_dims)
            on_plain = da.data_error(Wm, _dense(plain.network, plain.tensors), refit_cov, legs.in_dims, denom)
            data_err = da.data_error(Wm, _dense(out.network, tensors), refit_cov, legs.in_dims, denom)
            if on_plain < data_err:
                out, tensors, data_err = plain, plain.tensors, on_plain
                extra["data_aware"] = (
                    "full covariance: its per-leg Kronecker approximation did worse on the full covariance "
                    "than the plain decomposition, which is kept; data error measured on the full covariance"
                )
            if refit_sweeps:
                tensors, history = da.refit_inputs(out.network, tensors, Wm, refit_cov, sweeps=refit_sweeps,
                                                   iters=refit_iters, ridge=refit_ridge)
                extra["data_aware"] += "; input tensors refit by least squares on it (ridge {refit_ridge:g})".format(
                    refit_ridge=refit_ridge)
                extra["refit"] = history
                data_err = None  # the refit moved the input tensors: measured again below
    from ..contract import to_dense

    approx = to_dense(out.network, tensors)
    w_norm = float(torch.linalg.vector_norm(Wm.reshape(-1)))
    diff = float(torch.linalg.vector_norm((Wm - approx).reshape(-1)))
    rel_error = diff / w_norm if w_norm > 0 else diff
    if refit_cov is not None:
        if data_err is None:
            data_err = da.data_error(Wm, approx, refit_cov, legs.in_dims, denom)
    elif cov is not None and cov.kind == "full":
        # W~ = D·L^-1 with D the decomposition of M = W·L, so (W - W~)·L = M - D: the data error
        # from the whitened residual, without the two (out, in)·(in, in) products of da.data_error
        data_err = da.whitened_data_error(M, to_dense(out.network, out.tensors), cov, w_norm, diff)
    elif cov is not None:
        data_err = da.data_error(Wm, approx, cov, legs.in_dims)
    if W.is_cuda:
        torch.cuda.synchronize(W.device)
    discarded = {b: (v / norm if norm > 0 else 0.0) for b, v in out.discarded.items()}
    extra = {**out.extra, **extra}
    if W.dtype != weight.dtype:
        extra["upcast_from"] = str(weight.dtype)
    if out.network.params >= out.network.dense_params:
        extra["note"] = (f"does not compress: the network has {out.network.params:,} parameters, the dense weight "
                         f"{out.network.dense_params:,}")
    return Decomposition(
        method=method, network=out.network, tensors=tensors, spectra=out.spectra, discarded=discarded,
        rel_error=rel_error, data_error=data_err, seconds=time.perf_counter() - start, extra=extra,
        weight_shape=tuple(weight.shape), algorithm=algorithm_of(method, extra, list(out.spectra)),
    )


_NAMES = {"mpo": "TT-SVD", "tr": "TR-SVD", "svd": "truncated SVD", "cp": "CP-ALS"}


def algorithm_of(method: str, extra: dict[str, Any], bonds: list[str]) -> str:
    """One line saying what ran: the method's algorithm and, per bond, which SVD (exact,
    randomized block Krylov with its steps, or exact after the randomized one fell short)."""
    head = extra.get("algorithm") or _NAMES.get(method, method)
    if method == "cp":
        return f"{head}, {extra.get('iterations', 0)} sweeps" + (" (converged)" if extra.get("converged") else "")
    randomized = list(extra.get("randomized", []))
    fallback = list(extra.get("randomized_fallback", []))
    if not randomized and not fallback:
        return f"{head}; exact SVDs"
    parts = []
    if randomized:
        steps = extra.get("krylov_steps", {})
        detail = ", ".join(f"{b}: {steps[b]} Krylov steps" for b in randomized if b in steps)
        parts.append(f"randomized SVD on {', '.join(randomized)}" + (f" ({detail})" if detail else ""))
    if fallback:
        parts.append(f"exact SVD on {', '.join(fallback)} (the randomized one fell short of the energy target)")
    rest = [b for b in bonds if b not in randomized and b not in fallback]
    if rest:
        parts.append(f"exact SVD on {', '.join(rest)}")
    return f"{head}; " + "; ".join(parts)


def _method_function(name: str) -> Callable[..., Decomposition]:
    def run(weight, **kwargs: Any) -> Decomposition:
        return decompose(weight, name, **kwargs)

    run.__name__ = f"decompose_{name}"
    run.__doc__ = f"{DESCRIPTIONS[name]}: ``decompose(weight, {name!r}, **kwargs)``."
    return run


#: The registry: method name -> ``function(weight, **options) -> Decomposition``.  Its keys feed
#: the CLI choices, the app's select boxes and the test parametrization.
DECOMPOSITIONS: dict[str, Callable[..., Decomposition]] = {name: _method_function(name) for name in METHODS}
