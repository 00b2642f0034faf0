"""Feed-forward pairs and their hidden-neuron permutations (the model side of the order search).

The hidden neurons of a feed-forward pair ``W_out · act(W_in x + b_in)`` are interchangeable: the
activation acts elementwise, so permuting the rows of ``W_in`` (and ``b_in``; for a gated MLP, of
the gate and the up projection together) with the columns of ``W_out`` leaves the function
unchanged.  :func:`ff_pairs` finds the pairs of a model (BERT/MiniLM ``intermediate.dense`` ->
``output.dense``; LLaMA/Mistral/Qwen2 ``gate_proj`` + ``up_proj`` -> ``down_proj``; GPT-2
``mlp.c_fc`` -> ``mlp.c_proj``, whose ``Conv1D`` stores weights as ``(in, out)``; the digits
demos' MLP layers); :func:`permute_pair` applies one permutation to a pair in place;
:func:`search_pairs` runs :func:`tnviz.decompose.order.search_order` on each planned pair and
applies what it found (the pipeline's ``order_search=True``).

A permutation is recorded tensor by tensor (:class:`Permutation`: ``{tensor name: axis}``), which is
what the compressed folder stores and its reader applies (:func:`permute_tensors`).

>>> import torch
>>> from tnviz.model.demos import DigitsMLP
>>> model = DigitsMLP().double().eval()
>>> x = torch.randn(5, 64, dtype=torch.float64)
>>> before = model(x)
>>> pair = ff_pairs(model)[0]
>>> pair.inputs, pair.output, pair.hidden
(('fc1',), 'fc2', 256)
>>> _ = permute_pair(model, pair, torch.randperm(256).tolist())
>>> bool(torch.allclose(model(x), before, atol=1e-12))
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..decompose.order import check_permutation
from ..errors import DecompositionError, ModelFileError, TnvizError
from .surgery import is_conv1d, linear_weight


@dataclass(frozen=True)
class FFPair:
    """One feed-forward pair: the modules whose output index is the hidden one (``inputs``: one, or
    a gate and an up projection) and the module whose input index it is (``output``)."""

    name: str
    inputs: tuple[str, ...]
    output: str
    hidden: int

    @property
    def members(self) -> tuple[str, ...]:
        return (*self.inputs, self.output)


@dataclass(frozen=True)
class Permutation:
    """A hidden-neuron permutation as applied: ``perm[k]`` is the stored index of the neuron now at
    ``k``; ``tensors``: each tensor it re-orders (state_dict name) and along which axis; what the
    search saw (``searched``: the weight it ran on, its errors at ``ranks`` before and after)."""

    pair: str
    hidden: int
    perm: tuple[int, ...]
    tensors: Mapping[str, int]
    searched: str = ""
    error_before: float | None = None
    error_after: float | None = None
    ranks: tuple[int, ...] = ()
    start: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict, repr=False)

    def to_dict(self, rename: Any = None) -> dict[str, Any]:
        """JSON for the manifest; ``rename(name)`` maps the model's tensor names to the file's."""
        rename = rename or (lambda n: n)
        return {"pair": self.pair, "hidden": self.hidden, "tensors": {rename(k): v for k, v in self.tensors.items()},
                "searched": rename(self.searched) if self.searched else "", "ranks": list(self.ranks),
                "error_before": self.error_before, "error_after": self.error_after, "start": self.start,
                "seconds": round(self.seconds, 3), "perm": list(self.perm)}


def _rows_out(module: nn.Module) -> int:
    return int(linear_weight(module).shape[0])


def _cols_in(module: nn.Module) -> int:
    return int(linear_weight(module).shape[1])


def _linear(module: Any) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def ff_pairs(model: nn.Module) -> list[FFPair]:
    """The feed-forward pairs of ``model`` (see the module doc), in module order; modules that are
    not plain linear layers (already tensorized) are left out."""
    from .demos import DigitsCNN, DigitsMLP

    modules = dict(model.named_modules())
    found: list[tuple[str, tuple[str, ...], str]] = []
    if isinstance(model, DigitsMLP):
        found += [("fc1", ("fc1",), "fc2"), ("fc2", ("fc2",), "fc3")]
    elif isinstance(model, DigitsCNN):
        found += [("fc1", ("fc1",), "fc2")]
    for name in modules:
        if name.endswith("intermediate.dense"):  # BERT / MiniLM
            base = name[: -len("intermediate.dense")]
            found.append((base.rstrip(".") or name, (name,), f"{base}output.dense"))
        elif name.endswith("mlp.up_proj"):  # LLaMA / Mistral / Qwen2 (gated); an ungated up/down too
            base = name[: -len("up_proj")]
            gate = f"{base}gate_proj"
            found.append((base.rstrip("."), ((gate,) if gate in modules else ()) + (name,), f"{base}down_proj"))
        elif name.endswith("mlp.c_fc"):  # GPT-2 (Conv1D)
            base = name[: -len("c_fc")]
            found.append((base.rstrip("."), (name,), f"{base}c_proj"))
    pairs = []
    for pair_name, inputs, output in found:
        mods = [modules.get(m) for m in (*inputs, output)]
        if not all(_linear(m) for m in mods):
            continue
        hidden = _cols_in(mods[-1])
        if all(_rows_out(m) == hidden for m in mods[:-1]):
            pairs.append(FFPair(pair_name, inputs, output, hidden))
    return pairs


def pair_tensors(model: nn.Module, pair: FFPair) -> dict[str, int]:
    """Every tensor (state_dict name) the pair's hidden index runs along, and the axis."""
    modules = dict(model.named_modules())
    out: dict[str, int] = {}
    for name in pair.inputs:
        m = modules[name]
        out[f"{name}.weight"] = 1 if is_conv1d(m) else 0
        if getattr(m, "bias", None) is not None:
            out[f"{name}.bias"] = 0
    out[f"{pair.output}.weight"] = 0 if is_conv1d(modules[pair.output]) else 1
    return out


def permute_pair(model: nn.Module, pair: FFPair, perm: Sequence[int]) -> dict[str, int]:
    """Re-order the hidden neurons of ``pair`` in ``model`` in place (``perm[k]``: the neuron now at
    ``k``); the function is unchanged.  Returns the tensors re-ordered, with their axes."""
    perm = check_permutation(perm, pair.hidden, f"the permutation of {pair.name!r}")
    index = torch.as_tensor(perm, dtype=torch.long)
    tensors = pair_tensors(model, pair)
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, axis in tensors.items():
            p = params[name]
            p.copy_(p.index_select(axis, index.to(p.device)))
    return tensors


def permute_tensors(tensors: Mapping[str, torch.Tensor], record: Mapping[str, Any], inverse: bool = False,
                    only: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """The tensors a stored permutation names (``record``: a :meth:`Permutation.to_dict`), re-ordered
    along their axes (``inverse``: back to the stored order); others are returned as they are.
    ``only``: the names to touch (default: every named one present)."""
    perm = check_permutation(record["perm"], int(record["hidden"]), f"the permutation of {record.get('pair')!r}")
    index = torch.as_tensor(perm, dtype=torch.long)
    if inverse:
        index = torch.argsort(index)
    out = dict(tensors)
    for name, axis in record["tensors"].items():
        if name not in out or (only is not None and name not in only):
            continue
        t = out[name]
        out[name] = t.index_select(int(axis), index.to(t.device))
    return out


def check_record(record: Any, k: int, shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """A manifest's permutation ``k``, refused with the rule it breaks: a pair name, a hidden size,
    a permutation of ``0..hidden-1``, and tensors of the folder whose axis has the hidden size."""
    if not isinstance(record, dict):
        raise ModelFileError(f"tnviz.json permutation {k} must be an object; got {type(record).__name__}")
    hidden, tensors = record.get("hidden"), record.get("tensors")
    if not (isinstance(hidden, int) and not isinstance(hidden, bool) and hidden > 0):
        raise ModelFileError(f"tnviz.json permutation {k} must have a positive integer 'hidden'; got {hidden!r}")
    if not isinstance(record.get("perm"), list):
        raise ModelFileError(f"tnviz.json permutation {k} must have a 'perm' list; got {type(record.get('perm')).__name__}")
    try:
        check_permutation(record["perm"], hidden, f"tnviz.json permutation {k} ({record.get('pair')!r})")
    except DecompositionError as exc:
        raise ModelFileError(str(exc)) from None
    if not isinstance(tensors, dict) or not tensors:
        raise ModelFileError(f"tnviz.json permutation {k} must name the tensors it re-orders ('tensors': name -> axis)")
    for name, axis in tensors.items():
        shape = shapes.get(name)
        if shape is None:
            raise ModelFileError(f"tnviz.json permutation {k} must name tensors of the folder; {name!r} is not one")
        if not (isinstance(axis, int) and 0 <= axis < len(shape)) or int(shape[axis]) != hidden:
            raise ModelFileError(f"tnviz.json permutation {k}: tensor {name!r} of shape {tuple(shape)} must have "
                                 f"{hidden} entries along axis {axis!r}")
    return record


def _out_groups(out_dims: Sequence[int], out_cores: Sequence[int]) -> tuple[int, ...]:
    """The per-core products of the output legs (legs on the same core multiply)."""
    groups: dict[int, int] = {}
    for d, c in zip(out_dims, out_cores):
        groups[c] = groups.get(c, 1) * int(d)
    return tuple(groups[c] for c in sorted(groups))


def search_ranks(dims: Sequence[int], rest: int, options: Mapping[str, Any], fraction: float) -> tuple[int, ...] | None:
    """Bond caps the search scores at, from the layer's budget: a ``max_rank`` (int) on every bond;
    with ``target_params``, the index bonds at ``fraction`` of their useful maximum and the last one as
    large as the budget then allows (the data split's family, :mod:`tnviz.decompose.split`).  With a
    covariance and every input leg on the last core, :func:`search_pairs` aims instead at the data
    split's best factorized candidate (:func:`_split_ranks`)."""
    k = len(dims)
    useful = [min(math.prod(dims[: j + 1]), math.prod(dims[j + 1:]) * rest) for j in range(k)]

    def params(r: Sequence[int]) -> int:
        total, prev = 0, 1
        for d, b in zip(dims, r):
            total += prev * d * b
            prev = b
        return total + prev * rest

    cap = options.get("max_rank")
    if isinstance(cap, int) and not isinstance(cap, bool):
        return tuple(max(1, min(cap, u)) for u in useful)
    target = options.get("target_params")
    if not isinstance(target, int):
        return None
    head = [max(1, min(u, round(fraction * u))) for u in useful[:-1]]
    last = 0
    for r in range(useful[-1], 0, -1):
        if params([*head, r]) <= target:
            last = r
            break
    return (*head, last) if last else None


#: Fraction of each index bond's useful maximum the search aims at without a covariance (the
#: data-aware search aims at the data split's best factorized candidate instead).
SEARCH_FRACTION = 0.5


def search_pairs(model: nn.Module, plan: Any, stats: Mapping[str, Any] | None = None, *, inputs_last: bool = True,
                 seed: int = 0, fraction: float = SEARCH_FRACTION,
                 restarts: int = 0) -> tuple[list[Permutation], dict, list[dict]]:
    """Search each feed-forward pair of ``model`` whose first planned member is an MPO with the hidden
    index as its output (``W_in``), and apply what it found to ``model`` in place (both weights).
    ``inputs_last``: the MPO will put every input leg on its last core (the data-aware default;
    the search's objective is then its exact data error); otherwise the legs are chained and the
    objective, each output leg on its own core and the inputs after them, is a proxy.
    Returns the permutations, ``stats`` with the covariances of the re-ordered inputs (``W_out``'s)
    permuted to match, and a note per pair not searched (why)."""
    from ..decompose.legs import inputs_last_cores, make_legs
    from ..decompose.order import search_order

    planned = {lp.name: lp for lp in plan.layers}
    stats = dict(stats or {})
    done, notes = [], []
    for pair in ff_pairs(model):
        members = [m for m in pair.members if m in planned]
        if not members:
            continue
        first = members[0]
        lp = planned[first]
        if lp.method == "auto":  # method 'auto' decides the order itself (tnviz.model.auto_order)
            continue
        if first == pair.output:
            notes.append({"pair": pair.name, "reason": f"not searched, only {first!r} (hidden index on its inputs) is compressed; "
                                                       "searched only on a weight whose outputs are the hidden index"})
            continue
        if lp.method != "mpo":
            notes.append({"pair": pair.name, "reason": f"not searched, {first!r} is compressed by {lp.method}; the order search "
                                                       "scores an MPO"})
            continue
        modules = dict(model.named_modules())
        W = linear_weight(modules[first]).detach()
        legs = make_legs(tuple(W.shape), lp.options.get("in_dims"), lp.options.get("out_dims"))
        cores = inputs_last_cores(legs.in_dims, legs.out_dims) if inputs_last else None
        if "in_cores" in lp.options or "out_cores" in lp.options:  # the plan placed the legs itself
            cores = (lp.options.get("in_cores"), lp.options.get("out_cores")) if lp.options.get("out_cores") else None
        dims = _out_groups(legs.out_dims, cores[1]) if cores is not None else tuple(legs.out_dims)
        ranks = search_ranks(dims, legs.in_features, lp.options, fraction) if len(dims) > 1 else None
        if ranks is None:
            notes.append({"pair": pair.name, "reason": f"not searched, {first!r}: no bond between its output legs to search over"})
            continue
        cov = stats[first].second_moment if first in stats else None
        if cov is not None and cores is not None and isinstance(lp.options.get("target_params"), int):
            ranks = _split_ranks(W, cov, lp.options["target_params"], legs, cores) or ranks
        with _one_thread():
            found = search_order(W.to(torch.float64), dims, ranks, input_cov=cov, in_dims=legs.in_dims, seed=seed,
                                 restarts=restarts)
        tensors = permute_pair(model, pair, found.perm)
        index = torch.as_tensor(found.perm, dtype=torch.long)
        if pair.output in stats:  # its inputs are the hidden activations, now re-ordered
            stats[pair.output] = _permuted_stats(stats[pair.output], index)
        done.append(Permutation(pair.name, pair.hidden, found.perm, tensors, f"{first}.weight", found.error_before,
                                found.error_after, found.ranks, found.start, found.seconds))
    return done, stats, notes


def _split_ranks(W, cov, target_params: int, legs: Any, cores: Any) -> tuple[int, ...] | None:
    """The caps the search aims at under the data split (:func:`tnviz.decompose.split.split_bonds`):
    of its candidates at this budget whose output-side bonds are factorized (below their useful
    maximum, where the neuron order matters), the one with the lowest data error in the stored order."""
    from ..decompose.split import split_bonds

    split = split_bonds(W.to(torch.float64), cov, target_params=target_params, in_dims=legs.in_dims,
                        out_dims=legs.out_dims, in_cores=cores[0], out_cores=cores[1])
    if split is None:
        return None
    groups = _out_groups(legs.out_dims, cores[1])
    rest = legs.in_features
    useful = [min(math.prod(groups[: j + 1]), math.prod(groups[j + 1:]) * rest) for j in range(len(groups) - 1)]
    bonds = [f"b{j + 1}" for j in range(len(groups))]
    factorized = [c for c in split.candidates if any(c.caps[b] < u for b, u in zip(bonds, useful))]
    if not factorized:
        return None
    best = min(factorized, key=lambda c: (c.data_error, c.params))
    return tuple(int(best.caps[b]) for b in bonds)


class _one_thread:
    """torch on one thread for the search's small eigen-problems (192x192 Gram matrices on MiniLM):
    on this repo's shared 2-core CPU, measured 2.6 s per MiniLM weight on one thread against 7-15 s
    on two (the threads wait on each other under load); the caller's setting comes back after."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)
        return False


def _permuted_stats(stat: Any, index: torch.Tensor) -> Any:
    import copy

    new = copy.copy(stat)
    i = index.to(stat.second_moment.device)
    new.second_moment = stat.second_moment.index_select(0, i).index_select(1, i)
    new.mean = stat.mean.index_select(0, i.to(stat.mean.device))
    new.kron_factors, new.kron_error, new.leg_dims = None, None, None
    return new


def unpermute_state(state: Mapping[str, torch.Tensor], permutations: Sequence[Permutation],
                    skip: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """A permuted model's tensors back in the stored order (the compressed folder keeps dense tensors
    as the input had them), except ``skip`` (the compressed weights, whose factors stay permuted)."""
    out = dict(state)
    for p in reversed(list(permutations)):
        names = [n for n in p.tensors if n not in skip]
        out = permute_tensors(out, {"pair": p.pair, "hidden": p.hidden, "perm": list(p.perm), "tensors": p.tensors},
                              inverse=True, only=names)
    return out


__all__ = ["FFPair", "Permutation", "ff_pairs", "permute_pair", "permute_tensors", "search_pairs",
           "unpermute_state", "check_record", "TnvizError"]
