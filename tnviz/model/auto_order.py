"""The hidden-neuron order as a dimension of ``method="auto"``: one decision per feed-forward pair.

A feed-forward pair's hidden neurons are interchangeable (:mod:`tnviz.model.permute`), but one
permutation of them re-orders *both* weights of the pair (the rows of ``W_in`` and its bias, the
columns of ``W_out``), so the order cannot be chosen weight by weight.  For every pair of
:func:`tnviz.model.permute.ff_pairs` whose planned members are all ``auto`` and include an input
weight (hidden index as its outputs), before any weight is decomposed (:func:`decide_pairs`):

1. **One order searched**: :func:`tnviz.decompose.order.search_order` on the first planned input
   weight, for the output groups of its MPO with 3 legs a side (data-aware: every input leg on the
   last core, the outputs grouped as on their cores; without a covariance: the 3 output legs), at
   the ranks :func:`tnviz.model.permute.search_pairs` uses (the data split's best factorized
   candidate at the weight's budget; else :data:`tnviz.model.permute.SEARCH_FRACTION`).
2. **Both orders scored**: each planned member's candidates (:func:`tnviz.model.auto.candidates`,
   at its own budget) in the stored order and in the searched one (the input weights' rows and the
   output weight's columns re-ordered, the output weight's input covariance with them).  Candidates
   whose error cannot depend on the order are copied into the searched order, not re-run: ``svd``
   (a permutation of rows or columns does not change singular values) and, for the weight whose
   *inputs* are the hidden index, the inputs-last MPO (its TT-SVD sees ``W C W^T`` only, which a
   consistent input permutation leaves unchanged).  Every candidate carries its order
   (``Candidate.order``: ``"stored"`` / ``"searched"``).
3. **The decision, per pair**: the searched order is adopted iff the sum over the pair's planned
   members of the best in-budget error in the searched order is below the stored order's (by more
   than a relative 1e-9; errors are data errors with calibration, weight errors without).  Adopted,
   the pair is re-ordered in place by :func:`tnviz.model.permute.permute_pair` (both weights, the
   model's function unchanged, exactly as ``order_search=True``), recorded as a
   :class:`tnviz.model.permute.Permutation` (stored in the compressed folder and applied on load
   the same way), and the output weight's calibration statistics are permuted to match.
4. **Each weight's winner** is then picked by :func:`tnviz.model.auto.compress_auto` among its
   candidates *of the adopted order* only (the runner-up too); the record keeps both orders'
   candidates, so the report and the chart show what the other order would have cost.

Steps 1 and 2 are independent jobs (one order search per pair, then one per member and order),
spread over the CPU's cores with single-threaded torch operations as the weights' decompositions
are (:mod:`tnviz.threads`): on MiniLM's 12 feed-forward weights this is most of ``auto``'s time,
and torch's own threads on these medium-size SVDs and eigen-problems mostly wait on each other.

Not decided here (their weights are searched in the stored order): pairs with a member of a fixed
method (``order_search=True`` handles an MPO there), pairs whose planned members are only the output
weight, weights-only files and block-by-block runs (no model to permute).

>>> import torch
>>> from tnviz.model.apply import Options
>>> from tnviz.model.demos import DigitsMLP
>>> from tnviz.model.plan import Rule, make_plan
>>> model = DigitsMLP().double().eval()
>>> plan = make_plan(model, [Rule("^fc1$", "auto", {"ratio": 4})])
>>> perms, _, notes, decided = decide_pairs(model, plan, {}, Options())
>>> sorted(decided["fc1"]), decided["fc1"]["adopted"] in ("stored", "searched")
(['adopted', 'searched', 'seconds', 'stored'], True)
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .permute import (SEARCH_FRACTION, FFPair, Permutation, _one_thread, _out_groups, _permuted_stats, _split_ranks,
                      ff_pairs, pair_tensors, permute_pair, search_ranks)
from .surgery import linear_weight

#: Relative margin by which the searched order's summed error must beat the stored one's.
ADOPT_MARGIN = 1e-9


def _best(found: Sequence[Any], budget: int) -> float:
    errors = [c.error for c in found if c.error is not None and c.params is not None and c.params <= budget]
    return min(errors) if errors else float("inf")


def _order_invariant(c: Any, hidden_is_input: bool) -> bool:
    return c.method == "svd" or (hidden_is_input and c.placement == "inputs-last")


def _search(W: torch.Tensor, lp: Any, cov: torch.Tensor | None) -> Any:
    """The order search of the pair's first input weight (step 1 of the module doc), or ``None``
    where it has no bond between output groups to search over."""
    from ..decompose.legs import inputs_last_cores, make_legs
    from ..decompose.order import search_order
    from .auto import leg_options

    found = leg_options(W.shape, (3,))
    if not found:
        return None
    in_dims, out_dims = found[0]
    legs = make_legs(tuple(W.shape), in_dims, out_dims)
    budget = int(lp.options["target_params"])
    cores = inputs_last_cores(legs.in_dims, legs.out_dims) if cov is not None else None
    dims = _out_groups(legs.out_dims, cores[1]) if cores is not None else tuple(legs.out_dims)
    ranks = search_ranks(dims, legs.in_features, {"target_params": budget}, SEARCH_FRACTION) if len(dims) > 1 else None
    if ranks is None:
        return None
    if cov is not None:
        ranks = _split_ranks(W, cov, budget, legs, cores) or ranks
    with _one_thread():
        return search_order(W.to(torch.float64), dims, ranks, input_cov=cov, in_dims=legs.in_dims, restarts=0)


def decide_pairs(model: nn.Module, plan: Any, stats: Mapping[str, Any] | None, options: Any,
                 workers: int | None = None) -> tuple[list[Permutation], dict, list[dict], dict[str, dict]]:
    """Steps 1-3 of the module doc for every eligible pair of ``model`` (re-ordered in place where
    the searched order is adopted).  Returns the permutations applied, ``stats`` with the re-ordered
    inputs' statistics permuted, a note per pair whose order was kept or not decided (why), and per
    planned weight of a decided pair ``{"stored": [...], "searched": [...], "adopted": order,
    "seconds": s}`` (candidates of :func:`tnviz.model.auto.candidates`, for ``options.orders``).

    The work is independent jobs spread over ``workers`` threads with single-threaded torch
    operations (:func:`tnviz.threads.map_ordered`, default one per core, as the weights'
    decompositions are): first every pair's order search, then each member's candidates in each
    order; the decisions and the re-ordering then run on this thread in pair order.  A job's
    arithmetic does not depend on the workers, so neither does the outcome.  ``seconds``: the pair's
    jobs' time (summed, so it can exceed the wall clock), shared equally by its members."""
    from ..threads import map_ordered

    planned = {lp.name: lp for lp in plan.layers}
    stats = dict(stats or {})
    modules = dict(model.named_modules())
    done: list[Permutation] = []
    notes: list[dict] = []
    decided: dict[str, dict] = {}
    eligible: list[tuple[FFPair, list[str]]] = []
    for pair in ff_pairs(model):
        members = [m for m in pair.members if m in planned]
        if not members or all(planned[m].method != "auto" for m in members):
            continue
        if any(planned[m].method != "auto" for m in members):
            notes.append({"pair": pair.name, "reason": "not searched by auto: its planned weights mix auto with a "
                                                       "fixed method (the order is one per pair)"})
            continue
        if members[0] == pair.output:
            notes.append({"pair": pair.name, "reason": f"not searched by auto: only {members[0]!r} (hidden index on "
                                                       f"its inputs) is compressed"})
            continue
        eligible.append((pair, members))
    if not eligible:
        return done, stats, notes, decided
    weights = {m: linear_weight(modules[m]).detach() for _, members in eligible for m in members}
    cov_of = {m: (stats[m].second_moment if m in stats else None) for _, members in eligible for m in members}

    def search(item: tuple[FFPair, list[str]]) -> tuple[Any, float]:
        started = time.perf_counter()
        first = item[1][0]
        return _search(weights[first], planned[first], cov_of[first]), time.perf_counter() - started

    searches = map_ordered(search, eligible, workers=workers)
    jobs = [(pair, m, order, found.perm) for (pair, members), (found, _) in zip(eligible, searches)
            if found is not None and not found.identity for m in members for order in ("stored", "searched")]

    def score(job: tuple[FFPair, str, str, Sequence[int]]) -> tuple[list, float]:
        pair, m, order, perm = job
        started = time.perf_counter()
        found = _score_one(weights[m], planned[m], cov_of[m], perm, m == pair.output, order, options)
        return found, time.perf_counter() - started

    scores = dict(zip(((pair.name, m, order) for pair, m, order, _ in jobs), map_ordered(score, jobs, workers=workers)))
    for (pair, members), (found, search_s) in zip(eligible, searches):
        first = members[0]
        if found is None or found.identity:
            notes.append({"pair": pair.name, "reason": "auto kept the stored order: " + (
                "no bond between output groups to search over" if found is None else
                f"the search found no better order ({found.error_before:.4g} at ranks {list(found.ranks)})")})
            continue
        scored = {}
        seconds = search_s
        for m in members:
            stored, stored_s = scores[(pair.name, m, "stored")]
            fresh, fresh_s = scores[(pair.name, m, "searched")]
            seconds += stored_s + fresh_s
            scored[m] = {"stored": stored, "searched": _searched(stored, fresh, m == pair.output)}
        stored = sum(_best(scored[m]["stored"], int(planned[m].options["target_params"])) for m in members)
        searched = sum(_best(scored[m]["searched"], int(planned[m].options["target_params"])) for m in members)
        adopted = "searched" if searched < stored * (1 - ADOPT_MARGIN) else "stored"
        for m in members:
            decided[m] = {**scored[m], "adopted": adopted, "seconds": seconds / len(members)}
        if adopted == "stored":
            notes.append({"pair": pair.name, "reason": f"auto kept the stored order: summed best error {stored:.4g} "
                                                       f"(stored) vs {searched:.4g} (searched)"})
            continue
        tensors = permute_pair(model, pair, found.perm)
        if pair.output in stats:  # its inputs are the hidden activations, now re-ordered
            stats[pair.output] = _permuted_stats(stats[pair.output], torch.as_tensor(found.perm, dtype=torch.long))
        done.append(Permutation(pair.name, pair.hidden, found.perm, tensors, f"{first}.weight", found.error_before,
                                found.error_after, found.ranks, found.start, seconds,
                                {"auto": {"stored": stored, "searched": searched}}))
    return done, stats, notes, decided


def _score_one(weight: torch.Tensor, lp: Any, cov: torch.Tensor | None, perm: Sequence[int], hidden_is_input: bool,
               order: str, options: Any) -> list[Any]:
    """One member's candidates (step 2) in the stored order, or in the order ``perm`` less those
    whose error the order cannot change (:func:`_searched` copies them from the stored ones)."""
    from .auto import candidates, prepare

    if order == "stored":
        W, fcov, budget, extra, eps = prepare(weight, lp, cov, options)
        return [c for c, _ in candidates(W, fcov, budget, extra, eps)]
    index = torch.as_tensor(list(perm), dtype=torch.long)
    if hidden_is_input:
        pw = weight.index_select(1, index.to(weight.device))
        pcov = None if cov is None else cov.index_select(0, index.to(cov.device)).index_select(1, index.to(cov.device))
    else:
        pw, pcov = weight.index_select(0, index.to(weight.device)), cov
    W, fcov, budget, extra, eps = prepare(pw, lp, pcov, options)
    same = ("svd", "inputs-last") if hidden_is_input else ("svd",)
    return [c for c, _ in candidates(W, fcov, budget, extra, eps, leave_out=same)]


def _searched(stored: Sequence[Any], fresh: Sequence[Any], hidden_is_input: bool) -> list[Any]:
    """The searched order's candidates: the order-invariant ones copied from ``stored``, then ``fresh``."""
    return ([replace(c, order="searched") for c in stored if _order_invariant(c, hidden_is_input)]
            + [replace(c, order="searched") for c in fresh])


def _score_pair(pair: FFPair, members: Sequence[str], planned: Mapping[str, Any], modules: Mapping[str, nn.Module],
                cov_of: Mapping[str, Any], perm: Sequence[int], options: Any) -> dict[str, dict]:
    """Every member's candidates in the stored order and in the order ``perm`` (step 2), one after
    the other on this thread (what :func:`decide_pairs` spreads over its workers)."""
    out: dict[str, dict] = {}
    for m in members:
        weight = linear_weight(modules[m]).detach()
        hidden_is_input = m == pair.output
        stored = _score_one(weight, planned[m], cov_of[m], perm, hidden_is_input, "stored", options)
        fresh = _score_one(weight, planned[m], cov_of[m], perm, hidden_is_input, "searched", options)
        out[m] = {"stored": stored, "searched": _searched(stored, fresh, hidden_is_input)}
    return out


__all__ = ["decide_pairs", "ADOPT_MARGIN", "pair_tensors"]
