"""Tensorize a model with an architecture: plan, apply, evaluate, export and load back.

The workflow (the app's Tensorize page and scripts use the same calls):

1. :func:`layer_table` lists the candidate modules (``nn.Linear``, ``nn.Conv2d``, ``nn.Embedding``).
2. :func:`make_plan` picks per layer a method, legs and a truncation from :class:`Rule` s (first
   matching name pattern wins), or spreads ONE global target (a compression ratio or an error
   budget) over the layers by their sensitivity (:func:`allocate`, from cheap spectra).
3. :func:`apply_plan` runs calibration batches through the original once (data-aware by default,
   :func:`tnviz.model.calibrate.collect_input_stats`), decomposes layer by layer on the chosen
   device and replaces the modules of a deep copy by ``tnviz.nn`` layers (the original is kept).
4. :func:`evaluate` (``tnviz.model.evaluate`` metrics) and :func:`sensitivity` measure the
   functional effect; :mod:`tnviz.model.heal` fine-tunes.
5. :func:`export_model` writes the ``tnviz compress`` folder format; :func:`load_into` puts the TN
   layers of such a folder into a fresh model of the same architecture.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
>>> plan = make_plan(model, [Rule(r"^0$", "mpo", {"max_rank": 2})])
>>> [(p.name, p.method) for p in plan.layers]
[('0', 'mpo')]
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFileError, RankError, TnvizError
from .allocate import Allocation, allocate
from .device import resolve_device

#: Truncation kinds a rule may use: ``ratio`` (kept parameters = params / ratio) and decompose's own.
TRUNCATIONS: dict[str, str] = {
    "ratio": "compression ratio of the layer (params / ratio kept)",
    "max_rank": "largest bond / rank",
    "rtol": "relative error of the (whitened) weight",
    "energy": "kept fraction of the squared spectrum per bond",
}
#: Methods for layers: the decomposition registry's names.
METHODS = ("mpo", "tr", "tucker", "cp", "svd")
ProgressFn = Callable[[int, int, str], None]


# ---------------------------------------------------------------------- layer table
@dataclass(frozen=True)
class LayerInfo:
    """A module a tensor network can replace."""

    name: str  # module path, e.g. 'encoder.layer.0.intermediate.dense'
    kind: str  # 'Linear' | 'Conv' | 'Embedding'
    shape: tuple[int, ...]  # the weight's shape
    params: int  # weight parameters (bias not counted)

    @property
    def weight_name(self) -> str:
        return f"{self.name}.weight"


def layer_table(model: nn.Module) -> list[LayerInfo]:
    """Every ``nn.Linear``, groups=1 ``nn.Conv2d`` with numeric zero padding, and ``nn.Embedding``."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            kind = "Linear"
        elif isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros" \
                and not isinstance(module.padding, str):
            kind = "Conv"
        elif isinstance(module, nn.Embedding):
            kind = "Embedding"
        else:
            continue
        shape = tuple(module.weight.shape)
        if min(shape[:2]) < 2:
            continue
        out.append(LayerInfo(name, kind, shape, module.weight.numel()))
    return out


# ---------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Rule:
    """Settings for the layers whose module name matches ``pattern`` (``re.search``).

    ``truncation`` is one item ``{kind: value}`` with kind in :data:`TRUNCATIONS`; ``in_dims`` /
    ``out_dims`` fix the leg factorization (``None``: automatic); ``in_cores`` / ``out_cores``
    place the legs on MPO/TR cores (``None``: :func:`apply_plan`'s ``placement``).
    """

    pattern: str
    method: str = "mpo"
    truncation: Mapping[str, Any] = field(default_factory=lambda: {"ratio": 2.0})
    in_dims: tuple[int, ...] | None = None
    out_dims: tuple[int, ...] | None = None
    in_cores: tuple[int, ...] | None = None
    out_cores: tuple[int, ...] | None = None


@dataclass(frozen=True)
class LayerPlan:
    """What will be done to one layer: ``options`` go to :func:`tnviz.decompose.decompose`."""

    name: str
    kind: str
    shape: tuple[int, ...]
    params: int
    method: str
    options: Mapping[str, Any]

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.method} ({opts})"


@dataclass(frozen=True)
class Plan:
    """The layers to compress and how; ``allocation`` is set when a global target was spread."""

    layers: tuple[LayerPlan, ...]
    allocation: "Allocation | None" = None

    def names(self) -> list[str]:
        return [p.name for p in self.layers]


def _check_rule(rule: Rule) -> None:
    if rule.method not in METHODS:
        raise RankError(f"a rule's method must be one of {list(METHODS)}; got {rule.method!r}")
    try:
        re.compile(rule.pattern)
    except re.error as error:
        raise TnvizError(f"a layer pattern must be a valid regular expression; got {rule.pattern!r} ({error})") from None
    if len(rule.truncation) != 1:
        raise RankError(f"a rule needs exactly one truncation of {list(TRUNCATIONS)}; got {dict(rule.truncation)}")
    (kind, value), = rule.truncation.items()
    if kind not in TRUNCATIONS:
        raise RankError(f"a truncation must be one of {list(TRUNCATIONS)}; got {kind!r}")
    if kind == "ratio" and not (isinstance(value, (int, float)) and value > 1):
        raise RankError(f"a compression ratio must be a number above 1; got {value!r}")


def _options(info: LayerInfo, rule: Rule, truncation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    (kind, value), = (truncation or rule.truncation).items()
    opts: dict[str, Any] = {}
    if info.kind != "Conv":  # a conv kernel keeps its natural legs (cin, kh, kw) -> cout
        if rule.in_dims is not None:
            opts["in_dims"] = tuple(rule.in_dims)
        if rule.out_dims is not None:
            opts["out_dims"] = tuple(rule.out_dims)
        if rule.in_cores is not None:
            opts["in_cores"] = tuple(rule.in_cores)
        if rule.out_cores is not None:
            opts["out_cores"] = tuple(rule.out_cores)
    if kind == "ratio":
        opts["target_params"] = max(1, int(info.params / float(value)))
    elif kind == "target_params":
        opts["target_params"] = int(value)
    else:
        opts[kind] = value
    return opts


def make_plan(model: nn.Module, rules: Sequence[Rule] | None = None, *, target_ratio: float | None = None,
              error_budget: float | None = None, covariances: Mapping[str, torch.Tensor] | None = None,
              device: Any = None) -> Plan:
    """Match every candidate layer against ``rules`` (first match wins; unmatched layers stay dense).

    With ``target_ratio`` (selected parameters / kept parameters, > 1) or ``error_budget`` (the
    root-mean-square relative error over the selected layers, in (0, 1)), the rules' truncations
    are replaced by the per-layer parameter counts from :func:`allocate`; ``covariances``
    (weight-input second moments by module name) make the allocation data-aware.
    """
    if target_ratio is not None and error_budget is not None:
        raise RankError(f"a plan takes one global target, a ratio or an error budget; got both ({target_ratio}, {error_budget})")
    rules = list(rules) if rules else [Rule(".*")]
    for rule in rules:
        _check_rule(rule)
    table = layer_table(model)
    matched: list[tuple[LayerInfo, Rule]] = []
    for info in table:
        for rule in rules:
            if re.search(rule.pattern, info.name):
                matched.append((info, rule))
                break
    if not matched:
        raise TnvizError(f"the layer patterns must select at least one layer; {[r.pattern for r in rules]} "
                         f"select none (layers: {', '.join(i.name for i in table[:6])}, ...)")
    if target_ratio is None and error_budget is None:
        return Plan(tuple(LayerPlan(i.name, i.kind, i.shape, i.params, r.method, _options(i, r)) for i, r in matched))
    modules = dict(model.named_modules())
    weights = {i.name: modules[i.name].weight for i, _ in matched}
    alloc = allocate(weights, target_ratio=target_ratio, error_budget=error_budget, covariances=covariances,
                     device=device)
    layers = []
    for info, rule in matched:
        keep = alloc.params[info.name]
        if keep >= info.params:
            continue  # the allocation keeps this layer dense
        layers.append(LayerPlan(info.name, info.kind, info.shape, info.params, rule.method,
                                _options(info, rule, {"target_params": keep})))
    return Plan(tuple(layers), alloc)


# ---------------------------------------------------------------------- TN embedding
class TNEmbedding(nn.Module):
    """An embedding table ``(num_embeddings, dim)`` held as a tensor network (a TNLinear with
    ``out_features = num_embeddings``); lookups gather rows of the rebuilt table."""

    def __init__(self, linear: nn.Module, padding_idx: int | None = None) -> None:
        super().__init__()
        self.linear = linear
        self.padding_idx = padding_idx
        self.num_embeddings, self.embedding_dim = linear.out_features, linear.in_features

    @property
    def network(self):
        return self.linear.network

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        table = self.linear.cached("embedding-table", self.linear.to_dense)
        return F.embedding(ids, table, self.padding_idx)


# ---------------------------------------------------------------------- apply
@dataclass
class LayerResult:
    """One replaced layer: sizes, errors, FLOPs and time."""

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

    def row(self) -> dict[str, Any]:
        return {"layer": self.name, "kind": self.kind, "shape": "x".join(map(str, self.shape)), "method": self.method,
                "params before": self.params_before, "params after": self.params_after,
                "ratio": self.params_before / max(self.params_after, 1), "weight error": self.rel_error,
                "data error": self.data_error, "ranks": ", ".join(f"{k}={v}" for k, v in self.ranks.items()),
                "FLOPs before": self.flops_before, "FLOPs after": self.flops_after, "seconds": self.seconds}


@dataclass
class Tensorized:
    """The result of :func:`apply_plan`: the compressed deep copy beside the untouched original."""

    original: nn.Module
    model: nn.Module
    layers: list[LayerResult]
    skipped: list[dict[str, str]]
    data_aware: bool
    device: str
    seconds: float
    plan: Plan

    @property
    def totals(self) -> dict[str, Any]:
        before = sum(r.params_before for r in self.layers)
        after = sum(r.params_after for r in self.layers)
        model_before = sum(p.numel() for p in self.original.parameters())
        model_after = sum(p.numel() for p in self.model.parameters())
        return {"layers": len(self.layers), "params_before": before, "params_after": after,
                "ratio": before / max(after, 1), "model_params_before": model_before,
                "model_params_after": model_after,
                "flops_before": sum(r.flops_before for r in self.layers),
                "flops_after": sum(r.flops_after for r in self.layers)}

    def rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.layers]


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch (tensor, tuple/list, dict) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name``."""
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)


def build_layer(original: nn.Module, dec: Any, strategy: str = "auto") -> nn.Module:
    """The ``tnviz.nn`` module for ``original`` (Linear, Conv2d, Embedding) from a decomposition."""
    from ..nn import TNConv2d, TNLinear

    if isinstance(original, nn.Linear):
        bias = None if original.bias is None else original.bias.detach()
        return TNLinear.from_decomposition(dec, bias, device=original.weight.device, dtype=original.weight.dtype,
                                           strategy=strategy)
    if isinstance(original, nn.Conv2d):
        return TNConv2d.from_decomposition(dec, original, strategy=strategy)
    if isinstance(original, nn.Embedding):
        lin = TNLinear.from_decomposition(dec, None, device=original.weight.device, dtype=original.weight.dtype,
                                          strategy=strategy)
        return TNEmbedding(lin, original.padding_idx)
    raise TnvizError(f"a layer to tensorize must be Linear, Conv2d or Embedding; got {type(original).__name__}")


def _flops(net: Any, kind: str, batch: int) -> tuple[int, int]:
    from ..cost import cost

    if kind == "Embedding":  # a lookup: rebuilding the table is the work
        c = cost(net, 1)
        return 0, int(c.reconstruct_flops)
    c = cost(net, batch)
    return int(c.dense_flops), int(c.flops)


def calibration_stats(model: nn.Module, batches: Iterable[Any], names: Sequence[str], device: Any = None) -> dict:
    """Input second moments of the Linear/Conv2d modules ``names`` (one pass; Embeddings have none)."""
    from .calibrate import collect_input_stats

    modules = dict(model.named_modules())
    chosen = [n for n in names if isinstance(modules.get(n), (nn.Linear, nn.Conv2d))]
    if not chosen:
        return {}
    return collect_input_stats(model, batches, chosen, device=device)


#: Where :func:`apply_plan` puts the legs of a data-aware MPO when the plan does not say
#: (``in_cores`` / ``out_cores`` given in a rule always win).
PLACEMENTS: dict[str, str] = {
    "auto": "data-aware MPO: every input leg on the last core, the output legs spread over the others, "
            "so the full input covariance is absorbed exactly (no Kronecker approximation)",
    "chain": "the builder's default: legs spread evenly along the chain, one of each per core",
}


#: How :func:`apply_plan` splits a data-aware MPO's parameter budget between its bonds when the
#: plan gives a parameter target (``ratio``); see :mod:`tnviz.decompose.split`.
BOND_SPLITS: dict[str, str] = {
    "data": "data-aware MPO with every input leg on the last core: try several splits between the output-side "
            "bonds and the input core's bond at the same parameters, keep the lowest data error",
    "uniform": "the same rank cap on every bond (decompose's target_params)",
}


def inputs_last_cores(in_dims: Sequence[int], out_dims: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``(in_cores, out_cores)`` putting every input leg on the last of ``max(len(in), len(out))``
    MPO cores and the output legs, in order, spread evenly over the cores before it; ``None``
    where that is impossible or changes nothing (one input leg, or too few output legs to give
    each other core one).

    >>> inputs_last_cores((8, 8, 6), (16, 12, 8))
    ((2, 2, 2), (0, 0, 1))
    """
    n = max(len(in_dims), len(out_dims))
    if len(in_dims) < 2 or n < 2 or len(out_dims) < n - 1:
        return None
    return (n - 1,) * len(in_dims), tuple(k * (n - 1) // len(out_dims) for k in range(len(out_dims)))


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


def apply_plan(model: nn.Module, plan: Plan, *, calibration: Sequence[Any] | None = None,
               data_aware: bool = True, device: Any = None, progress: ProgressFn | None = None,
               flops_batch: int = 1, strategy: str = "auto", stats: Mapping[str, Any] | None = None,
               precision: torch.dtype = torch.float64, refit_sweeps: int = 1, refit_iters: int = 15,
               placement: str = "auto", bond_split: str = "data", **decompose_options: Any) -> Tensorized:
    """Decompose every planned layer and return a compressed deep copy (the original is untouched).

    ``calibration``: batches for the data-aware statistics (required when ``data_aware``, unless
    ``stats`` from an earlier :func:`calibration_stats` are given). ``device``: where the copy
    lives and decompositions run (``None``: CUDA when present). ``progress(done, total, name)``.
    ``precision``: the dtype decompositions run in (float64 by default: a covariance from few
    calibration rows is near-singular, and its Cholesky factor fails in float32); the layers get
    the original module's dtype. ``refit_sweeps`` / ``refit_iters``: with a covariance and input
    legs on several tensors (MPO, TR, Tucker, CP), the input tensors are refit by least squares on
    the full covariance after whitening with its Kronecker approximation (on MiniLM's FF weights at
    half parameters this takes the data error of MPO from ~0.44 to ~0.23; it minimises a ridged
    objective, so it is kept only where it lowers the data error; 0 turns it off).
    ``placement`` (a key of :data:`PLACEMENTS`): ``"auto"`` puts a data-aware MPO's input legs
    on one core (the last) when the plan does not place them, so the full covariance is absorbed
    exactly; on MiniLM's FF weights at half parameters this lowers the data error more than the
    refit does (see ``benchmarks/bench_minilm_compress.py``); ``"chain"`` keeps the builder's.
    ``bond_split`` (a key of :data:`BOND_SPLITS`): ``"data"`` chooses how a data-aware MPO with
    its inputs on the last core spends a ``ratio`` / ``target_params`` budget between its bonds by
    the data error (:func:`tnviz.decompose.split.split_bonds`; never worse on the calibration
    data than the uniform caps, which are one of the candidates); ``"uniform"``: one cap for all.
    """
    from ..decompose import decompose
    from ..decompose.data_aware import input_tensors
    from ..decompose.split import split_bonds

    if placement not in PLACEMENTS:
        raise TnvizError(f"placement must be one of {list(PLACEMENTS)}; got {placement!r}")
    if bond_split not in BOND_SPLITS:
        raise TnvizError(f"bond_split must be one of {list(BOND_SPLITS)}; got {bond_split!r}")
    dev = resolve_device(device)
    started = time.perf_counter()
    work = copy.deepcopy(model).to(dev).eval()
    names = plan.names()
    if data_aware and stats is None:
        if calibration is None:
            raise TnvizError("a data-aware compression needs calibration batches; pass calibration=... or data_aware=False")
        if progress:
            progress(0, len(names) + 1, "calibration")
        stats = calibration_stats(work, [to_device(b, dev) for b in calibration], names, dev)
    stats = stats if data_aware else {}
    results, skipped = [], []
    modules = dict(work.named_modules())
    for k, lp in enumerate(plan.layers):
        if progress:
            progress(k + (1 if data_aware else 0), len(names) + (1 if data_aware else 0), lp.name)
        module = modules[lp.name]
        weight = module.weight.detach().to(precision)
        cov = stats[lp.name].second_moment if lp.name in stats else None
        options = _placed(lp.options, lp.method, lp.shape, cov is not None, placement)
        try:
            if cov is not None and bond_split == "data" and lp.method == "mpo" and len(lp.shape) == 2 \
                    and "target_params" in options:
                legs = {k: options[k] for k in ("in_dims", "out_dims", "in_cores", "out_cores") if k in options}
                eps = {"cov_eps": decompose_options["cov_eps"]} if "cov_eps" in decompose_options else {}
                split = split_bonds(weight, cov, target_params=options["target_params"], **legs, **eps)
                if split is not None:
                    options = {k: v for k, v in options.items() if k != "target_params"}
                    options["max_rank"] = split.caps
            dec = decompose(weight, lp.method, input_cov=cov, **options, **decompose_options)
            if cov is not None and refit_sweeps and lp.method != "svd" and len(input_tensors(dec.network)) > 1:
                # the refit minimises a ridged objective: keep it only where it lowers the data error
                # (with every input leg on one tensor the covariance was absorbed exactly: nothing to refit)
                refit = decompose(weight, lp.method, input_cov=cov, refit_sweeps=refit_sweeps,
                                  refit_iters=refit_iters, **options, **decompose_options)
                if refit.data_error is not None and dec.data_error is not None and refit.data_error < dec.data_error:
                    dec = refit
        except RankError as exc:
            skipped.append({"name": lp.name, "reason": f"{exc}; kept dense"})
            continue
        if dec.params >= lp.params:
            skipped.append({"name": lp.name, "reason": f"the {lp.method} network would hold {dec.params:,} parameters, "
                            f"not fewer than the weight's {lp.params:,}; kept dense"})
            continue
        layer = build_layer(module, dec, strategy)
        set_module(work, lp.name, layer)
        before, after = _flops(dec.network, lp.kind, flops_batch)
        results.append(LayerResult(lp.name, lp.kind, lp.shape, lp.method, lp.params, dec.params, float(dec.rel_error),
                                   None if dec.data_error is None else float(dec.data_error),
                                   dict(dec.ranks), float(dec.seconds), dec.network, before, after))
    if progress:
        progress(1, 1, "done")
    return Tensorized(model, work.eval(), results, skipped, bool(stats), str(dev), time.perf_counter() - started, plan)


def preview(model: nn.Module, plan: Plan, device: Any = None) -> list[dict[str, Any]]:
    """Parameters and weight error per planned layer without calibration (for the layer table)."""
    from ..decompose import decompose

    dev = resolve_device(device)
    modules = dict(model.named_modules())
    rows = []
    for lp in plan.layers:
        try:
            dec = decompose(modules[lp.name].weight.detach().to(dev).float(), lp.method, **dict(lp.options))
            rows.append({"layer": lp.name, "params after": dec.params, "weight error": float(dec.rel_error), "note": ""})
        except TnvizError as exc:
            rows.append({"layer": lp.name, "params after": None, "weight error": None, "note": str(exc)})
    return rows


# ---------------------------------------------------------------------- evaluate
def tn_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The ``tnviz.nn`` layers of a model by module name."""
    from ..nn import TNConv2d, TNLinear

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, (TNConv2d, TNEmbedding)) or (isinstance(m, TNLinear) and not _inside_tn(name, out)):
            out[name] = m
    return out


def _inside_tn(name: str, found: Mapping[str, Any]) -> bool:
    return any(name.startswith(f"{parent}.") for parent in found)


@torch.no_grad()
def functional(kind: str, reference: nn.Module, model: nn.Module, batches: Sequence[Any] | None = None,
               reference_outputs: Any = None) -> dict[str, float]:
    """The functional effect: ``kind`` 'digits' (held-out accuracy), 'minilm' (embedding cosine on
    held-out sentences) or anything else (output agreement on ``batches``)."""
    from .evaluate import digits_accuracy, embedding_cosine, output_agreement

    if kind == "digits":
        return {"accuracy": digits_accuracy(model)}
    if kind == "minilm":
        rep = embedding_cosine(reference if reference_outputs is None else reference_outputs, model)
        return {"cosine": rep.mean, "cosine min": rep.min}
    if not batches:
        raise TnvizError("output agreement needs sample input batches; got none")
    agree = output_agreement(reference, model, batches)
    out = {"output cosine": agree.cosine, "output rel. error": agree.rel_error}
    if agree.top1 is not None:
        out["top-1 agreement"] = agree.top1
    return out


def sensitivity(result: Tensorized, kind: str, batches: Sequence[Any] | None = None,
                progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """The functional effect of compressing each layer alone (the others kept dense)."""
    scratch = copy.deepcopy(result.original).to(result.device).eval()
    originals = dict(scratch.named_modules())
    compressed = dict(result.model.named_modules())
    reference = None
    if kind == "minilm":
        from .demos import embed, sentences

        reference = embed(sentences("heldout"), scratch)
    rows = []
    for k, layer in enumerate(result.layers):
        if progress:
            progress(k, len(result.layers), layer.name)
        dense = originals[layer.name]
        set_module(scratch, layer.name, compressed[layer.name])
        try:
            metrics = functional(kind, scratch if reference is None else reference, scratch, batches, reference)
        finally:
            set_module(scratch, layer.name, dense)
        rows.append({"layer": layer.name, **metrics})
    return rows


# ---------------------------------------------------------------------- export / load back
def export_model(result: Tensorized | nn.Module, folder: str | os.PathLike, *, report: Mapping[str, Any] | None = None,
                 source: str = "model") -> dict[str, Any]:
    """Write the compressed (possibly healed) model as the ``tnviz compress`` folder format.

    ``model.safetensors`` holds the factors of every TN layer as ``<module>.weight::<tensor>``
    and every other tensor of the model's state_dict under its original name (a TN layer's bias
    as ``<module>.bias``); ``tnviz.json`` per layer the network spec, name, shape and errors.
    """
    from .compress import FORMAT, SEPARATOR, VERSION, write_safetensors_streamed

    model = result.model if isinstance(result, Tensorized) else result
    by_name = {r.name: r for r in result.layers} if isinstance(result, Tensorized) else {}
    tns = tn_modules(model)
    factors: dict[str, torch.Tensor] = {}
    layers = []
    for name, module in tns.items():
        lin = module.linear if hasattr(module, "linear") else module
        net = lin.network
        for tname, t in lin.named_network_tensors().items():
            factors[f"{name}.weight{SEPARATOR}{tname}"] = t.detach()
        if isinstance(module, TNEmbedding):
            shape, kind = [module.num_embeddings, module.embedding_dim], "Embedding"
        elif hasattr(module, "kernel_size"):
            shape, kind = [module.out_channels, module.in_channels, *module.kernel_size], "Conv"
        else:
            shape, kind = [lin.out_features, lin.in_features], "Linear"
        info = by_name.get(name)
        dtype = str(next(iter(lin.named_network_tensors().values())).dtype).removeprefix("torch.")
        layers.append({
            "name": f"{name}.weight", "module": name, "shape": shape, "dtype": dtype, "kind": kind,
            "method": info.method if info else net.name, "params_before": math.prod(shape),
            "params_after": net.params, "rel_error": info.rel_error if info else None,
            "data_error": info.data_error if info else None, "ranks": {i: net.sizes[i] for i in net.internal_indices},
            "seconds": info.seconds if info else 0.0, "network": net.to_dict(),
        })
    rest: dict[str, torch.Tensor] = {}
    tn_prefixes = tuple(f"{n}." for n in tns)
    for key, t in model.state_dict().items():
        if key.startswith(tn_prefixes):
            module = next(n for n in tns if key.startswith(f"{n}."))
            leaf = key[len(module) + 1:]
            if leaf in ("bias", "linear.bias"):
                rest[f"{module}.bias"] = t.detach()
            continue  # factors were taken above
        rest[key] = t.detach()
    items = [(n, str(t.dtype).removeprefix("torch."), tuple(t.shape), (lambda t=t: t)) for n, t in factors.items()]
    items += [(n, str(t.dtype).removeprefix("torch."), tuple(t.shape), (lambda t=t: t)) for n, t in rest.items()]
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise ModelFileError(f"the output must be a folder; {str(out)!r} is a file")
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors_streamed(out / "model.safetensors", items, metadata={"format": FORMAT})
    before = sum(layer["params_before"] for layer in layers)
    after = sum(layer["params_after"] for layer in layers)
    doc = {"format": FORMAT, "version": VERSION, "source": source,
           "method": sorted({layer["method"] for layer in layers}), "layers": layers, "untouched": list(rest),
           "skipped": result.skipped if isinstance(result, Tensorized) else [],
           "totals": {"params_before": before, "params_after": after, "ratio": before / max(after, 1)},
           "device": result.device if isinstance(result, Tensorized) else "", **(dict(report) if report else {})}
    (out / "tnviz.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def load_into(model: nn.Module, folder: str | os.PathLike, strategy: str = "auto") -> nn.Module:
    """Put the TN layers of an exported folder into ``model`` (same architecture, in place) and load
    every other tensor; returns the model in eval mode. Refuses a folder that does not fit."""
    from ..nn import TNConv2d, TNLinear
    from .compress import load_compressed

    saved = load_compressed(folder)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    modules = dict(model.named_modules())
    rest = dict(saved.untouched)
    for name, layer in saved.layers.items():
        path = layer.info.get("module") or name.removesuffix(".weight")
        original = modules.get(path)
        if original is None or not hasattr(original, "weight") or tuple(original.weight.shape) != tuple(layer.shape):
            got = None if original is None or not hasattr(original, "weight") else tuple(original.weight.shape)
            raise ModelFileError(f"the model must have a module {path!r} with weight shape {tuple(layer.shape)} "
                                 f"to take this layer; it has {got}")
        tensors = {k: v.to(device) for k, v in layer.tensors.items()}
        bias = rest.pop(f"{path}.bias", None)
        if isinstance(original, nn.Conv2d):
            new = TNConv2d(layer.network, original.in_channels, original.kernel_size, original.stride, original.padding,
                           original.dilation, bias is not None, device=device, dtype=tensors[next(iter(tensors))].dtype,
                           strategy=strategy)
            new.linear.load_tensors(tensors)
            if bias is not None:
                with torch.no_grad():
                    new.linear.bias.copy_(bias)
        else:
            lin = TNLinear.from_tensors(layer.network, tensors, None if bias is None else bias.to(device),
                                        strategy=strategy)
            new = TNEmbedding(lin, original.padding_idx) if isinstance(original, nn.Embedding) else lin
        set_module(model, path, new)
    missing, unexpected = model.load_state_dict({k: v.to(device) for k, v in rest.items()}, strict=False)
    unexpected = [k for k in unexpected]
    missing = [k for k in missing if not _tn_key(k, saved)]
    if unexpected or missing:
        raise ModelFileError(f"the folder's tensors must match the model's; missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    return model.eval()


def _tn_key(key: str, saved: Any) -> bool:
    return any(key.startswith(f"{layer.info.get('module') or n.removesuffix('.weight')}.") for n, layer in saved.layers.items())


# ---------------------------------------------------------------------- models with their inputs
@dataclass
class Subject:
    """A model with what measures it: ``kind`` 'digits', 'minilm' or 'hf'; calibration batches;
    ``samples`` for output agreement (HF models); ``inputs`` says where both come from."""

    name: str
    kind: str
    model: nn.Module
    calibration: list
    samples: list
    inputs: str = ""


def demo_subject(name: str, device: Any = None) -> Subject:
    """A bundled demo (``tnviz.model.demos.DEMOS``) with its calibration batches."""
    from .demos import DEMOS, load_demo

    model = load_demo(name, device)
    demo = DEMOS[name]
    kind = "minilm" if name == "minilm" else "digits"
    inputs = ("the bundled sentences (calibration split; held-out split for the metric)" if kind == "minilm"
              else "scikit-learn's digits (training split for calibration, test split for the metric)")
    return Subject(name, kind, model, demo.calibration(model, device=device), demo.heldout(model, device=device),
                   inputs)


def hf_subject(path: str | os.PathLike, device: Any = None, *, max_bytes: int | None = None, samples: int = 8,
               tokens: int = 16, seed: int = 0, batch_size: int = 32, max_tokens: int = 128) -> Subject:
    """A Hugging Face folder or zip built as a model (no remote code), with its inputs.

    With a ``tokenizer.json`` in the upload, the bundled sentences tokenized by it (calibration
    split for calibration and healing, held-out split for output agreement; ``batch_size`` per
    batch, at most ``max_tokens`` tokens); without one, random token ids (``samples`` sequences of
    ``tokens`` ids, seeded), which exercise every weight but not the statistics of real text.
    """
    from .demos import build_hf_model, sentences
    from .io import MAX_FILE_BYTES, HFFolderWeights, open_weights

    weights = open_weights(path, max_bytes=max_bytes or MAX_FILE_BYTES)
    try:
        if not isinstance(weights, HFFolderWeights):
            raise ModelFileError(f"a model with an architecture must be a Hugging Face folder or zip "
                                 f"(config.json + model.safetensors); {Path(path).name!r} holds weights only")
        model = build_hf_model(weights, device)
        config = weights.config or {}
        vocab = int(config.get("vocab_size") or 100)
        tokenizer, reason = _upload_tokenizer(Path(weights.folder), config, max_tokens)
    finally:
        weights.close()
    dev = next(model.parameters()).device
    if tokenizer is not None:
        def encode(texts: Sequence[str]) -> list[dict[str, torch.Tensor]]:
            out = []
            for start in range(0, len(texts), batch_size):
                enc = tokenizer.encode_batch(list(texts[start:start + batch_size]))
                ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
                mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
                out.append({"input_ids": ids.to(dev), "attention_mask": mask.to(dev)})
            return out

        calibration, held_out = encode(sentences("calibration")), encode(sentences("heldout"))
        largest = max(int(b["input_ids"].max()) for b in calibration + held_out)
        if largest < vocab:
            return Subject(Path(path).name, "hf", model, calibration, held_out,
                           f"the bundled sentences tokenized by the upload's tokenizer.json ({len(calibration)} "
                           f"calibration batches, {len(held_out)} held-out)")
        reason = (f"its tokenizer.json gives token ids up to {largest}, beyond the config's vocab_size={vocab}, "
                  f"so it does not belong to this model")
    generator = torch.Generator().manual_seed(seed)

    def batch() -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (samples, tokens), generator=generator).to(dev)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return Subject(Path(path).name, "hf", model, [batch(), batch()], [batch()],
                   f"random token ids ({reason}; add one to calibrate on real text)")


def _upload_tokenizer(folder: Path, config: Mapping[str, Any], max_tokens: int) -> tuple[Any, str]:
    """The folder's ``tokenizer.json`` (``tokenizers`` package), padding to the longest sentence
    and truncating at ``max_tokens`` (and the model's positions), or ``None`` and why not."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None, "the upload has no tokenizer.json"
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # a file this library cannot read: calibrate on random ids, say why
        return None, f"its tokenizer.json could not be read ({str(error)[:120]})"
    pad_id = int(config.get("pad_token_id") or 0)
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "[PAD]")
    positions = int(config.get("max_position_embeddings") or max_tokens)
    tokenizer.enable_truncation(max_length=min(max_tokens, positions))
    return tokenizer, ""


def zip_folder(folder: str | os.PathLike) -> bytes:
    """The files of ``folder`` (not recursive: an export folder is flat) as zip bytes."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(Path(folder).iterdir()):
            if path.is_file():
                archive.write(path, path.name)
    return buffer.getvalue()


def compare_methods(subject: Subject, pattern: str, ratio: float, methods: Sequence[str] = ("svd", "mpo"), *,
                    heal_steps: int = 50, device: Any = None, progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Method x plain/data-aware x healed at the same parameters (``ratio`` on the layers matching
    ``pattern``): one row per (method, data-aware) with the functional metric before and after
    layer-wise healing."""
    from .heal import heal_layerwise

    dev = resolve_device(device)
    reference = None
    if subject.kind == "minilm":
        from .demos import embed, sentences

        reference = embed(sentences("heldout"), subject.model)
    names = make_plan(subject.model, [Rule(pattern, methods[0], {"ratio": ratio})]).names()
    stats = calibration_stats(subject.model, [to_device(b, dev) for b in subject.calibration], names, dev)
    rows, total, done = [], 2 * len(methods), 0
    for method in methods:
        plan = make_plan(subject.model, [Rule(pattern, method, {"ratio": ratio})])
        for aware in (False, True):
            if progress:
                progress(done, total, f"{method} {'data-aware' if aware else 'plain'}")
            result = apply_plan(subject.model, plan, data_aware=aware, stats=stats if aware else None, device=dev)
            before = functional(subject.kind, subject.model, result.model, subject.samples, reference)
            heal_layerwise(result.model, subject.model, subject.calibration, steps=heal_steps)
            after = functional(subject.kind, subject.model, result.model, subject.samples, reference)
            metric = next(iter(before))
            rows.append({"method": method, "data-aware": aware, "ratio": result.totals["ratio"],
                         f"{metric}": before[metric], f"{metric} healed": after[metric]})
            done += 1
    if progress:
        progress(total, total, "done")
    return rows


def compress_model(source: str | os.PathLike, output: str | os.PathLike, *, method: str = "mpo",
                   layers: str | None = None, truncation: Mapping[str, Any] | None = None,
                   target_ratio: float | None = None, error_budget: float | None = None, data_aware: bool = True,
                   heal: str | None = None, heal_steps: int = 50, device: Any = None,
                   progress: ProgressFn | None = None) -> dict[str, Any]:
    """Compress a model WITH an architecture end to end (what ``tnviz compress`` needs for demos and
    Hugging Face folders/zips): plan, apply, measure, optionally heal, export to ``output``.

    ``source``: a demo name (``digits-mlp``, ``digits-cnn``, ``minilm``) or a Hugging Face
    folder/zip. ``heal``: ``None``, ``'layer-wise'``, ``'distill'`` (every TN layer jointly to the
    original's outputs, :func:`tnviz.model.heal.heal_distill`) or ``'end-to-end'`` (digits only). Returns
    the ``tnviz.json`` document with ``functional`` = the metric of the original, the compressed
    and (if healed) the healed model.
    """
    from .demos import DEMOS

    subject = demo_subject(str(source), device) if str(source) in DEMOS else hf_subject(source, device)
    rule = Rule(layers or ".*", method, dict(truncation or {"ratio": 2.0}))
    plan = make_plan(subject.model, [rule], target_ratio=target_ratio, error_budget=error_budget, device=device)
    result = apply_plan(subject.model, plan, calibration=subject.calibration, data_aware=data_aware, device=device,
                        progress=progress)
    reference = None
    if subject.kind == "minilm":
        from .demos import embed, sentences

        reference = embed(sentences("heldout"), subject.model)
    measured = {"original": functional(subject.kind, subject.model, subject.model, subject.samples, reference),
                "compressed": functional(subject.kind, subject.model, result.model, subject.samples, reference)}
    if heal:
        from .heal import heal_digits, heal_distill, heal_layerwise

        if heal == "layer-wise":
            heal_layerwise(result.model, subject.model, [to_device(b, result.device) for b in subject.calibration],
                           steps=heal_steps)
        elif heal == "distill":
            heal_distill(result.model, subject.model, [to_device(b, result.device) for b in subject.calibration],
                         steps=heal_steps)
        elif heal == "end-to-end" and subject.kind == "digits":
            heal_digits(result.model, epochs=heal_steps)
        else:
            raise TnvizError(f"healing must be 'layer-wise', 'distill', or 'end-to-end' for the digits demos; got {heal!r} "
                             f"for a {subject.kind} model")
        measured["healed"] = functional(subject.kind, subject.model, result.model, subject.samples, reference)
    return export_model(result, output, source=subject.name,
                        report={"functional": measured, "data_aware": result.data_aware, "seconds": result.seconds,
                                "plan": [{"name": p.name, "method": p.method, **dict(p.options)} for p in plan.layers]})
