"""What to compress and how: the layer table, the rules that pick a method and a truncation per
layer, and the plan they make (optionally one global target spread over the layers).

A *layer* is a weight a tensor network can replace: in a model with an architecture, an
``nn.Linear``, GPT-2's ``Conv1D`` (its ``(in, out)`` weight taken as the ``(out, in)`` map it
applies: ``transposed``), a groups=1 ``nn.Conv2d`` with zero padding, or an ``nn.Embedding`` (named
by module path, ``encoder.layer.0.intermediate.dense``); in a weights-only file, a 2-D or 4-D float
tensor (named by tensor name, ``fc1.weight``).  A weight tied to an earlier one (a causal LM's
``lm_head`` sharing the embedding table) is one layer, listed under the first name with the others
in ``tied``.  Rules match those names (``re.search``, first match wins; a tied layer matches by
any of its names; layers no rule matches stay dense).  Each layer has a ``block`` (the number of
the decoder/encoder block it is in, ``None`` outside blocks) and a ``role`` (its name inside the
block: ``self_attn.q_proj``, ``mlp.gate_proj``, ``attn.c_attn``), so a rule can pick a role in
every block: ``mlp\\.(gate|up|down)_proj``.

The truncation is one value ``{kind: value}`` with ``kind`` in :data:`TRUNCATIONS`; the faces
(CLI flags, the app's rule rows, library keywords) turn what the user typed into it with
:func:`truncation_from` and nothing else parses it.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
>>> plan = make_plan(model, [Rule(r"^0$", "mpo", {"max_rank": 2})])
>>> [(p.name, p.method, dict(p.options)) for p in plan.layers]
[('0', 'mpo', {'max_rank': 2})]
>>> truncation_from(ratio=2.0)
{'ratio': 2.0}
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from ..decompose import DECOMPOSITIONS
from ..errors import RankError, TnvizError

if TYPE_CHECKING:
    from torch import nn

    from .allocate import Allocation
    from .io import WeightsFile

#: Truncation kinds of a rule: ``ratio`` (kept parameters = params / ratio) and decompose's own.
TRUNCATIONS: dict[str, str] = {
    "ratio": "compression ratio of the layer (params / ratio kept)",
    "max_rank": "largest bond / rank",
    "rtol": "relative error of the (whitened) weight",
    "energy": "kept fraction of the squared spectrum per bond",
}

#: One target for the whole model, spread over the selected layers by sensitivity.
TARGETS: dict[str, str] = {
    "ratio": "one compression ratio for all selected layers (selected parameters / kept parameters)",
    "error": "one error budget: the root-mean-square relative error over the selected layers",
}

#: Methods a rule may use: the decomposition registry's names, and ``auto`` (per layer, the network
#: with the lowest error at the layer's parameter budget: :mod:`tnviz.model.auto`).
METHODS: tuple[str, ...] = (*DECOMPOSITIONS, "auto")


# ---------------------------------------------------------------------- truncation values
def check_truncation(truncation: Mapping[str, Any]) -> tuple[str, Any]:
    """The one ``(kind, value)`` of a truncation mapping, checked; refusals name the rule and value."""
    if not isinstance(truncation, Mapping) or len(truncation) != 1:
        raise RankError(f"a rule needs exactly one truncation of {list(TRUNCATIONS)}; got {truncation!r}")
    (kind, value), = truncation.items()
    if kind not in TRUNCATIONS:
        raise RankError(f"a truncation must be one of {list(TRUNCATIONS)}; got {kind!r}")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "ratio" and not (number and value > 1):
        raise RankError(f"a compression ratio must be a number above 1; got {value!r}")
    if kind == "max_rank" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1) \
            and not isinstance(value, (Mapping, list, tuple)):
        raise RankError(f"a max_rank must be a positive integer; got {value!r}")
    if kind in ("rtol", "energy") and not (number and 0 < value < 1):
        raise RankError(f"{kind} must be a number between 0 and 1 (exclusive); got {value!r}")
    return kind, value


def check_target(target: Mapping[str, Any] | None) -> tuple[str, float] | None:
    """The one ``(kind, value)`` of a global target (``{"ratio": 4}`` or ``{"error": 0.3}``), checked."""
    if target is None:
        return None
    if not isinstance(target, Mapping) or len(target) != 1:
        raise RankError(f"a global target is one of {list(TARGETS)} with its value; got {target!r}")
    (kind, value), = target.items()
    if kind not in TARGETS:
        raise RankError(f"a global target must be one of {list(TARGETS)}; got {kind!r}")
    if kind == "ratio" and not (isinstance(value, (int, float)) and value > 1):
        raise RankError(f"a target compression ratio must be above 1; got {value!r}")
    if kind == "error" and not (isinstance(value, (int, float)) and 0 < value < 1):
        raise RankError(f"an error budget must be a relative error in (0, 1); got {value!r}")
    return kind, float(value)


def truncation_from(*, max_rank: int | None = None, rtol: float | None = None, energy: float | None = None,
                    ratio: float | None = None, target_ratio: float | None = None,
                    error_budget: float | None = None, required: bool = True) -> dict[str, Any]:
    """The truncation (per layer) or the global target a user gave as separate options, exactly
    one of them: ``{"ratio": 2.0}``, ``{"target": {"ratio": 4.0}}``...  ``required=False`` allows none
    (``{}``).  This is where the CLI's flags and the library's keywords become one value."""
    given = {k: v for k, v in (("max_rank", max_rank), ("rtol", rtol), ("energy", energy), ("ratio", ratio),
                               ("target_ratio", target_ratio), ("error_budget", error_budget)) if v is not None}
    if len(given) > 1 or (required and not given):
        raise RankError(f"a compression needs exactly one of max_rank, rtol, energy, ratio, target_ratio or "
                        f"error_budget; got {sorted(given) or 'none'}")
    if not given:
        return {}
    (kind, value), = given.items()
    if kind == "target_ratio":
        target = {"ratio": value}
        check_target(target)
        return {"target": target}
    if kind == "error_budget":
        target = {"error": value}
        check_target(target)
        return {"target": target}
    check_truncation({kind: value})
    return {kind: value}


# ---------------------------------------------------------------------- layer table
@dataclass(frozen=True)
class LayerInfo:
    """A weight a tensor network can replace."""

    name: str  # module path ('encoder.layer.0.intermediate.dense') or, in a weights-only file, the tensor name
    kind: str  # 'Linear' | 'Conv' | 'Embedding'
    shape: tuple[int, ...]  # the weight's shape
    params: int  # weight parameters (bias not counted)
    weight: str = ""  # the weight's name among the model's tensors ('<module>.weight'; = name for files)
    transposed: bool = False  # the module stores the weight as (in, out) (GPT-2's Conv1D); shape is (out, in)
    tied: tuple[str, ...] = ()  # weight names of the modules sharing this weight (a tied lm_head)

    @property
    def weight_name(self) -> str:
        return self.weight or f"{self.name}.weight"

    @property
    def block(self) -> int | None:
        return block_and_role(self.name)[0]

    @property
    def role(self) -> str:
        return block_and_role(self.name)[1]


_BLOCK = re.compile(r"^(?:.*\.)?(?:layers|layer|h|blocks|block)\.(\d+)\.(.+)$")


def block_and_role(name: str) -> tuple[int | None, str]:
    """The block number and the role of a layer name: ``model.layers.3.mlp.up_proj`` -> ``(3,
    'mlp.up_proj')``, ``transformer.h.0.attn.c_attn`` -> ``(0, 'attn.c_attn')``; outside blocks
    ``(None, last part)``: ``lm_head`` -> ``(None, 'lm_head')``."""
    found = _BLOCK.match(name)
    if found:
        return int(found.group(1)), found.group(2)
    return None, name.rsplit(".", 1)[-1]


def group_layers(layers: Sequence[Any]) -> list[tuple[int | None, list[Any]]]:
    """Layers (anything with a ``name``) grouped by block, in order of first appearance."""
    groups: dict[int | None, list[Any]] = {}
    for info in layers:
        groups.setdefault(block_and_role(info.name)[0], []).append(info)
    return list(groups.items())


def layer_table(model: "nn.Module") -> list[LayerInfo]:
    """Every ``nn.Linear``, ``Conv1D``, groups=1 ``nn.Conv2d`` with numeric zero padding, and
    ``nn.Embedding``; a weight shared by several modules once (see the module doc)."""
    from torch import nn

    from .surgery import is_conv1d

    out: list[LayerInfo] = []
    first: dict[int, int] = {}  # id(weight) -> index in out
    for name, module in model.named_modules(remove_duplicate=False):
        transposed = False
        if isinstance(module, nn.Linear):
            kind = "Linear"
        elif is_conv1d(module):
            kind, transposed = "Linear", True
        elif isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros" \
                and not isinstance(module.padding, str):
            kind = "Conv"
        elif isinstance(module, nn.Embedding):
            kind = "Embedding"
        else:
            continue
        shape = tuple(module.weight.shape)[::-1] if transposed else tuple(module.weight.shape)
        if min(shape[:2]) < 2:
            continue
        if id(module.weight) in first:
            k = first[id(module.weight)]
            if out[k].name != name and f"{name}.weight" not in out[k].tied:
                out[k] = replace(out[k], tied=(*out[k].tied, f"{name}.weight"))
            continue
        first[id(module.weight)] = len(out)
        out.append(LayerInfo(name, kind, shape, module.weight.numel(), f"{name}.weight", transposed))
    return out


def file_layer_table(weights: "WeightsFile") -> list[LayerInfo]:
    """The compressible weights of a weights-only file (:func:`tnviz.model.io.candidates`)."""
    from .io import candidates

    return [LayerInfo(c.name, c.kind, tuple(c.shape), c.params, c.name) for c in candidates(weights)]


# ---------------------------------------------------------------------- rules and plan
@dataclass(frozen=True)
class Rule:
    """Settings for the layers whose name matches ``pattern`` (``re.search``).

    ``truncation`` is one item ``{kind: value}`` with kind in :data:`TRUNCATIONS`; ``in_dims`` /
    ``out_dims`` fix the leg factorization (``None``: automatic); ``in_cores`` / ``out_cores``
    place the legs on MPO/TR cores (``None``: the pipeline's ``placement``).
    """

    pattern: str
    method: str = "mpo"
    truncation: Mapping[str, Any] = field(default_factory=lambda: {"ratio": 2.0})
    in_dims: tuple[int, ...] | None = None
    out_dims: tuple[int, ...] | None = None
    in_cores: tuple[int, ...] | None = None
    out_cores: tuple[int, ...] | None = None

    def check(self) -> None:
        if self.method not in METHODS:
            raise RankError(f"a rule's method must be one of {list(METHODS)}; got {self.method!r}")
        try:
            re.compile(self.pattern)
        except (re.error, TypeError) as error:
            raise TnvizError(f"a layer pattern must be a valid regular expression; got {self.pattern!r} ({error})") from None
        check_truncation(self.truncation)
        if self.method == "auto":
            from .auto import check_rule

            check_rule(self)

    def to_dict(self) -> dict[str, Any]:
        """As JSON, numbers in one spelling (a ratio of 8 and of 8.0 record the same settings)."""
        (kind, value), = self.truncation.items()
        if kind in ("ratio", "rtol", "energy"):
            value = float(value)
        out: dict[str, Any] = {"pattern": self.pattern, "method": self.method, "truncation": {kind: value}}
        for key in ("in_dims", "out_dims", "in_cores", "out_cores"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value)
        return out


@dataclass(frozen=True)
class LayerPlan:
    """What will be done to one layer: ``options`` go to :func:`tnviz.decompose.decompose`."""

    name: str
    kind: str
    shape: tuple[int, ...]
    params: int
    method: str
    options: Mapping[str, Any]
    weight: str = ""
    transposed: bool = False  # see LayerInfo
    tied: tuple[str, ...] = ()

    @property
    def weight_name(self) -> str:
        return self.weight or f"{self.name}.weight"

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.method} ({opts})"


@dataclass(frozen=True)
class Plan:
    """The layers to compress and how; ``allocation`` is set when a global target was spread."""

    layers: tuple[LayerPlan, ...]
    allocation: "Allocation | None" = None
    rules: tuple[Rule, ...] = ()
    target: tuple[tuple[str, float], ...] = ()  # the global target as items, () for none

    def names(self) -> list[str]:
        return [p.name for p in self.layers]

    def __iter__(self) -> Iterator[LayerPlan]:
        return iter(self.layers)

    def settings(self) -> dict[str, Any]:
        """The rules and target the plan came from, as JSON (recorded in the compressed folder)."""
        return {"rules": [r.to_dict() for r in self.rules], "target": dict(self.target) or None}


def decompose_options(info: LayerInfo, rule: Rule, truncation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The :func:`tnviz.decompose.decompose` options of ``rule`` for one layer: its legs (a conv
    kernel keeps its natural legs ``(cin, kh, kw) -> cout``) and its truncation, a ``ratio``
    becoming ``target_params``."""
    (kind, value), = (truncation or rule.truncation).items()
    opts: dict[str, Any] = {}
    if info.kind != "Conv":
        for key in ("in_dims", "out_dims", "in_cores", "out_cores"):
            if getattr(rule, key) is not None:
                opts[key] = tuple(getattr(rule, key))
    if kind == "ratio":
        opts["target_params"] = max(1, int(info.params / float(value)))
    elif kind == "target_params":
        opts["target_params"] = int(value)
    else:
        opts[kind] = value
    return opts


def matched_layers(table: Sequence[LayerInfo], rules: Sequence[Rule]) -> list[tuple[LayerInfo, Rule]]:
    """Each layer with the first rule whose pattern matches its name, or the name of a module tied
    to it (layers no rule matches are left out)."""
    out = []
    for info in table:
        names = [info.name, *(t.removesuffix(".weight") for t in getattr(info, "tied", ()))]
        for rule in rules:
            if any(re.search(rule.pattern, n) for n in names):
                out.append((info, rule))
                break
    return out


def make_plan(source: Any, rules: Sequence[Rule] | None = None, *, target: Mapping[str, float] | None = None,
              target_ratio: float | None = None, error_budget: float | None = None,
              covariances: Mapping[str, Any] | None = None, device: Any = None) -> Plan:
    """Match every layer of ``source`` (a model, a weights file, or a subject holding either)
    against ``rules`` (first match wins; unmatched layers stay dense).

    With a global ``target`` (``{"ratio": r}``: selected parameters / kept parameters, > 1;
    ``{"error": e}``: the root-mean-square relative error over the selected layers, in (0, 1);
    ``target_ratio`` / ``error_budget`` say the same), the rules' truncations are replaced by the
    per-layer parameter counts of :func:`tnviz.model.allocate.allocate`; ``covariances`` (input
    second moments by layer name) make that allocation data-aware.
    """
    if target_ratio is not None or error_budget is not None:
        if target is not None or (target_ratio is not None and error_budget is not None):
            raise RankError(f"a plan takes one global target, a ratio or an error budget; got "
                            f"{[v for v in (target, target_ratio, error_budget) if v is not None]}")
        target = {"ratio": target_ratio} if target_ratio is not None else {"error": error_budget}
    goal = check_target(target)
    rules = tuple(rules) if rules else (Rule(".*"),)
    for rule in rules:
        rule.check()
        if rule.method == "auto":
            from .auto import check_budget

            check_budget(rule, goal is not None)
    table, weight_of = _table(source)
    matched = matched_layers(table, rules)
    if not matched:
        raise TnvizError(f"the layer patterns must select at least one layer; {[r.pattern for r in rules]} "
                         f"select none (layers: {', '.join(i.name for i in table[:6])}, ...)")

    def layer(info: LayerInfo, rule: Rule, truncation: Mapping[str, Any] | None = None) -> LayerPlan:
        return LayerPlan(info.name, info.kind, info.shape, info.params, rule.method,
                         decompose_options(info, rule, truncation), info.weight_name, info.transposed, info.tied)

    if goal is None:
        return Plan(tuple(layer(i, r) for i, r in matched), None, rules)
    from .allocate import allocate

    kind, value = goal
    alloc = allocate(_LazyWeights({i.name: i for i, _ in matched}, weight_of),
                     target_ratio=value if kind == "ratio" else None, error_budget=value if kind == "error" else None,
                     covariances=covariances, device=device)
    layers = [layer(info, rule, {"target_params": alloc.params[info.name]}) for info, rule in matched
              if alloc.params[info.name] < info.params]  # the allocation may keep a layer dense
    return Plan(tuple(layers), alloc, rules, ((kind, value),))


def _table(source: Any) -> tuple[list[LayerInfo], Any]:
    """The layer table of a model / weights file / subject, and how to read one layer's weight."""
    model = getattr(source, "model", source)
    weights = getattr(source, "weights", None)
    if model is not None and hasattr(model, "named_modules"):
        from .surgery import linear_weight

        modules = dict(model.named_modules())
        # a source whose model holds no values (the block-by-block path's meta model) reads them itself
        read = getattr(source, "read_weight", None) or (lambda info: linear_weight(modules[info.name]).detach())
        return layer_table(model), read
    if weights is None and hasattr(source, "names") and hasattr(source, "get"):
        weights = source
    if weights is None:
        raise TnvizError(f"a plan needs a model or a weights file; got {type(source).__name__}")
    return file_layer_table(weights), lambda info: weights.get(info.name)


class _LazyWeights(Mapping):
    """Layer name -> weight, each read only when the allocation asks for it (one at a time)."""

    def __init__(self, infos: Mapping[str, LayerInfo], read: Any) -> None:
        self._infos, self._read = dict(infos), read

    def __getitem__(self, name: str):
        return self._read(self._infos[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)
