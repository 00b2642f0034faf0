"""``TNLinear``: a fully-connected layer whose weight is a tensor network (any SPEC 2.1 network).

>>> import torch, tnviz
>>> from tnviz.nn import TNLinear
>>> layer = TNLinear(tnviz.mpo([4, 4], [4, 4], ranks=3))
>>> layer(torch.randn(5, 16)).shape
torch.Size([5, 16])
>>> torch.allclose(layer(torch.eye(16)), layer.to_dense().T + layer.bias, atol=1e-5)
True
"""
from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..contract import DEFAULT_BUDGET_ELEMENTS, ordered_tensors
from ..decompose import decompose
from ..errors import BudgetError, InvalidNetworkError
from ..network import TensorNetwork, load_network
from . import autotune as tuning
from . import strategies as S
from . import workspace
from .plan import Plan
from .rebuild import dense_weight
from .strategies import AUTOTUNE_MIN_ELEMENTS, FAST_PATHS  # noqa: F401  (re-exported: they lived here)

_SAFE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _parameter_keys(net: TensorNetwork) -> dict[str, str]:
    """ParameterDict keys: the tensor names where torch accepts them, ``t<k>`` otherwise."""
    keys, used = {}, set()
    for k, name in enumerate(net.tensor_names):
        key = name if _SAFE_KEY.match(name) and not hasattr(nn.ParameterDict, name) else f"t{k}"
        while key in used:
            key = f"{key}_"
        keys[name] = key
        used.add(key)
    return keys


#: A layer holds at most this many parameter elements unless ``max_params`` lifts the limit
#: (4 GiB in float32): a network file with enormous sizes is refused before anything is allocated.
MAX_PARAMS = 1 << 30


class LayerCall:
    """The :class:`~tnviz.nn.plan.PlanContext` of one forward: the layer's tensors, its weight
    cache at the version taken once when the call starts (one lookup per step of the plan bounds
    small batches; kept per call, not on the layer, so that threads sharing a layer never mix
    their modes), the shared workspace and the bias."""

    __slots__ = ("layer", "version", "workspace", "bias", "bias_added")

    def __init__(self, layer: "TNLinear", cached: bool | None = None) -> None:
        self.layer = layer
        if cached is None:
            cached = layer.caches_weights()
        self.version = layer._version() if cached else None
        self.workspace = workspace.shared()
        self.bias = layer.bias  # a plan may add it inside its last step and say so in bias_added
        self.bias_added = False

    def ordered_tensors(self) -> list[torch.Tensor]:
        return self.layer.ordered_tensors()

    def cached(self, key: Any, compute):
        return self.layer._cached_at(self.version, key, compute)


def _owned(value: Any) -> Any:
    """``value`` (a tensor, or a tuple or list of them, nested) with views replaced by copies: a cached view of a
    parameter (a one-core segment is its core reshaped) would be stale after the parameter's
    in-place update, and torch refuses even to deep-copy a view made under no_grad whose base
    changed with grad mode on (a healed model's copy failed so)."""
    if isinstance(value, torch.Tensor):  # only views of a parameter: a view of a fresh result owns its base
        base = value._base
        return value.clone() if base is not None and (base.requires_grad or isinstance(base, torch.nn.Parameter)) else value
    if isinstance(value, (tuple, list)):
        return type(value)(_owned(v) for v in value)
    return value


@dataclass(frozen=True)
class _Selected:
    """One entry of a layer's plan cache: the strategy that runs, its plan, and for ``auto`` the
    decision it came from (whose ``measured`` may hand the choice to the autotune)."""

    strategy: str
    plan: Plan
    decision: S.Decision | None


def _too_many_parameters(net: TensorNetwork, bias: bool, dtype: Any, max_params: int) -> str | None:
    """The refusal of a layer whose parameters would exceed ``max_params`` elements, or ``None``;
    predicted from the shapes (nothing allocated)."""
    total = net.params + (net.out_features if bias else 0)
    if total <= max_params:
        return None
    dtype = dtype if dtype is not None else torch.get_default_dtype()
    gib = total * dtype.itemsize / 2**30
    sizes = list(net.sizes.items())
    shown = ", ".join(f"{i}={v:,}" for i, v in sizes[:12]) + (f", ... ({len(sizes)} indices)" if len(sizes) > 12 else "")
    largest = max(zip(net.shapes, net.tensor_names), key=lambda s: math.prod(s[0]))
    return (f"a TNLinear holds at most {max_params:,} parameter elements (max_params=None lifts the limit); "
            f"network {net.name or 'unnamed'!r} with sizes {{{shown}}} needs {total:,} "
            f"({gib:,.3g} GiB in {str(dtype).replace('torch.', '')}; tensor {largest[1]!r} has shape {largest[0]})")


class _AddBias(torch.autograd.Function):
    """``y += bias`` in place on a fresh, contiguous plan result (its rows of ``bias.numel()``),
    under autograd.  ``y + bias`` would allocate a second output-sized tensor (its page faults
    cost a fifth of a Tucker training step at batch 64), and ``y.add_(bias)`` on the reshaped
    view would make backward copy the whole gradient.  Autograd's version counter still guards
    the in-place write: a backward that saved ``y`` would refuse to run."""

    @staticmethod
    def forward(ctx, y, bias):  # noqa: D401
        ctx.mark_dirty(y)
        ctx.rows = bias.numel()
        y.view(-1, ctx.rows).add_(bias)
        return y

    @staticmethod
    def backward(ctx, g):
        gb = g.reshape(-1, ctx.rows).sum(0) if ctx.needs_input_grad[1] else None
        return g, gb


def _add_bias(y: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``y + bias`` for a plan's output ``y`` (batch, out_features), in place where that is safe."""
    if y.dtype != bias.dtype:
        return y + bias
    if not y.requires_grad:  # every plan returns a fresh tensor (or a view of one) that no backward reads
        return y.add_(bias)
    if not workspace.custom_functions_ok():
        return y + bias
    base = y._base
    if base is None:
        return _AddBias.apply(y, bias)
    if base.is_contiguous() and y.is_contiguous() and base.numel() == y.numel():  # y: all of base, reshaped
        return _AddBias.apply(base, bias).view(y.shape)
    return y + bias


class TNLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` (out_features, in_features) given by a tensor network.

    ``strategy`` is one of ``"auto"`` or a name in :data:`tnviz.nn.STRATEGIES`; with ``"auto"``
    the layer runs what :func:`tnviz.nn.strategies.decide` says for each batch size and mode
    and records its choice in ``last_strategy``.  Plans are made once per (strategy, batch, mode,
    device) and reused (one cache, ``_plans``).  ``budget`` (elements) refuses any contraction
    whose largest intermediate is bigger (:class:`tnviz.BudgetError`); ``None`` disables the
    guard.  ``max_params`` (elements, default :data:`MAX_PARAMS`) refuses a network whose
    parameters would be larger, before anything is allocated; ``None`` lifts it.
    ``autotune=True`` makes ``auto`` pick by *measured* time instead: the first call in each
    (batch bucket, dtype, device, mode) times the plausible strategies a few times on this device
    (:func:`tnviz.nn.autotune.autotune`, cached for every layer of the same network).
    ``autotune=None`` (the default) measures only where the cost model is known to be weak (the
    decision's ``measured``): in inference (eval mode, no gradients) for layers of at least
    :data:`~tnviz.nn.strategies.AUTOTUNE_MIN_ELEMENTS` weight elements whose network has no fast
    path (neither ``chain`` nor ``modes`` fits: tensor rings, generic networks), and MPO layers in
    inference where the fused Triton kernel can run (CUDA with triton).  ``False`` never measures.
    """

    def __init__(
        self,
        network: TensorNetwork | str | Mapping[str, Any],
        bias: bool = True,
        device: Any = None,
        dtype: Any = None,
        strategy: str = "auto",
        *,
        budget: int | None = DEFAULT_BUDGET_ELEMENTS,
        autotune: bool | None = None,
        max_params: int | None = MAX_PARAMS,
    ) -> None:
        super().__init__()
        net = load_network(network)
        refusal = None if max_params is None else _too_many_parameters(net, bias, dtype, max_params)
        if refusal is not None:
            raise BudgetError(refusal)
        self.network = net
        self.in_features = net.in_features
        self.out_features = net.out_features
        self._keys = _parameter_keys(net)
        factory = {"device": device, "dtype": dtype}
        self.tensors = nn.ParameterDict(
            {self._keys[t.name]: nn.Parameter(torch.empty(shape, **factory)) for t, shape in zip(net.tensors, net.shapes)}
        )
        self.bias = nn.Parameter(torch.empty(net.out_features, **factory)) if bias else None
        self.strategy = S.check_name(strategy)
        self.budget = budget
        self.autotune = autotune
        self.last_strategy: str | None = None
        # (strategy asked for, batch, cached, device type, TRITON_INTERPRET) -> what runs
        self._plans: dict[tuple, _Selected] = {}
        # forward's shortcut over choose_strategy + plan: (strategy setting, budget, batch, mode,
        # device, interpreter) -> (name, plan), where no measurement decides (a few µs per call)
        self._ready: dict[tuple, tuple[str, Plan]] = {}
        # weight-only results (merged cores, the rebuilt matrix) by key: (weights' version, value)
        self._cache: dict[Any, tuple[Any, Any]] = {}
        self.reset_parameters()

    # ------------------------------------------------------------------ construction
    def reset_parameters(self) -> None:
        """Gaussian tensors scaled so that ``W`` has the variance of ``nn.Linear``'s init
        (uniform in ``±1/sqrt(in_features)``: variance ``1/(3 in)``); each summed index of size
        ``s`` on ``d`` tensors divides each tensor's variance by ``s**(1/d)``."""
        net, sizes, counts = self.network, self.network.sizes, self.network.index_counts
        target_var = 1.0 / (3.0 * self.in_features)
        with torch.no_grad():
            for t in net.tensors:
                var = target_var ** (1.0 / len(net.tensors))
                for index in t.indices:
                    if counts[index] >= 2:
                        var *= sizes[index] ** (-1.0 / counts[index])
                self.tensors[self._keys[t.name]].normal_(0.0, math.sqrt(var))
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
                self.bias.uniform_(-bound, bound)

    @classmethod
    def from_tensors(
        cls,
        network: TensorNetwork | str | Mapping[str, Any],
        tensors: Mapping[str, Any],
        bias: Any = None,
        *,
        device: Any = None,
        dtype: Any = None,
        strategy: str = "auto",
        budget: int | None = DEFAULT_BUDGET_ELEMENTS,
        autotune: bool | None = None,
        max_params: int | None = MAX_PARAMS,
    ) -> "TNLinear":
        """A layer holding the given tensors (numpy arrays or torch tensors, by tensor name)."""
        net = load_network(network)
        first = next(iter(tensors.values()), None) if isinstance(tensors, Mapping) else None
        if dtype is None and isinstance(first, torch.Tensor):
            dtype = first.dtype
        if dtype is None and first is not None:
            dtype = torch.as_tensor(first).dtype
        if device is None and isinstance(first, torch.Tensor):
            device = first.device
        layer = cls(net, bias=bias is not None, device=device, dtype=dtype, strategy=strategy, budget=budget,
                    autotune=autotune, max_params=max_params)
        layer.load_tensors(tensors)
        if bias is not None:
            with torch.no_grad():
                layer.bias.copy_(torch.as_tensor(bias))
        return layer

    @classmethod
    def from_decomposition(cls, dec: Any, bias: Any = None, **kwargs: Any) -> "TNLinear":
        """A layer from a :func:`tnviz.decompose.decompose` result (``.network``, ``.tensors``)."""
        layer = cls.from_tensors(dec.network, dec.tensors, bias, **kwargs)
        layer.decomposition_error = getattr(dec, "rel_error", None)
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear, method: str = "mpo", *, strategy: str = "auto", **decompose_options: Any) -> "TNLinear":
        """Decompose ``linear.weight`` with :func:`tnviz.decompose.decompose` and keep its bias.

        ``decompose_options`` go to the decomposition (legs, ranks, truncation).  The relative
        weight error is kept in ``decomposition_error``.
        """
        weight = linear.weight.detach()
        dec = decompose(weight, method, **decompose_options)
        bias = None if linear.bias is None else linear.bias.detach()
        layer = cls.from_decomposition(dec, bias, device=weight.device, dtype=weight.dtype, strategy=strategy)
        layer.network.check_features(linear.in_features, linear.out_features)
        return layer

    def load_tensors(self, tensors: Mapping[str, Any]) -> None:
        """Copy arrays (by tensor name) into the parameters, checking every shape."""
        arrays = ordered_tensors(self.network, tensors)
        with torch.no_grad():
            for t, a in zip(self.network.tensors, arrays):
                p = self.tensors[self._keys[t.name]]
                p.copy_(torch.as_tensor(a).to(dtype=p.dtype, device=p.device))

    # ------------------------------------------------------------------ what plans use
    def ordered_tensors(self) -> list[torch.Tensor]:
        """The parameters in network order."""
        params = self.tensors._parameters  # a dict lookup; ParameterDict's __getitem__ costs microseconds
        return [params[self._keys[n]] for n in self.network.tensor_names]

    def named_network_tensors(self) -> dict[str, torch.Tensor]:
        """The parameters keyed by the network's tensor names."""
        return {n: self.tensors[self._keys[n]] for n in self.network.tensor_names}

    def caches_weights(self) -> bool:
        """Whether a call now may cache weight-only results: eval mode, no gradient needed (the
        mode a plan is made for: ``cached``)."""
        if self.training:
            return False
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in self.tensors._parameters.values()))

    def _version(self) -> tuple:
        # a list comprehension, not a generator: this runs on every cached call (0.6 µs against 2)
        return tuple([(p._version, p.data_ptr(), p.dtype, p.device) for p in self.tensors._parameters.values()])

    def cached(self, key: Any, compute):
        """``compute()`` cached while the weights are unchanged (eval mode, no gradient needed);
        any in-place change of a tensor (optimizer step, ``load_state_dict``) bumps its version
        counter and invalidates the entry."""
        return self._cached_at(self._version() if self.caches_weights() else None, key, compute)

    def _cached_at(self, version: tuple | None, key: Any, compute):
        """:meth:`cached` for weights at ``version`` (``None``: no caching allowed)."""
        if version is None:
            return compute()
        hit = self._cache.get(key)
        if hit is not None and hit[0] == version:
            value = hit[1]
            # made under torch.inference_mode, it cannot be saved for a backward outside it
            if not (isinstance(value, torch.Tensor) and value.is_inference()) or torch.is_inference_mode_enabled():
                return value
        value = _owned(compute())
        self._cache[key] = (version, value)
        return value

    def clear_cache(self) -> None:
        """Drop cached weights, and the reused buffers of the layers' shared workspace
        (:func:`tnviz.nn.workspace.release`)."""
        self._cache.clear()
        workspace.release()

    def train(self, mode: bool = True) -> "TNLinear":
        if mode or self.training:  # entering training, or leaving it (its buffers go)
            self.clear_cache()
        return super().train(mode)

    def call_context(self) -> LayerCall:
        """The context a plan runs with for one call (:class:`~tnviz.nn.plan.PlanContext`)."""
        return LayerCall(self)

    # ------------------------------------------------------------------ forward
    def _selected(self, strategy: str, batch: int, cached: bool, device: Any) -> _Selected:
        """The plan cache: what runs for ``strategy`` (``auto`` or a name) at ``batch`` in this
        mode on ``device`` (``None``: not known), made once."""
        kind = None if device is None else (device if isinstance(device, torch.device) else torch.device(device)).type
        # the Triton interpreter makes a CPU kernel available (read per call, as the kernel does)
        key = (strategy, batch, cached, kind, os.environ.get("TRITON_INTERPRET", ""))
        hit = self._plans.get(key)
        if hit is None:
            decision = None
            if strategy == S.AUTO:
                decision = S.decide(self.network, batch, cached=cached, device=kind or "cpu", budget=self.budget)
                strategy = decision.strategy
            hit = self._plans[key] = _Selected(strategy, S.make_plan(strategy, self.network, batch, cached), decision)
        return hit

    def _measures(self, decision: S.Decision | None) -> bool:
        """Whether ``auto`` hands the choice to the autotune: always with ``autotune=True``, never
        with ``False``; with ``None`` where the decision says ``measured``."""
        if decision is None:
            return False
        return decision.measured if self.autotune is None else bool(self.autotune)

    def choose_strategy(self, batch: int, dtype: Any = None, device: Any = None) -> str:
        """The strategy the layer uses at ``batch`` in its current mode (measured when the
        autotune applies and ``dtype``/``device`` of the input are given)."""
        if self.strategy != S.AUTO:
            return self.strategy
        selected = self._selected(S.AUTO, batch, self.caches_weights(), device)
        if dtype is not None and device is not None and self._measures(selected.decision):
            return tuning.autotune(self, batch, dtype, device)
        return selected.strategy

    def plan(self, batch: int, strategy: str | None = None, dtype: Any = None, device: Any = None) -> Plan:
        """The plan for ``batch`` (of ``strategy``, else the one :meth:`choose_strategy` picks
        without measuring), made once per (strategy, batch, mode, device) and reused; refuses
        plans above the memory budget.  ``dtype`` does not change a plan."""
        name = strategy or self.choose_strategy(batch)
        plan = self._selected(name, batch, self.caches_weights(), device).plan
        if self.budget is not None and plan.largest > self.budget:
            raise BudgetError(
                f"contractions are limited to {self.budget:,} elements per intermediate; strategy {name!r} "
                f"at batch {batch} needs {plan.largest:,} ({plan.largest * 4 / 2**30:.2f} GiB in float32)"
            )
        return plan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1:] != (self.in_features,):
            raise InvalidNetworkError(
                f"the input's last axis must be in_features={self.in_features}; got shape {tuple(x.shape)}"
            )
        lead = x.shape[:-1]
        batch = math.prod(lead)
        if batch == 0:
            y = x.new_zeros((*lead, self.out_features))
            return y if self.bias is None else y + self.bias
        cached = self.caches_weights()
        device = x.device
        # Triton's interpreter switch matters only once triton is loaded (reading it costs ~1 µs a call)
        interpret = os.environ.get("TRITON_INTERPRET", "") if "triton" in sys.modules else ""
        key = (self.strategy, self.budget, self.autotune, batch, cached, device, interpret)
        ready = self._ready.get(key)
        if ready is None:
            name = self.choose_strategy(batch, x.dtype, device)
            plan = self.plan(batch, name, x.dtype, device)
            measured = self.strategy == S.AUTO and self._measures(
                self._selected(S.AUTO, batch, cached, device).decision)
            if not measured:  # a measured choice is asked again each call (the autotune caches it)
                self._ready[key] = (name, plan)
        else:
            name, plan = ready
        call = LayerCall(self, cached)
        flat = x.dim() == 2  # (batch, in_features) already: no reshape in or out (~1 µs each)
        y = plan(x if flat else x.reshape(batch, self.in_features), call)
        if self.last_strategy != name:  # nn.Module.__setattr__ costs ~2 µs
            self.last_strategy = name
        bias = call.bias
        if bias is not None and not call.bias_added:
            # In place: an out-of-place add allocates a new output whose page faults cost more
            # than the whole Tucker sweep at batch 1024 (benchmarks/README.md).
            y = _add_bias(y, bias)
        return y if flat else y.reshape(*lead, self.out_features)

    # ------------------------------------------------------------------ conversions
    def to_dense(self) -> torch.Tensor:
        """The weight matrix ``(out_features, in_features)``, differentiable w.r.t. the tensors."""
        return dense_weight(self.network, self.ordered_tensors())

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` with the same weight and bias."""
        w = self.to_dense().detach()
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(w)
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    # ------------------------------------------------------------------ description
    @property
    def params(self) -> int:
        return self.network.params

    def ranks(self) -> dict[str, int]:
        """Sizes of the summed indices (bonds, Tucker ranks, CP hyperedge)."""
        sizes = self.network.sizes
        return {i: sizes[i] for i in self.network.internal_indices}

    def __repr__(self) -> str:
        net = self.network
        p = next(iter(self.tensors.values()))
        bias = f" (+{self.out_features:,} bias)" if self.bias is not None else ""
        ranks = ", ".join(f"{k}={v}" for k, v in self.ranks().items())
        last = f", last={self.last_strategy!r}" if self.last_strategy else ""
        return (
            f"TNLinear({net.name or 'network'!r}, in={self.in_features} as {net.in_dims}, "
            f"out={self.out_features} as {net.out_dims}, ranks {{{ranks}}}, "
            f"params={net.params:,}{bias} vs dense {net.dense_params:,} ({net.compression:.3g}x smaller), "
            f"strategy={self.strategy!r}{last}, {str(p.dtype).replace('torch.', '')} on {p.device})"
        )
