"""How a weight is viewed as a tensor: leg sizes and index names, for matrices and conv kernels.

A 2-D weight ``(out_features, in_features)`` is split into legs ``o1..om`` / ``i1..in``
(default :func:`tnviz.auto_legs`); a 4-D conv kernel ``(cout, cin, kh, kw)`` keeps its natural
legs named ``cout`` / ``cin, kh, kw`` as :func:`tnviz.builders.conv_tucker` names them.  The
weight tensor is always laid out as ``T[outputs..., inputs...]`` (row-major, ``i1`` most
significant), which is exactly ``weight.reshape(out_dims + in_dims)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import DecompositionError
from ..factorize import auto_legs
from ..network import Tensor, TensorNetwork

CONV_IN_NAMES = ("cin", "kh", "kw")
CONV_OUT_NAMES = ("cout",)


@dataclass(frozen=True)
class Legs:
    """Leg sizes and names of a weight; ``weight_shape`` is the caller's original shape."""

    in_dims: tuple[int, ...]
    out_dims: tuple[int, ...]
    in_names: tuple[str, ...]
    out_names: tuple[str, ...]
    weight_shape: tuple[int, ...]
    in_cores: tuple[int, ...] | None = None
    out_cores: tuple[int, ...] | None = None

    @property
    def in_features(self) -> int:
        return math.prod(self.in_dims)

    @property
    def out_features(self) -> int:
        return math.prod(self.out_dims)

    @property
    def names(self) -> tuple[str, ...]:
        """Axis names of the weight tensor ``T[outputs..., inputs...]``."""
        return self.out_names + self.in_names

    @property
    def dims(self) -> tuple[int, ...]:
        return self.out_dims + self.in_dims

    @property
    def generic_names(self) -> bool:
        return self.in_names == tuple(f"i{k + 1}" for k in range(len(self.in_dims))) and \
            self.out_names == tuple(f"o{k + 1}" for k in range(len(self.out_dims)))


def _positive_ints(values, what: str) -> tuple[int, ...]:
    try:
        out = tuple(values)
    except TypeError:
        raise DecompositionError(f"{what} must be a list of leg sizes; got {values!r}") from None
    if not out or any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in out):
        raise DecompositionError(f"{what} must be a non-empty list of positive integers; got {list(out)}")
    return out


def make_legs(
    shape: Sequence[int],
    in_dims: Sequence[int] | None = None,
    out_dims: Sequence[int] | None = None,
    in_cores: Sequence[int] | None = None,
    out_cores: Sequence[int] | None = None,
) -> Legs:
    """The legs of a weight of ``shape`` (2-D matrix or 4-D conv kernel)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4:
        cout, cin, kh, kw = shape
        out_features, in_features = cout, cin * kh * kw
        conv = in_dims is None and out_dims is None
    elif len(shape) == 2:
        out_features, in_features = shape
        conv = False
    else:
        raise DecompositionError(
            f"a weight must be 2-D (out_features, in_features) or a 4-D conv kernel (out, in, kh, kw); "
            f"got shape {list(shape)}"
        )
    if conv:
        ins, outs = shape[1:], shape[:1]
        in_names, out_names = CONV_IN_NAMES, CONV_OUT_NAMES
    else:
        auto_in, auto_out = auto_legs(in_features, out_features) if (in_dims is None or out_dims is None) else ((), ())
        ins = _positive_ints(in_dims, "in_dims") if in_dims is not None else tuple(auto_in)
        outs = _positive_ints(out_dims, "out_dims") if out_dims is not None else tuple(auto_out)
        if math.prod(ins) != in_features:
            raise DecompositionError(
                f"in_dims must multiply to in_features={in_features}; {list(ins)} multiply to {math.prod(ins)}"
            )
        if math.prod(outs) != out_features:
            raise DecompositionError(
                f"out_dims must multiply to out_features={out_features}; {list(outs)} multiply to {math.prod(outs)}"
            )
        in_names = tuple(f"i{k + 1}" for k in range(len(ins)))
        out_names = tuple(f"o{k + 1}" for k in range(len(outs)))
    return Legs(
        tuple(ins), tuple(outs), tuple(in_names), tuple(out_names), shape,
        tuple(in_cores) if in_cores is not None else None,
        tuple(out_cores) if out_cores is not None else None,
    )


def renamed(net: TensorNetwork, mapping: dict[str, str]) -> TensorNetwork:
    """The same network with indices renamed (e.g. ``i1 -> cin`` for a conv kernel)."""
    if not mapping:
        return net
    tensors = [Tensor(t.name, tuple(mapping.get(i, i) for i in t.indices)) for t in net.tensors]
    sizes = {mapping.get(k, k): v for k, v in net.size_items}
    return TensorNetwork.build(
        tensors, sizes, [mapping.get(i, i) for i in net.inputs], [mapping.get(o, o) for o in net.outputs],
        net.name, net.layout,
    )


def generic_to_legs(legs: Legs) -> dict[str, str]:
    """Rename map from the builders' ``i1.. / o1..`` to the legs' own names."""
    m = {f"i{k + 1}": n for k, n in enumerate(legs.in_names)}
    m.update({f"o{k + 1}": n for k, n in enumerate(legs.out_names)})
    return {k: v for k, v in m.items() if k != v}


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
