"""``method="auto"``: per layer, the network (method, leg factorization, leg placement) with the
lowest error at the layer's parameter budget.

The budget is the layer's ``target_params`` (its rule's ``ratio``, or its share of a global target
spread by sensitivity, :mod:`tnviz.model.allocate`).  The error is the data error
``||(W - W~) X|| / ||W X||`` when the layer has an input covariance (calibration), the weight error
``||W - W~|| / ||W||`` otherwise.  The candidates (:func:`candidates`):

* ``svd``: the (whitened) truncated SVD at the largest rank within the budget;
* ``mpo`` with every input leg on the last core (``inputs-last``, the data-aware placement of
  :func:`tnviz.model.apply.inputs_last_cores`), for each leg factorization of 3 and 4 legs a side,
  its bonds split by :func:`tnviz.decompose.split.split_bonds`;
* ``mpo`` with the legs along the chain (``chain``), ``tucker``, ``tr`` and ``cp`` for the leg
  factorizations of 2 and 3 legs a side (a conv kernel keeps its natural legs).

Scored cheaply where the maths is exact: with the input covariance absorbed into one tensor the
data error of a truncated SVD / TT-SVD of the whitened ``M = W·L`` is ``sqrt(sum of the discarded
squared singular values) / ||M||``, so ``svd`` and ``inputs-last`` are scored from singular
values alone (``scored="spectra"``).  The others have their input legs on several tensors, where
the covariance is whitened with its Kronecker approximation and the error is only known on the
dense reconstruction: they are decomposed once (``scored="decomposed"``), whitened by the
Kronecker approximation (one per leg factorization, shared by the methods) and measured on the full
covariance; the search leaves out what the winner then gets (decompose's second, unwhitened run
kept where it does better, the refit, HOOI past :data:`TUCKER_SEARCH_SWEEPS` sweeps), so a
decomposed candidate's score is an upper bound of what its method would reach.  A CP whose rank at the budget is above :data:`CP_MAX_RANK` is not run (``scored="skipped"``: its
ALS would take minutes on a transformer weight).  The covariance is factored once per weight and
shared by every candidate (:func:`tnviz.decompose.data_aware.parse_covariance` passes a factored
covariance through), and so are the data error's denominator ``tr(W C W^T)`` and the exact SVDs
of equal matrices (:func:`tnviz.decompose.randomized.shared_svds`: TT-SVD and TR-SVD start from
the same unfolding); none of this changes a number.

In a model, the hidden-neuron order of each feed-forward pair is a further dimension, decided per
pair before any weight is decomposed (:mod:`tnviz.model.auto_order`): every candidate is also
scored in a searched order (``Candidate.order``: ``"stored"`` / ``"searched"``), the searched order
is adopted for both weights of the pair iff it lowers their summed best error, and each weight's
winner is picked among the candidates of the adopted order (``Search.order``).

The winner (lowest error within the budget) is then decomposed by
:func:`tnviz.model.apply.compress_layer` with its settings (including the refit that layer's
method gets), so a run with ``auto`` gives what a run with the winning rule would.  The search
record (:class:`Search`: every candidate, the winner, the runner-up = the best candidate of
another method) rides on the decomposition as ``extra["auto"]`` and on the layer result.

>>> import torch
>>> from tnviz.model.apply import compress_layer
>>> from tnviz.model.plan import LayerPlan
>>> W = torch.randn(48, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
>>> lp = LayerPlan("fc", "Linear", (48, 32), 48 * 32, "auto", {"target_params": 700})
>>> dec = compress_layer(W, lp)
>>> found = dec.extra["auto"]
>>> dec.params <= 700, found["chosen"]["error"] == min(c["error"] for c in found["candidates"] if c["error"] is not None)
(True, True)
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Sequence

import torch

from ..errors import DecompositionError, RankError, TnvizError

#: Largest CP rank the search runs (CP-ALS at a transformer weight's budget would need thousands).
CP_MAX_RANK = 64
#: HOOI sweeps of a Tucker candidate (the winner runs HOOI to convergence).
TUCKER_SEARCH_SWEEPS = 2
#: CP-ALS sweeps of a CP candidate, and of the winner when CP wins (the library default of 500 is
#: for a batch job: with the Kronecker safeguard and the refit, a winner runs CP-ALS four times).
CP_SEARCH_ITERS = 30


@dataclass(frozen=True)
class Candidate:
    """One network tried: what it is, its parameters and error at the budget, and how it was scored."""

    method: str
    in_dims: tuple[int, ...] | None  # None: the method's own legs (svd: one leg a side; a conv kernel's)
    out_dims: tuple[int, ...] | None
    placement: str  # 'inputs-last' | 'chain' for mpo; '-' otherwise
    params: int | None
    error: float | None  # data error with a covariance, weight error without; None when not scored
    scored: str  # 'spectra' (exact from singular values) | 'decomposed' | 'skipped'
    note: str = ""
    options: Mapping[str, Any] | None = None  # the decompose options that build it
    order: str = "stored"  # the hidden-neuron order it was scored in: 'stored' | 'searched' (tnviz.model.auto_order)

    @property
    def label(self) -> str:
        legs = "" if self.in_dims is None else f" {'x'.join(map(str, self.out_dims))}<-{'x'.join(map(str, self.in_dims))}"
        return (f"{self.method}{legs}" + ("" if self.placement == "-" else f" {self.placement}")
                + (", searched order" if self.order == "searched" else ""))

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("in_dims", "out_dims"):
            out[key] = None if out[key] is None else list(out[key])
        out["options"] = None if self.options is None else {  # as JSON: the decompose options that build it
            k: (list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v)
            for k, v in self.options.items()}
        out["label"] = self.label
        return out


@dataclass(frozen=True)
class Search:
    """Every candidate tried for one weight, the winner and the runner-up (indices into ``candidates``)."""

    candidates: tuple[Candidate, ...]
    chosen: int
    runner_up: int | None
    budget: int
    error_kind: str  # 'data' | 'weight'
    seconds: float
    order: str = "stored"  # the neuron order the winner was picked in (its pair's, tnviz.model.auto_order)

    def as_dict(self) -> dict[str, Any]:
        rows = [c.as_dict() for c in self.candidates]
        return {"budget": self.budget, "error": self.error_kind, "seconds": self.seconds, "order": self.order,
                "chosen": rows[self.chosen], "runner_up": None if self.runner_up is None else rows[self.runner_up],
                "candidates": rows}


def check_rule(rule: Any) -> None:
    """Refuse fixed legs or cores on an ``auto`` rule: it searches them."""
    fixed = {k: getattr(rule, k) for k in ("in_dims", "out_dims", "in_cores", "out_cores") if getattr(rule, k) is not None}
    if fixed:
        key, value = next(iter(fixed.items()))
        raise RankError(f"method 'auto' searches the legs and their placement itself; the rule {rule.pattern!r} "
                        f"fixes {key}={list(value)} (drop it, or name a method)")


def check_budget(rule: Any, target: bool) -> None:
    """Refuse an ``auto`` rule without a parameter budget: a ``ratio``, or a global ``target``
    (which replaces the rule's truncation)."""
    (kind, value), = rule.truncation.items()
    if not target and kind != "ratio":
        raise RankError(f"method 'auto' compares networks at the layer's parameter budget; the rule "
                        f"{rule.pattern!r} needs a ratio or a global target, not {kind}={value!r}")


def leg_options(shape: Sequence[int], counts: Sequence[int]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The best-scored ``(in_dims, out_dims)`` of :func:`tnviz.factorize.propose_legs` with ``k``
    legs on each side, for each ``k`` in ``counts`` that the sizes allow (4-D kernels: none)."""
    from ..factorize import propose_legs

    if len(shape) != 2:
        return []
    out_f, in_f = int(shape[0]), int(shape[1])
    found: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for a, b in propose_legs(in_f, out_f):
        if len(a) == len(b) and len(a) in counts and len(a) not in found and min(a + b) >= 2:
            found[len(a)] = (tuple(a), tuple(b))
    return [found[k] for k in counts if k in found]


def _svd_candidate(Wm: torch.Tensor, cov: Any, budget: int) -> Candidate:
    m, n = Wm.shape
    r = min(budget // (m + n), m, n)
    if r < 1:
        return Candidate("svd", None, None, "-", None, None, "skipped", f"rank 1 needs {m + n:,} parameters")
    M = Wm @ cov.chol[0] if cov is not None else Wm
    s2 = torch.linalg.svdvals(M).double() ** 2
    total = float(s2.sum())
    error = math.sqrt(max(float(s2[r:].sum()), 0.0) / total) if total > 0 else 0.0
    return Candidate("svd", None, None, "-", r * (m + n), error, "spectra", f"rank {r}", {"max_rank": r})


def _inputs_last_candidate(W: torch.Tensor, cov: Any, budget: int, legs: tuple, eps: float) -> Candidate | None:
    from ..decompose.legs import inputs_last_cores
    from ..decompose.split import split_bonds

    in_dims, out_dims = legs
    cores = inputs_last_cores(in_dims, out_dims)
    if cores is None:
        return None
    split = split_bonds(W, cov, target_params=budget, in_dims=in_dims, out_dims=out_dims, in_cores=cores[0],
                        out_cores=cores[1], cov_eps=eps)
    if split is None:
        return None
    opts = {"in_dims": in_dims, "out_dims": out_dims, "in_cores": cores[0], "out_cores": cores[1],
            "max_rank": dict(split.caps)}
    return Candidate("mpo", in_dims, out_dims, "inputs-last", split.params, split.data_error, "spectra",
                     f"bonds {', '.join(f'{k}={v}' for k, v in split.caps.items())} ({split.label})", opts)


_COMMON = ("randomized", "seed", "cov_eps", "refit_sweeps", "refit_iters", "refit_ridge")


def _for_method(extra: Mapping[str, Any], method: str, taken: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The pipeline's extra decompose options that ``method`` takes (``hooi_iters`` goes to Tucker
    only, ``n_iter_max`` to CP only), less those the candidate sets itself (``taken``)."""
    from ..decompose import method_options

    allowed = set(_COMMON) | set(method_options(method))
    return {k: v for k, v in extra.items() if k in allowed and k not in (taken or {})}


def _decomposed(W: torch.Tensor, method: str, legs: tuple | None, cov: Any, kron: Any, budget: int,
                extra: Mapping[str, Any], energy: float | None = None) -> tuple[Candidate, Any]:
    """A candidate with its input legs on several tensors, decomposed once, whitened by the
    Kronecker approximation ``kron`` of ``cov`` (what decompose does; its second, unwhitened run
    and the refit are left to the winner) and measured on the full ``cov``.  ``energy``: the
    weight's ``tr(W C W^T)`` (:func:`tnviz.decompose.data_aware.quad`), the data error's
    denominator, the same for every candidate (computed here when not given)."""
    from ..decompose import decompose

    in_dims, out_dims = legs if legs is not None else (None, None)
    opts: dict[str, Any] = {} if legs is None else {"in_dims": in_dims, "out_dims": out_dims}
    placement = "chain" if method == "mpo" else "-"
    kwargs = _for_method(extra, method)
    if method == "tucker":  # in the candidate's options (they rebuild it); the winner drops it
        opts["hooi_iters"] = int(kwargs.pop("hooi_iters", TUCKER_SEARCH_SWEEPS))
    if method == "cp":
        opts["n_iter_max"] = int(kwargs.pop("n_iter_max", CP_SEARCH_ITERS))
        from ..decompose.legs import make_legs

        width = sum(make_legs(W.shape, in_dims, out_dims).dims)
        rank = budget // width
        if rank > CP_MAX_RANK:
            return Candidate(method, in_dims, out_dims, placement, rank * width, None, "skipped",
                             f"CP rank {rank} at this budget is above the search's {CP_MAX_RANK}"), None
    try:
        dec = decompose(W, method, input_cov=kron if kron is not None else cov, target_params=budget, **opts,
                        **kwargs)
    except (RankError, DecompositionError) as exc:
        return Candidate(method, in_dims, out_dims, placement, None, None, "skipped", str(exc)), None
    if cov is None:
        error = dec.rel_error
    else:
        Wm = W.reshape(W.shape[0], -1)
        error = _data_error(Wm, dec.to_dense(), cov, energy) if kron is not None else dec.data_error
    return Candidate(method, in_dims, out_dims, placement, dec.params, float(error), "decomposed",
                     ", ".join(f"{k}={v}" for k, v in dec.ranks.items()), {**opts, "target_params": budget}), dec


def _data_error(Wm: torch.Tensor, approx: torch.Tensor, cov: Any, energy: float | None) -> float:
    """:func:`tnviz.decompose.data_aware.data_error` (the same arithmetic, so the same bits) with
    its denominator ``energy = quad(Wm)`` passed in."""
    from ..decompose import data_aware as da

    in_dims = [Wm.shape[1]]
    denom = da.quad(Wm, cov, in_dims) if energy is None else energy
    num = max(da.quad(Wm - approx, cov, in_dims), 0.0)
    return math.sqrt(num / denom) if denom > 0 else math.sqrt(num)


def candidates(W: torch.Tensor, cov: Any, budget: int, extra: Mapping[str, Any] | None = None,
               eps: float | None = None, leave_out: Sequence[str] = ()) -> list[tuple[Candidate, Any]]:
    """Every candidate for the weight ``W`` (2-D ``(out, in)`` or a 4-D kernel, the search's dtype)
    at ``budget`` parameters, scored; ``cov`` a factored :class:`tnviz.decompose.data_aware.Covariance`
    (full) or ``None``.  Each comes with its decomposition where one was made (else ``None``).
    ``leave_out``: families not run (``"svd"``, ``"inputs-last"``; the pair stage copies those
    whose error a neuron order cannot change, :mod:`tnviz.model.auto_order`).

    Work shared by the candidates, none of it changing a number: the data error's denominator
    ``tr(W C W^T)`` computed once; one Kronecker approximation per leg factorization; and the
    exact SVDs (:func:`tnviz.decompose.randomized.shared_svds`: TT-SVD and TR-SVD start from the
    same unfolding of the same whitened tensor)."""
    from ..decompose.randomized import shared_svds

    with shared_svds():
        return _candidates(W, cov, budget, extra, eps, leave_out)


def _candidates(W: torch.Tensor, cov: Any, budget: int, extra: Mapping[str, Any] | None, eps: float | None,
                leave_out: Sequence[str]) -> list[tuple[Candidate, Any]]:
    from ..decompose import data_aware as da

    extra = dict(extra or {})
    eps = da.DEFAULT_EPS if eps is None else eps
    Wm = W.reshape(W.shape[0], -1)
    found: list[tuple[Candidate, Any]] = [] if "svd" in leave_out else [(_svd_candidate(Wm, cov, budget), None)]
    if W.ndim == 2 and cov is not None and "inputs-last" not in leave_out:
        for legs in leg_options(W.shape, (3, 4)):
            cand = _inputs_last_candidate(W, cov, budget, legs, eps)
            if cand is not None:
                found.append((cand, None))
    split_legs: list[Any] = leg_options(W.shape, (2, 3)) if W.ndim == 2 else [None]
    energy = da.quad(Wm, cov, [Wm.shape[1]]) if cov is not None else None
    for legs in split_legs:
        kron = None
        if cov is not None:  # one Kronecker approximation per leg factorization, shared by the methods
            from ..decompose.legs import make_legs

            found_legs = make_legs(W.shape, *(legs or (None, None)))
            if len(found_legs.in_dims) > 1:
                kron = da.kron_approximation(cov, found_legs, eps)
        for method in ("mpo", "tucker", "tr", "cp"):
            found.append(_decomposed(W, method, legs, cov, kron, budget, extra, energy))
    return found


def _index(found: Sequence[Candidate], budget: int, order: str | None = None) -> tuple[int | None, int | None]:
    """The winner and the runner-up among the scored candidates within ``budget`` (of ``order`` only, if given)."""
    fit = [k for k, c in enumerate(found) if c.error is not None and c.params is not None and c.params <= budget
           and (order is None or c.order == order)]
    if not fit:
        return None, None
    best = min(fit, key=lambda k: (found[k].error, found[k].params))
    others = [k for k in fit if found[k].method != found[best].method]
    return best, (min(others, key=lambda k: (found[k].error, found[k].params)) if others else None)


def prepare(weight: torch.Tensor, lp: Any, cov: Any, options: Any) -> tuple[torch.Tensor, Any, int, dict, float]:
    """What the search of one planned weight runs on: the weight in the search's dtype, its
    covariance factored (``None`` without), the budget, the extra decompose options and the
    covariance's ridge; shared by :func:`compress_auto` and the pair stage
    (:mod:`tnviz.model.auto_order`), so both score the same candidates."""
    from ..decompose import data_aware as da
    from ..decompose.legs import make_legs

    if "target_params" not in lp.options:
        raise RankError(f"method 'auto' compares networks at the layer's parameter budget; layer {lp.name!r} "
                        f"has {dict(lp.options)} (give a ratio or a global target)")
    budget = int(lp.options["target_params"])
    precision = options.precision
    if precision is None:
        precision = torch.float64 if cov is not None or weight.dtype == torch.float64 else torch.float32
    W = weight.detach().to(precision)
    extra = dict(options.decompose)
    eps = extra.get("cov_eps", da.DEFAULT_EPS)
    if cov is not None:  # factored once, shared by every candidate and the winner's decomposition
        legs = make_legs(W.shape)
        cov = da.parse_covariance(cov, legs, W.reshape(legs.out_features, legs.in_features), eps)
        if cov.kind != "full":
            raise TnvizError(f"method 'auto' needs the full input covariance of layer {lp.name!r}; got Kronecker factors")
    return W, cov, budget, extra, eps


def compress_auto(weight: torch.Tensor, lp: Any, cov: Any, options: Any, *, compress: Any, kept: type) -> Any:
    """The decomposition of the winning candidate for one planned weight (``lp.method == 'auto'``,
    ``lp.options['target_params']`` the budget), with the search in ``extra['auto']``; or a
    ``kept`` (:class:`tnviz.model.apply.Kept`) when no candidate fits the budget or saves
    parameters.  ``compress`` is :func:`tnviz.model.apply.compress_layer`, which calls this for
    ``auto`` (passed in: the apply module imports this one).  A weight of a feed-forward pair
    whose order the pair stage decided (``options.orders[lp.name]``, :mod:`tnviz.model.auto_order`)
    comes with its candidates in both neuron orders, already scored; the winner is picked among
    those of the order adopted for its pair (``weight`` and ``cov`` are already in that order)."""
    started = time.perf_counter()
    W, cov, budget, extra, eps = prepare(weight, lp, cov, options)
    decided = (getattr(options, "orders", None) or {}).get(lp.name)
    if decided is None:
        found = [c for c, _ in candidates(W, cov, budget, extra, eps)]
        order = "stored"
    else:
        found, order = [*decided["stored"], *decided["searched"]], decided["adopted"]
    seconds = time.perf_counter() - started + (decided["seconds"] if decided is not None else 0.0)
    tried: list[str] = []
    while True:
        best, runner = _index(found, budget, order)
        if best is None:
            why = "; ".join(tried) or "no candidate network fits the budget"
            return kept(lp.name, f"method 'auto': {why} ({budget:,} parameters); kept dense")
        win = found[best]
        winning = {k: v for k, v in (win.options or {}).items() if k != "hooi_iters"}  # HOOI: to convergence
        plan = replace(lp, method=win.method, options=winning)
        settings = replace(options, placement="chain",  # the placement is the winner's own
                           decompose=_for_method(extra, win.method, winning))
        dec = compress(weight, plan, cov, settings)
        if not isinstance(dec, kept):
            break
        tried.append(f"{win.label}: {dec.reason}")
        found[best] = replace(win, error=None, scored="skipped", note=dec.reason)
    search = Search(tuple(found), best, runner, budget, "data" if cov is not None else "weight",
                    time.perf_counter() - started + (decided["seconds"] if decided is not None else 0.0), order)
    out = dict(dec.extra)
    out["auto"] = search.as_dict()
    out["auto"]["search_seconds"] = seconds
    return replace(dec, extra=out)


def describe_choice(search: Mapping[str, Any]) -> tuple[str, str]:
    """The chosen network and the runner-up of a search record (:meth:`Search.as_dict`) in words:
    ``('svd (rank 153): data error 0.141 at 293,760 params', 'mpo 16x12x8<-8x8x6 inputs-last:
    data error 0.157 at 294,144 params')``; the one place the CLI, the app and the rows word it."""
    def line(c: Mapping[str, Any] | None) -> str:
        if c is None:
            return "-"
        note = f" ({c['note']})" if c["method"] == "svd" and c.get("note") else ""
        return f"{c['label']}{note}: {search['error']} error {c['error']:.4g} at {c['params']:,} params"

    return line(search["chosen"]), line(search["runner_up"])

