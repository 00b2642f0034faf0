"""Numerical contraction of a network: the dense matrix, a forward pass, seeded random tensors.

Works on numpy arrays and on torch tensors alike (opt_einsum dispatches on the array type).
The contraction runs along the path :mod:`tnviz.paths` costs for the optimizer asked for (a key of
:data:`tnviz.OPTIMIZERS`), so the budget check and the run agree; plans are built once per
(equation, shapes, path) and reused.

>>> from tnviz.builders import mpo
>>> net = mpo([2, 3], [4, 5], ranks=2)
>>> W = to_dense(net, random_tensors(net, seed=0))
>>> W.shape                                    # (out_features, in_features), as nn.Linear.weight
(20, 6)
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
import opt_einsum as oe

from .errors import BudgetError, InvalidNetworkError
from .network import TensorNetwork

#: Refuse contractions whose largest predicted intermediate holds more elements than this.
DEFAULT_BUDGET_ELEMENTS = 2**28  # 256 M elements = 1 GiB in float32


@lru_cache(maxsize=512)
def _expression(equation: str, shapes: tuple[tuple[int, ...], ...], path: tuple[tuple[int, ...], ...]):
    return oe.contract_expression(equation, *shapes, optimize=[tuple(p) for p in path])


def ordered_tensors(net: TensorNetwork, tensors: "Mapping[str, Any] | Sequence[Any]") -> list[Any]:
    """The arrays in network order, checked against the network's shapes."""
    if isinstance(tensors, Mapping):
        missing = [n for n in net.tensor_names if n not in tensors]
        if missing:
            raise InvalidNetworkError(f"an array is needed for every tensor; {missing[0]!r} has none")
        arrays = [tensors[n] for n in net.tensor_names]
    else:
        arrays = list(tensors)
        if len(arrays) != len(net.tensors):
            raise InvalidNetworkError(f"one array per tensor is needed; got {len(arrays)} for {len(net.tensors)}")
    for t, a, shape in zip(net.tensors, arrays, net.shapes):
        if tuple(a.shape) != shape:
            raise InvalidNetworkError(
                f"array shapes must match the network; tensor {t.name!r} has shape {tuple(a.shape)}, "
                f"the network says {shape} for {list(t.indices)}"
            )
    return arrays


def to_tensor(net: TensorNetwork, tensors, *, optimize: str = "auto", budget: int | None = DEFAULT_BUDGET_ELEMENTS):
    """The full layer tensor with axes ``(outputs..., inputs...)``."""
    from .cost import check_budget
    from .paths import rebuild_path

    arrays = ordered_tensors(net, tensors)
    if budget is not None:
        check_budget(net, None, budget, optimize=optimize)
    expr = _expression(net.equation(), net.shapes, rebuild_path(net, optimize).path)
    return expr(*arrays)


def to_dense(net: TensorNetwork, tensors, *, optimize: str = "auto", budget: int | None = DEFAULT_BUDGET_ELEMENTS):
    """The layer's matrix, shape ``(out_features, in_features)`` like ``nn.Linear.weight``."""
    full = to_tensor(net, tensors, optimize=optimize, budget=budget)
    return full.reshape(net.out_features, net.in_features)


def forward(net: TensorNetwork, x, tensors, *, optimize: str = "auto", budget: int | None = DEFAULT_BUDGET_ELEMENTS):
    """``y = x @ W.T`` computed by contracting ``x`` through the network (x: ``(batch, in_features)``)."""
    from .cost import check_budget
    from .paths import forward_path

    arrays = ordered_tensors(net, tensors)
    if x.shape[-1] != net.in_features:
        raise InvalidNetworkError(f"the input's last axis must be in_features={net.in_features}; got shape {tuple(x.shape)}")
    batch = int(math.prod(x.shape[:-1]))
    if budget is not None:
        check_budget(net, batch, budget, optimize=optimize)
    xs = x.reshape((batch, *net.in_dims))
    shapes = (tuple(xs.shape), *net.shapes)
    y = _expression(net.layer_equation(), shapes, forward_path(net, max(batch, 1), optimize).path)(xs, *arrays)
    return y.reshape((*x.shape[:-1], net.out_features))


def random_tensors(
    net: TensorNetwork, seed: int = 0, *, dtype: Any = np.float64, gain: float = 1.0,
    budget: int | None = DEFAULT_BUDGET_ELEMENTS,
) -> dict[str, np.ndarray]:
    """Seeded Gaussian tensors scaled so that the dense matrix has entries of variance ``gain**2``.

    Each internal index of size ``s`` shared by ``d`` tensors contributes ``s**(-1/d)`` to the
    variance of each of them, so every summed index is normalised exactly once.  Refused
    (:class:`~tnviz.errors.BudgetError`, before anything is allocated) when the tensors hold more
    than ``budget`` elements in all.
    """
    if budget is not None and net.params > budget:
        raise BudgetError(
            f"random tensors are limited to {budget:,} elements in all; {net.name or 'this network'!r} has "
            f"{net.params:,} parameters ({net.params * 8 / 2**30:,.1f} GiB in float64)"
        )
    rng = np.random.default_rng(seed)
    sizes, counts = net.sizes, net.index_counts
    out = {}
    for t, shape in zip(net.tensors, net.shapes):
        var = 1.0
        for index in t.indices:
            if counts[index] >= 2:
                var *= sizes[index] ** (-1.0 / counts[index])
        var *= gain ** (2.0 / len(net.tensors))
        values = rng.standard_normal(shape)
        values *= math.sqrt(var)
        out[t.name] = values.astype(dtype, copy=False)
    return out
