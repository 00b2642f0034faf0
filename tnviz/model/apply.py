"""Apply a plan: decompose each planned weight, one at a time, with one function for every face.

:func:`compress_layer` is the single place that turns one weight (and, data-aware, its input
covariance) into a tensor network: the leg placement, the split of a parameter budget between
bonds, the refit, and the rule that a network which does not save parameters is kept dense.  The
model path (:func:`apply_plan`: TN modules swapped into a deep copy), the weights-only path
(:func:`compress_weights`: factors of a file's tensors, read one at a time) and the app's preview
all call it, so the preview shows what the run will produce.

>>> import torch
>>> from tnviz.model.plan import Rule, make_plan
>>> model = torch.nn.Sequential(torch.nn.Linear(64, 64))
>>> result = apply_plan(model, make_plan(model, [Rule("^0$", "mpo", {"max_rank": 2})]), data_aware=False,
...                     device="cpu")
>>> result.layers[0].params_after < 64 * 64, type(result.model[0]).__name__
(True, 'TNLinear')
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..errors import DecompositionError, RankError, TnvizError
from .device import resolve_device
from .distributed import map_spread, svd_cost
from .factors import Factors
from .memory import TRIM_FLOOR, trim
from ..decompose.legs import inputs_last_cores  # noqa: F401  (the data-aware placement; re-exported)
from .plan import LayerPlan, Plan
from .surgery import build_layer, is_conv1d, linear_weight, set_module, tie_layer, to_device

ProgressFn = Callable[[int, int, str], None]

#: Where a data-aware MPO's legs go when the plan does not say (``in_cores`` / ``out_cores`` given
#: in a rule always win).
PLACEMENTS: dict[str, str] = {
    "auto": "data-aware MPO: every input leg on the last core, the output legs spread over the others, "
            "so the full input covariance is absorbed exactly (no Kronecker approximation)",
    "chain": "the builder's default: legs spread evenly along the chain, one of each per core",
}

#: How a data-aware MPO's parameter budget is split between its bonds when the plan gives a
#: parameter target (``ratio``); see :mod:`tnviz.decompose.split`.
BOND_SPLITS: dict[str, str] = {
    "data": "data-aware MPO with every input leg on the last core: try several splits between the output-side "
            "bonds and the input core's bond at the same parameters, keep the lowest data error",
    "uniform": "the same rank cap on every bond (decompose's target_params)",
}


@dataclass(frozen=True)
class Options:
    """How every layer is decomposed (the pipeline's settings beyond the plan)."""

    placement: str = "auto"
    bond_split: str = "data"
    refit_sweeps: int = 1
    refit_iters: int = 15
    precision: Any = None  # None: float64 with a covariance or a float64 weight, float32 otherwise
    decompose: Mapping[str, Any] = field(default_factory=dict)  # extra options for decompose()
    # method 'auto': per weight of a feed-forward pair, its candidates in both neuron orders and the
    # order adopted for the pair (tnviz.model.auto_order.decide_pairs)
    orders: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def check(self) -> None:
        if self.placement not in PLACEMENTS:
            raise TnvizError(f"placement must be one of {list(PLACEMENTS)}; got {self.placement!r}")
        if self.bond_split not in BOND_SPLITS:
            raise TnvizError(f"bond_split must be one of {list(BOND_SPLITS)}; got {self.bond_split!r}")


@dataclass
class LayerResult:
    """One compressed weight: sizes, errors, FLOPs, its network, and the time it took."""

    name: str
    kind: str
    shape: tuple[int, ...]
    method: str
    params_before: int
    params_after: int
    rel_error: float
    data_error: float | None
    ranks: dict[str, int]
    seconds: float
    network: Any = field(repr=False)
    flops_before: int = 0
    flops_after: int = 0
    weight: str = ""
    transposed: bool = False  # the model stores the weight as (in, out) (GPT-2's Conv1D); shape is (out, in)
    tied: tuple[str, ...] = ()  # weight names of the modules sharing this weight (see tnviz.model.plan)
    search: dict[str, Any] | None = None  # method 'auto': every candidate, the chosen and the runner-up

    @property
    def weight_name(self) -> str:
        return self.weight or f"{self.name}.weight"

    def row(self) -> dict[str, Any]:
        out = {"layer": self.name, "kind": self.kind, "shape": "x".join(map(str, self.shape)), "method": self.method,
               "params before": self.params_before, "params after": self.params_after,
               "ratio": self.params_before / max(self.params_after, 1), "weight error": self.rel_error,
               "data error": self.data_error, "ranks": ", ".join(f"{k}={v}" for k, v in self.ranks.items()),
               "FLOPs before": self.flops_before, "FLOPs after": self.flops_after, "seconds": self.seconds}
        if self.search is not None:
            from .auto import describe_choice

            out["chosen"], out["runner-up"] = describe_choice(self.search)
        return out


@dataclass(frozen=True)
class Kept:
    """A planned weight left dense, and why."""

    name: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


def _placed(options: Mapping[str, Any], method: str, shape: Sequence[int], data_aware: bool,
            placement: str) -> dict[str, Any]:
    """``options`` with the ``placement`` default applied (see :data:`PLACEMENTS`)."""
    opts = dict(options)
    if (placement != "auto" or not data_aware or method != "mpo" or len(shape) != 2
            or "in_cores" in opts or "out_cores" in opts):
        return opts
    from ..decompose.legs import make_legs

    legs = make_legs(shape, opts.get("in_dims"), opts.get("out_dims"))
    cores = inputs_last_cores(legs.in_dims, legs.out_dims)
    if cores is not None:
        opts["in_cores"], opts["out_cores"] = cores
    return opts


def compress_layer(weight: torch.Tensor, lp: LayerPlan, cov: torch.Tensor | None = None,
                   options: Options = Options()) -> Any:
    """The decomposition of one planned weight (``tnviz.decompose.Decomposition``), or a
    :class:`Kept` saying why the weight stays dense: the method cannot reach the truncation at
    rank 1 or does not apply to the weight's legs, or its network would not hold fewer parameters
    than the weight."""
    from ..decompose import decompose
    from ..decompose.data_aware import input_tensors
    from ..decompose.randomized import shared_svds
    from ..decompose.split import split_bonds

    if lp.method == "auto":  # the search picks the network, then calls back here with it
        from .auto import compress_auto

        return compress_auto(weight, lp, cov, options, compress=compress_layer, kept=Kept)
    precision = options.precision
    if precision is None:
        precision = torch.float64 if cov is not None or weight.dtype == torch.float64 else torch.float32
    weight = weight.detach().to(precision)
    extra = dict(options.decompose)
    opts = _placed(lp.options, lp.method, lp.shape, cov is not None, options.placement)
    try:
        if cov is not None:  # factored once: the bond split, the decomposition and the refit share it
            from ..decompose import data_aware as da
            from ..decompose.legs import make_legs

            legs = make_legs(weight.shape, opts.get("in_dims"), opts.get("out_dims"))
            cov = da.parse_covariance(cov, legs, weight.reshape(legs.out_features, legs.in_features),
                                      extra.get("cov_eps", da.DEFAULT_EPS))
        # the bond split scores its candidates from exact SVDs of the whitened weight's unfoldings;
        # the decomposition at the chosen caps meets the same first unfolding and reuses its factors
        with shared_svds():
            if cov is not None and options.bond_split == "data" and lp.method == "mpo" and len(lp.shape) == 2 \
                    and "target_params" in opts:
                legs = {k: opts[k] for k in ("in_dims", "out_dims", "in_cores", "out_cores") if k in opts}
                eps = {"cov_eps": extra["cov_eps"]} if "cov_eps" in extra else {}
                split = split_bonds(weight, cov, target_params=opts["target_params"], **legs, **eps)
                if split is not None:
                    opts = {k: v for k, v in opts.items() if k != "target_params"}
                    opts["max_rank"] = split.caps
            dec = decompose(weight, lp.method, input_cov=cov, **opts, **extra)
        if cov is not None and options.refit_sweeps and lp.method != "svd" and len(input_tensors(dec.network)) > 1:
            # the refit minimises a ridged objective: keep it only where it lowers the data error
            # (with every input leg on one tensor the covariance was absorbed exactly: nothing to refit)
            refit = decompose(weight, lp.method, input_cov=cov, refit_sweeps=options.refit_sweeps,
                              refit_iters=options.refit_iters, **opts, **extra)
            if refit.data_error is not None and dec.data_error is not None and refit.data_error < dec.data_error:
                dec = refit
    except (RankError, DecompositionError) as exc:  # e.g. a ratio this small weight cannot reach even at rank 1,
        return Kept(lp.name, f"{exc}; kept dense")  # or a tensor ring on a weight whose legs make one core
    if dec.params >= lp.params:
        return Kept(lp.name, f"the {lp.method} network would hold {dec.params:,} parameters, not fewer than the "
                             f"weight's {lp.params:,}; kept dense")
    return dec


def layer_flops(net: Any, kind: str, batch: int = 1) -> tuple[int, int]:
    """FLOPs per input row at ``batch`` of the dense layer and of its network on the best path (an
    embedding's lookup costs nothing dense; its network's cost is rebuilding the table)."""
    from ..cost import cost

    if kind == "Embedding":
        return 0, int(cost(net, 1).reconstruct_flops)
    c = cost(net, batch)
    return int(c.dense_flops), int(c.flops)


def result_of(lp: LayerPlan, dec: Any, flops_batch: int = 1) -> LayerResult:
    before, after = layer_flops(dec.network, lp.kind, flops_batch)
    search = dec.extra.get("auto")
    seconds = float(search["seconds"]) if search else float(dec.seconds)  # auto: the search and the winner's run
    return LayerResult(lp.name, lp.kind, lp.shape, getattr(dec, "method", "") or lp.method, lp.params, dec.params, float(dec.rel_error),
                       None if dec.data_error is None else float(dec.data_error), dict(dec.ranks),
                       seconds, dec.network, before, after, lp.weight_name, lp.transposed, tuple(lp.tied), search)


def calibration_stats(model: nn.Module, batches: Sequence[Any], names: Sequence[str], device: Any = None) -> dict:
    """Input second moments of the Linear/Conv1D/Conv2d modules ``names`` (one pass; Embeddings have none)."""
    from .calibrate import collect_input_stats

    modules = dict(model.named_modules())
    chosen = [n for n in names if isinstance(modules.get(n), (nn.Linear, nn.Conv2d)) or is_conv1d(modules.get(n))]
    if not chosen:
        return {}
    return collect_input_stats(model, batches, chosen, device=device)


@dataclass
class Applied:
    """What :func:`apply_plan` / :func:`compress_weights` did: the compressed layers, those kept
    dense, and (for a model) the compressed deep copy beside the untouched original."""

    layers: list[LayerResult]
    skipped: list[dict[str, str]]
    data_aware: bool
    device: str
    seconds: float
    plan: Plan
    original: nn.Module | None = None
    model: nn.Module | None = None
    # files: per weight its factors, in memory or read from disk
    factors: Factors = field(default_factory=Factors, repr=False)
    # the order search (order_search=True): the hidden-neuron permutations applied to ``model``
    # (tnviz.model.permute.Permutation) and, per feed-forward pair not searched, why
    permutations: list[Any] = field(default_factory=list)
    order_notes: list[dict[str, str]] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, Any]:
        before = sum(r.params_before for r in self.layers)
        after = sum(r.params_after for r in self.layers)
        out = {"layers": len(self.layers), "params_before": before, "params_after": after,
               "ratio": before / after if after else 1.0,  # nothing compressed: nothing gained
               "flops_before": sum(r.flops_before for r in self.layers),
               "flops_after": sum(r.flops_after for r in self.layers)}
        if self.original is not None and self.model is not None:
            out["model_params_before"] = sum(p.numel() for p in self.original.parameters())
            out["model_params_after"] = sum(p.numel() for p in self.model.parameters())
        return out

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.layers]


def apply_plan(model: nn.Module, plan: Plan, *, calibration: Sequence[Any] | None = None,
               data_aware: bool = True, device: Any = None, progress: ProgressFn | None = None,
               flops_batch: int = 1, strategy: str = "auto", stats: Mapping[str, Any] | None = None,
               precision: torch.dtype | None = None, refit_sweeps: int = 1, refit_iters: int = 15,
               placement: str = "auto", bond_split: str = "data", distributed: bool = False,
               journal: Any = None, order_search: bool = False, in_place: bool = False, workers: int | None = None,
               **decompose_options: Any) -> Applied:
    """Decompose every planned layer and return a compressed deep copy (the original is untouched).

    ``calibration``: batches for the data-aware statistics (required when ``data_aware``, unless
    ``stats`` from an earlier :func:`calibration_stats` are given). ``device``: where the copy
    lives and decompositions run (``None``: CUDA when present). ``progress(done, total, name)``.
    ``precision``: the dtype decompositions run in (default: float64 with a covariance, since a
    covariance from few calibration rows is near-singular and its Cholesky factor fails in float32;
    the layers get the original module's dtype). ``refit_sweeps`` / ``refit_iters``: with a
    covariance and input legs on several tensors (MPO, TR, Tucker, CP), the input tensors are refit
    by least squares on the full covariance after whitening with its Kronecker approximation; kept
    only where it lowers the data error; 0 turns it off. ``placement`` (:data:`PLACEMENTS`) and
    ``bond_split`` (:data:`BOND_SPLITS`): see there.  ``distributed``: the layers spread over the
    ranks of the initialized process group (:mod:`tnviz.model.distributed`); every rank gets all.
    ``order_search``: before decomposing, re-order the hidden neurons of each feed-forward pair whose
    first planned weight is an MPO of the hidden index (:func:`tnviz.model.permute.search_pairs`),
    both weights of the pair, so the copy computes the same function; ``permutations`` records them.
    ``in_place``: the TN layers go into ``model`` itself, not a copy (the block-by-block path, which
    needs the original no more); ``workers``: weights decomposed at once (default: one per core).
    ``stats`` may be a mapping that lets each layer's statistics go once it is read.
    """
    options = Options(placement, bond_split, refit_sweeps, refit_iters, precision, dict(decompose_options))
    options.check()
    dev = resolve_device(device)
    started = time.perf_counter()
    work = (model if in_place else copy.deepcopy(model)).to(dev).eval()
    names = plan.names()
    steps = len(names) + (1 if data_aware and stats is None else 0)
    if data_aware and stats is None:
        if calibration is None:
            raise TnvizError("a data-aware compression needs calibration batches; pass calibration=... or data_aware=False")
        if progress:
            progress(0, steps, "calibration")
        stats = calibration_stats(work, [to_device(b, dev) for b in calibration], names, dev)
    stats = stats if data_aware else {}
    orders, notes = [], []
    if order_search:
        from .permute import search_pairs

        if progress:
            progress(steps - len(names), steps, "order search")
        orders, stats, notes = search_pairs(work, plan, stats, inputs_last=bool(stats) and placement == "auto")
    if any(lp.method == "auto" for lp in plan.layers):  # auto: the neuron order decided per pair
        from dataclasses import replace

        from .auto_order import decide_pairs

        found, stats, more, decided = decide_pairs(work, plan, stats, options,
                                                   workers=1 if dev.type != "cpu" else workers)
        orders, notes, options = orders + found, notes + more, replace(options, orders=decided)
    results, skipped = [], []
    modules = dict(work.named_modules())
    offset = steps - len(names)
    if progress:
        progress(offset, steps, "decomposing")

    def one(lp: LayerPlan) -> Any:
        try:  # the covariance held by compress_layer alone, which lets it go once factored
            return compress_layer(linear_weight(modules[lp.name]), lp, _second_moment(stats.get(lp.name)), options)
        finally:
            trim(TRIM_FLOOR)

    done = (lambda n, lp: progress(offset + n, steps, lp.name)) if progress else None
    outcomes = _resumable(one, plan, journal, lambda fn, todo: map_spread(
        fn, todo, [svd_cost(lp.shape) for lp in todo], distributed=distributed,
        workers=1 if dev.type != "cpu" else workers, done=done, device=dev))
    trim()  # what the decompositions freed, back to the system once they are all done
    for lp, outcome in zip(plan.layers, outcomes):  # the surgery in plan order, on this thread
        if isinstance(outcome, Kept):
            skipped.append(outcome.as_dict())
            continue
        new = build_layer(modules[lp.name], outcome, strategy)
        set_module(work, lp.name, new)
        for alias in lp.tied:  # a tied lm_head shares the embedding's network: one set of parameters
            tie_layer(work, alias.removesuffix(".weight"), new)
        results.append(result_of(lp, outcome, flops_batch))
    if progress:
        progress(steps, steps, "done")
    return Applied(results, skipped, bool(stats), str(dev), time.perf_counter() - started, plan,
                   original=model, model=work.eval(), permutations=orders, order_notes=notes)


def _second_moment(stat: Any) -> torch.Tensor | None:
    return None if stat is None else stat.second_moment


def _resumable(one: Callable[[LayerPlan], Any], plan: Plan, journal: Any, run: Callable,
               slim: bool = False) -> list[Any]:
    """The outcome of every planned layer: with a :class:`tnviz.model.resume.Journal`, those an
    earlier run finished from it and the others computed by ``run`` and journaled as they finish.
    ``slim``: a journaled outcome is replaced by its record (:class:`tnviz.model.resume.Finished`,
    its factors on disk), so the factors of finished weights do not stay in memory."""
    if journal is None:
        return run(one, list(plan.layers))
    todo = [lp for lp in plan.layers if lp.name not in journal.finished]

    def recorded(lp: LayerPlan) -> Any:
        outcome = one(lp)
        record = journal.record(lp.name, outcome[0] if isinstance(outcome, tuple) else outcome)
        return record if slim else outcome

    fresh = iter(run(recorded, todo))
    return [journal.finished[lp.name] if lp.name in journal.finished else next(fresh) for lp in plan.layers]


def compress_weights(weights: Any, plan: Plan, *, covariances: Mapping[str, torch.Tensor] | None = None,
                     device: Any = None, progress: ProgressFn | None = None, flops_batch: int = 1,
                     precision: torch.dtype | None = None, placement: str = "auto", bond_split: str = "data",
                     distributed: bool = False, journal: Any = None, **decompose_options: Any) -> Applied:
    """Decompose the planned weights of a weights-only file (a :class:`tnviz.model.io.WeightsFile`),
    each read alone (memory-mapped) onto ``device``; ``covariances`` by weight name make a weight's
    decomposition data-aware.  The factors, per weight in the weight's dtype on the CPU
    (:class:`tnviz.model.factors.Factors`), are held in memory; with a ``journal`` each weight's
    stay in its journal file once it is done and are read from there when written, so the peak
    memory does not grow with the model.  ``distributed``: spread over the process group's ranks
    (:mod:`tnviz.model.distributed`)."""
    options = Options(placement, bond_split, 1, 15, precision, dict(decompose_options))
    options.check()
    dev = resolve_device(device)
    started = time.perf_counter()
    results, skipped, factors = [], [], Factors()
    if progress:
        progress(0, len(plan.layers), "decomposing")

    def one(lp: LayerPlan) -> Any:
        cov = None if not covariances else covariances.get(lp.weight_name)
        weight = weights.get(lp.weight_name, device=dev)  # read alone
        try:
            return compress_layer(weight, lp, cov, options)
        finally:
            del weight
            trim(TRIM_FLOOR)  # the weight's and the decomposition's memory back to the system (tnviz.model.memory)

    def held(lp: LayerPlan) -> tuple[Any, dict[str, torch.Tensor] | None]:  # no journal: factors in memory
        outcome = one(lp)
        if isinstance(outcome, Kept):
            return outcome, None
        kind = getattr(torch, weights.dtype(lp.weight_name))
        return outcome, {t: v.detach().to("cpu", kind).contiguous() for t, v in outcome.tensors.items()}

    done = (lambda n, lp: progress(n, len(plan.layers), lp.name)) if progress else None
    outcomes = _resumable(one if journal is not None else held, plan, journal, lambda fn, todo: map_spread(
        fn, todo, [svd_cost(lp.shape) for lp in todo], distributed=distributed,
        workers=1 if dev.type != "cpu" else None, done=done, device=dev), slim=True)
    trim()
    for lp, outcome in zip(plan.layers, outcomes):
        if isinstance(outcome, tuple):
            outcome, tensors = outcome
            if tensors is not None:
                factors.hold(lp.weight_name, tensors)
        elif not isinstance(outcome, Kept):  # journaled, by this run or a stopped one: read when written
            factors.on_disk(lp.weight_name, outcome.file, outcome.network.tensor_names,
                            weights.dtype(lp.weight_name))
        if isinstance(outcome, Kept):
            skipped.append(outcome.as_dict())
            continue
        results.append(result_of(lp, outcome, flops_batch))
    if progress:
        progress(len(plan.layers), len(plan.layers), "done")
    return Applied(results, skipped, bool(covariances), str(dev), time.perf_counter() - started, plan,
                   factors=factors)


def preview(source: Any, plan: Plan, stats: Mapping[str, Any] | None = None, device: Any = None,
            options: Options = Options()) -> list[dict[str, Any]]:
    """Parameters and weight error per planned layer, from the same :func:`compress_layer` the run
    uses (pass the calibration ``stats`` of a data-aware run to see what it will produce)."""
    dev = resolve_device(device)
    model = getattr(source, "model", source)
    modules = dict(model.named_modules()) if hasattr(model, "named_modules") else None
    weights = getattr(source, "weights", None) if modules is None else None
    rows = []
    for lp in plan.layers:
        weight = linear_weight(modules[lp.name]) if modules is not None else weights.get(lp.weight_name)
        cov = stats[lp.name].second_moment if stats and lp.name in stats else None
        try:
            outcome = compress_layer(weight.to(dev), lp, cov, options)
        except TnvizError as exc:
            rows.append({"layer": lp.name, "params after": None, "weight error": None, "note": str(exc)})
            continue
        if isinstance(outcome, Kept):
            rows.append({"layer": lp.name, "params after": lp.params, "weight error": 0.0, "note": outcome.reason})
        else:
            rows.append({"layer": lp.name, "params after": outcome.params, "weight error": float(outcome.rel_error),
                         "note": ""})
    return rows
