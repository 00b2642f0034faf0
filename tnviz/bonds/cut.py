"""Cut a TN layer at a bond: the state on the bond for a batch of inputs, and the rest of the
layer from that state (see :mod:`tnviz.bonds`).  Arrays only (numpy or torch), no model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import opt_einsum as oe

from ..errors import InvalidNetworkError, TnvizError
from ..network import BATCH_INDEX, TensorNetwork

#: How the legs of the bond state other than the bond are reduced to one number per channel.
REDUCTIONS: dict[str, str] = {
    "sum": "sum over the other legs (linear: a gauge move acts on it exactly as on the bond)",
    "index": "pick one position of every other leg (linear too)",
    "norm": "root of the summed squares over the other legs (non-linear: not covariant under a gauge move)",
}


# ---------------------------------------------------------------------- the cut at a bond
@dataclass(frozen=True)
class BondCut:
    """A network cut at ``bond``: ``x`` and the ``left`` tensors give the state, the ``right``
    tensors turn the state into ``y``.  ``other`` are the state's legs besides the bond
    (outputs already produced, other bonds crossing the cut, inputs not yet absorbed)."""

    net: TensorNetwork
    bond: str
    left: tuple[str, ...]
    right: tuple[str, ...]
    other: tuple[str, ...]

    @property
    def state_indices(self) -> tuple[str, ...]:
        """Indices of the state after the batch: ``(*other, bond)``."""
        return (*self.other, self.bond)

    def state_shape(self, batch: int) -> tuple[int, ...]:
        sizes = self.net.sizes
        return (batch, *(sizes[i] for i in self.state_indices))

    @property
    def size(self) -> int:
        """Number of channels of the bond."""
        return self.net.sizes[self.bond]

    @property
    def first_tensor_left(self) -> bool:
        """Whether the bond's first tensor (network order, the ``a`` of ``a X^-1``) is on the left."""
        return self.net.tensors_on(self.bond)[0] in self.left

    def _term(self, indices: Iterable[str]) -> str:
        sym = self.net.symbols
        return "".join(sym[i] for i in indices)

    def left_equation(self) -> str:
        """``x[batch, inputs], left tensors -> state[batch, *other, bond]``."""
        net = self.net
        x = self._term((BATCH_INDEX, *net.inputs))
        terms = [self._term(net.tensor(n).indices) for n in self.left]
        return f"{','.join([x, *terms])}->{self._term((BATCH_INDEX, *self.state_indices))}"

    def right_equation(self) -> str:
        """``state, right tensors -> y[batch, outputs]``."""
        net = self.net
        terms = [self._term(net.tensor(n).indices) for n in self.right]
        state = self._term((BATCH_INDEX, *self.state_indices))
        return f"{','.join([state, *terms])}->{self._term((BATCH_INDEX, *net.outputs))}"

    def describe(self) -> str:
        other = ", ".join(self.other) or "none"
        return (f"bond {self.bond} (size {self.size}): x · {'·'.join(self.left)} -> "
                f"state[batch, {', '.join(self.state_indices)}] (other legs: {other}); "
                f"state · {'·'.join(self.right)} -> y")


def _inputs_on(net: TensorNetwork, names: set[str]) -> int:
    return sum(1 for n in names for i in net.tensor(n).indices if i in set(net.inputs))


def _default_left(net: TensorNetwork, bond: str) -> set[str]:
    a, b = net.tensors_on(bond)
    side_a = net.reachable(a, without=bond)
    if b in side_a:
        # Not a cut (a ring): the tensors in network order up to the bond's first tensor.
        names = net.tensor_names
        return set(names[:names.index(a) + 1])
    side_b = set(net.tensor_names) - side_a
    has_a, has_b = _inputs_on(net, side_a) > 0, _inputs_on(net, side_b) > 0
    if has_a != has_b:
        return side_a if has_a else side_b
    if not has_a:
        return side_a
    # both sides read inputs: the side holding the first (most significant) input leg, which for
    # an MPO is the side swept first
    first_input = next(n for n in net.tensor_names if net.inputs[0] in net.tensor(n).indices)
    return side_a if first_input in side_a else side_b


def bond_cut(net: TensorNetwork, bond: str, left: Iterable[str] | None = None) -> BondCut:
    """Cut ``net`` at ``bond``.  ``left`` (tensor names) is the side contracted with ``x``; by
    default the side that holds inputs (both do: the side of the first input leg, for an MPO the cores
    swept first);
    for a bond that does not split the network (a ring) the tensors up to the bond's first one."""
    if bond not in net.index_counts or net.index_counts[bond] != 2:
        raise InvalidNetworkError(
            f"bond features need a bond shared by exactly two tensors (one of {list(net.bonds)}); got {bond!r}"
        )
    if left is None:
        side = _default_left(net, bond)
    else:
        side = set(left)
        unknown = side - set(net.tensor_names)
        if unknown:
            raise InvalidNetworkError(f"the left side must name tensors of the network; {sorted(unknown)} are not")
    a, b = net.tensors_on(bond)
    if (a in side) == (b in side):
        raise InvalidNetworkError(
            f"the left side must hold exactly one of the two tensors on {bond!r} ({a}, {b}); got {sorted(side)}"
        )
    names = net.tensor_names
    left_t = tuple(n for n in names if n in side)
    right_t = tuple(n for n in names if n not in side)
    on_left = {i for n in left_t for i in net.tensor(n).indices}
    on_right = {i for n in right_t for i in net.tensor(n).indices}
    outs = [o for o in net.outputs if o in on_left]
    crossing = [i for i in net.index_counts if i != bond and i in on_left and i in on_right]
    ins = [i for i in net.inputs if i not in on_left]
    return BondCut(net, bond, left_t, right_t, (*outs, *crossing, *ins))


def _arrays(net: TensorNetwork, tensors: Mapping[str, Any] | Sequence[Any], names: Sequence[str]) -> list[Any]:
    if isinstance(tensors, Mapping):
        missing = [n for n in names if n not in tensors]
        if missing:
            raise InvalidNetworkError(f"tensors are needed for every tensor of the network; missing {missing}")
        return [tensors[n] for n in names]
    ordered = list(tensors)
    return [ordered[net.tensor_names.index(n)] for n in names]


def bond_state(cut: BondCut, x: Any, tensors: Mapping[str, Any] | Sequence[Any]):
    """``state[batch, *other, bond]`` for ``x (batch, in_features)`` (numpy or torch)."""
    net = cut.net
    xs = x.reshape((x.shape[0], *net.in_dims))
    return oe.contract(cut.left_equation(), xs, *_arrays(net, tensors, cut.left))


def finish_from_state(cut: BondCut, state: Any, tensors: Mapping[str, Any] | Sequence[Any]):
    """``y (batch, out_features)`` (no bias) from a state of :func:`bond_state`: the rest of the layer."""
    y = oe.contract(cut.right_equation(), state, *_arrays(cut.net, tensors, cut.right))
    return y.reshape((state.shape[0], cut.net.out_features))


def reduce_state(cut: BondCut, state: Any, reduce: str = "sum", at: Mapping[str, int] | None = None):
    """The state as ``(batch, bond)``: the other legs summed, picked at ``at`` (missing legs at 0),
    or reduced to their norm (see :data:`REDUCTIONS`)."""
    if reduce not in REDUCTIONS:
        raise TnvizError(f"a bond reduction must be one of {list(REDUCTIONS)}; got {reduce!r}")
    batch = state.shape[0]
    other = len(cut.other)
    if other == 0:
        return state.reshape((batch, cut.size))
    axes = tuple(range(1, 1 + other))
    if reduce == "sum":
        return state.sum(axes)
    if reduce == "norm":
        return (state * state).sum(axes) ** 0.5
    at = dict(at or {})
    sizes = cut.net.sizes
    bad = {k: v for k, v in at.items() if k not in cut.other or not 0 <= int(v) < sizes[k]}
    if bad:
        raise TnvizError(
            f"'index' positions must name other legs of the state {list(cut.other)} within their sizes; got {bad}"
        )
    return state[(slice(None), *(int(at.get(i, 0)) for i in cut.other), slice(None))]
