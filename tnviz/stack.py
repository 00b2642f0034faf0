"""Stack views (SPEC 1.3, paper Fig. 4): a TN layer as a composition of sparse fully-connected layers.

The input vector lives on *wires* (index names): at first the input legs ``i1..``, at the end the
output legs ``o1..``.  Applying one tensor (or a group of neighbouring tensors contracted together)
consumes the wires it carries and produces its other legs: bonds to tensors not yet applied and
output legs.  As a matrix that step is ``identity ⊗ (the tensor matricized: consumed -> produced)
⊗ identity`` over the wires it does not touch, a sparse fully-connected layer.  Bonds of the MPO
are thus ordinary hidden widths of the stack.  A hyperedge (the CP delta) passes through each of
its tensors until the last one consumes it.

Equivalent views of one layer, all multiplying to the same dense matrix (each view checks itself):

* ``left-to-right`` / ``right-to-left``: one tensor per layer, in network order or reversed;
* ``grouped``: neighbouring tensors merged in pairs (fewer, denser layers);
* ``shifted``: one tensor applied before its left neighbour, so it is matricized differently
  (the bond between them becomes one of its outputs, paper Fig. 4 iii);
* ``gauge``: a random invertible ``X`` on one bond, ``a -> a X^-1``, ``b -> X b``: the tensors
  change, the matrix does not;
* ``contraction order``: the layers the planned contraction path builds (paper Fig. 4 iv).

Wires are kept in a fixed order along the network (tensor positions; a bond between its two
tensors) so that for an MPO every layer is literally ``I ⊗ core ⊗ I`` (``kron`` is True).

>>> from tnviz.builders import mpo
>>> views = stack_views(mpo([2, 3, 2], [3, 2, 2], ranks=2), seed=0)
>>> [v.name for v in views][:2], all(v.max_abs_diff < 1e-12 for v in views)
(['left-to-right', 'right-to-left'], True)
>>> [(l.in_size, l.out_size) for l in views[0].layers]
[(12, 36), (36, 24), (24, 12)]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import opt_einsum as oe

from .contract import ordered_tensors, random_tensors
from .errors import BudgetError, InvalidNetworkError
from .gauge import apply_gauge, check_bond, random_invertible
from .network import TensorNetwork, load_network

#: Refuse a stack layer with more structural non-zeros than this (its COO arrays would not fit).
MAX_LAYER_NNZ = 2**24
#: Refuse a stack layer with more inputs or outputs than this (the self-check multiplies vectors
#: of that length by every layer, at least 8 of them; a picture of it has one pixel per 2,000 rows).
MAX_STACK_WIDTH = 2**18
#: Refuse a view whose layers hold more structural non-zeros than this in all.
MAX_VIEW_NNZ = 2**25
#: Refuse to draw random tensors for stack views of networks with more parameters than this.
MAX_STACK_PARAMS = 2**24
#: The self-check's reference contraction is refused above this many elements per intermediate.
CHECK_BUDGET_ELEMENTS = 2**25

#: The self-check multiplies the whole identity through the stack when ``in_features`` times the
#: widest layer stays below this many elements; otherwise a seeded subset of its columns (64 of the
#: bundled 4096x4096 MPO's, whose widest layer is 16,384: a wrong wiring or a wrong core changes
#: nearly every column, so a few dozen random ones find it; on 2 cores its left-to-right view took
#: 0.23 s with 256 columns, 0.06 s with 64).
CHECK_ELEMENTS = 2**20


@dataclass(frozen=True)
class StackLayer:
    """One sparse fully-connected layer of a stack; ``matrix`` is ``(out_size, in_size)`` (scipy CSR)."""

    name: str
    tensors: tuple[str, ...]
    in_wires: tuple[str, ...]
    out_wires: tuple[str, ...]
    consumed: tuple[str, ...]  # wires the tensor reads (its matricization's columns)
    produced: tuple[str, ...]  # wires it writes (its rows)
    in_size: int
    out_size: int
    nnz: int
    kron: bool  # literally identity ⊗ core ⊗ identity (core wires contiguous on both sides)
    matrix: Any = field(repr=False, compare=False)

    @property
    def density(self) -> float:
        return self.nnz / (self.in_size * self.out_size)

    @property
    def flops(self) -> int:
        """Per sample, using the sparsity: one multiply-add per structural non-zero."""
        return 2 * self.nnz

    @property
    def dense_flops(self) -> int:
        """Per sample, as a dense fully-connected layer of the same sizes."""
        return 2 * self.in_size * self.out_size

    def pattern(self, max_side: int = 200) -> np.ndarray:
        """Density of non-zeros in blocks, at most ``max_side`` x ``max_side`` (for heatmaps)."""
        rows = min(self.out_size, max_side)
        cols = min(self.in_size, max_side)
        coo = self.matrix.tocoo()
        r = (coo.row.astype(np.int64) * rows) // self.out_size
        c = (coo.col.astype(np.int64) * cols) // self.in_size
        # one count per non-zero into its block: bincount, 4-6x faster than np.add.at here (4096² MPO layers, numpy 2.4)
        counts = np.bincount(r * cols + c, minlength=rows * cols).reshape(rows, cols).astype(np.float64)
        block = (self.out_size / rows) * (self.in_size / cols)
        return counts / block

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "tensors": list(self.tensors),
            "in_wires": list(self.in_wires), "out_wires": list(self.out_wires),
            "consumed": list(self.consumed), "produced": list(self.produced),
            "in_size": self.in_size, "out_size": self.out_size, "nnz": self.nnz,
            "density": self.density, "flops": self.flops, "dense_flops": self.dense_flops, "kron": self.kron,
        }


@dataclass(frozen=True)
class StackView:
    """An equivalent stack of sparse layers, applied first to last, and its numerical proof."""

    name: str
    description: str
    layers: tuple[StackLayer, ...]
    tensors: dict[str, np.ndarray] = field(repr=False, compare=False)
    max_abs_diff: float = math.nan  # max |stack product - dense matrix| over the checked columns
    checked_columns: int = 0
    exact_check: bool = False  # every column checked (else a seeded subset)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    def product(self) -> Any:
        """The product of the layers' matrices ``(out_features, in_features)`` (scipy sparse)."""
        out = self.layers[0].matrix
        for layer in self.layers[1:]:
            out = layer.matrix @ out
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description,
            "layers": [layer.to_dict() for layer in self.layers],
            "flops": self.flops, "max_abs_diff": self.max_abs_diff,
            "checked_columns": self.checked_columns, "exact_check": self.exact_check,
            **{k: v for k, v in self.extra.items() if isinstance(v, (int, float, str, bool, list))},
        }


# ---------------------------------------------------------------------- wire order
def _wire_keys(net: TensorNetwork) -> dict[str, tuple[float, int, int]]:
    """A fixed order of all index names along the network (tensor order; bonds between)."""
    pos = {name: k for k, name in enumerate(net.tensor_names)}
    keys: dict[str, tuple[float, int, int]] = {}
    for index, count in net.index_counts.items():
        owners = net.tensors_on(index)
        p = sum(pos[t] for t in owners) / len(owners)
        if count == 1:
            rank = net.inputs.index(index) if index in net.inputs else net.outputs.index(index)
            keys[index] = (p, 0, rank)
        else:
            keys[index] = (p, 1, 0)
    return keys


def _offsets(legs: Sequence[str], order: Sequence[str], sizes: Mapping[str, int]) -> np.ndarray:
    """Flat positions, in a state whose wires are ``order`` (row-major), of every combination
    of the values of ``legs`` (enumerated row-major over ``legs``)."""
    strides, s = {}, 1
    for w in reversed(order):
        strides[w] = s
        s *= sizes[w]
    offs = np.zeros(1, dtype=np.int64)
    for leg in legs:
        offs = (offs[:, None] + np.arange(sizes[leg], dtype=np.int64)[None, :] * strides[leg]).ravel()
    return offs


def _is_kron(old: Sequence[str], new: Sequence[str], consumed: Sequence[str], produced: Sequence[str]) -> bool:
    passing = [w for w in old if w not in consumed]
    for split in range(len(passing) + 1):
        left, right = passing[:split], passing[split:]
        if list(old) == [*left, *consumed, *right] and list(new) == [*left, *produced, *right]:
            return True
    return False


def _layer(name: str, tensors: tuple[str, ...], old: Sequence[str], new: Sequence[str],
           consumed: Sequence[str], produced: Sequence[str], core: np.ndarray, sizes: Mapping[str, int],
           structure: np.ndarray | None = None) -> StackLayer:
    """The sparse matrix of ``core[produced..., consumed...]`` acting on ``old`` wires, giving ``new``;
    ``structure`` marks the structural non-zeros of ``core`` (default: all)."""
    import scipy.sparse as sp

    passing = [w for w in old if w not in consumed]
    if sorted(passing) != sorted(w for w in new if w not in produced):
        raise InvalidNetworkError(f"a stack layer must pass untouched wires through; {list(old)} -> {list(new)}")
    in_size = math.prod(sizes[w] for w in old)
    out_size = math.prod(sizes[w] for w in new)
    mat = core.reshape(math.prod(sizes[w] for w in produced), math.prod(sizes[w] for w in consumed))
    mask = np.ones(mat.shape, dtype=bool) if structure is None else structure.reshape(mat.shape)
    bi, ai = np.nonzero(mask)
    n_pass = math.prod(sizes[w] for w in passing)
    nnz = n_pass * len(bi)
    if nnz > MAX_LAYER_NNZ:
        raise BudgetError(
            f"a stack layer is limited to {MAX_LAYER_NNZ:,} non-zeros; layer {name!r} "
            f"({in_size:,} -> {out_size:,}) has {nnz:,}"
        )
    rows = (_offsets(passing, new, sizes)[:, None] + _offsets(produced, new, sizes)[bi][None, :]).ravel()
    cols = (_offsets(passing, old, sizes)[:, None] + _offsets(consumed, old, sizes)[ai][None, :]).ravel()
    data = np.tile(mat[bi, ai], n_pass)
    matrix = sp.csr_matrix((data, (rows, cols)), shape=(out_size, in_size))
    return StackLayer(name, tensors, tuple(old), tuple(new), tuple(consumed), tuple(produced),
                      in_size, out_size, int(nnz), _is_kron(old, new, consumed, produced), matrix)


# ---------------------------------------------------------------------- building a view
def _group_tensor(net: TensorNetwork, group: Sequence[str], arrays: Mapping[str, np.ndarray], keep: Sequence[str]):
    """Contract the tensors of ``group`` over their shared indices; axes ``keep``."""
    sym = net.symbols
    terms = [("".join(sym[i] for i in net.tensor(n).indices)) for n in group]
    eq = ",".join(terms) + "->" + "".join(sym[i] for i in keep)
    return oe.contract(eq, *[arrays[n] for n in group])


@dataclass(frozen=True)
class LayerPlan:
    """What one stack layer will be, from shapes alone (no arrays): its wires and its sizes."""

    name: str
    tensors: tuple[str, ...]
    old: tuple[str, ...]
    new: tuple[str, ...]
    consumed: tuple[str, ...]
    produced: tuple[str, ...]
    group_indices: tuple[str, ...]  # the group's legs, in the order its tensor is contracted to
    in_size: int
    out_size: int
    core_size: int  # elements of the matricized group tensor (produced x consumed)
    nnz: int  # structural non-zeros at most (every entry of the core, on every passing wire)


def plan_view(net: TensorNetwork, groups: Sequence[Sequence[str]]) -> list[LayerPlan]:
    """The layers a stack applying ``groups`` in order will have, with their sizes, from the
    network's shapes: what :func:`build_view` allocates is known before it allocates."""
    flat = [n for g in groups for n in g]
    if sorted(flat) != sorted(net.tensor_names):
        raise InvalidNetworkError(
            f"a stack applies every tensor once; got groups {[list(g) for g in groups]} for tensors {list(net.tensor_names)}"
        )
    sizes = net.sizes
    keys = _wire_keys(net)
    order = lambda wires: sorted(wires, key=keys.__getitem__)  # noqa: E731
    width = lambda wires: math.prod(sizes[w] for w in wires)  # noqa: E731

    def permutation(old: Sequence[str], new: Sequence[str]) -> LayerPlan:
        return LayerPlan("P", (), tuple(old), tuple(new), (), (), (), width(old), width(new), 1, width(old))

    plans: list[LayerPlan] = []
    state = list(net.inputs)
    if order(state) != state:
        plans.append(permutation(state, order(state)))
        state = order(state)
    applied: set[str] = set()
    for group in groups:
        group = tuple(group)
        members = set(group)
        g_idx = list(dict.fromkeys(i for n in group for i in net.tensor(n).indices
                                   if net.index_counts[i] == 1 or any(t not in members for t in net.tensors_on(i))))
        later = set(net.tensor_names) - applied - members
        consumed = [w for w in state if w in g_idx]
        produced_set = [i for i in g_idx if i in net.outputs or any(t in later for t in net.tensors_on(i))]
        passing = [w for w in state if w not in g_idx]
        new_state = order(passing + produced_set)
        produced = [w for w in new_state if w in produced_set]
        core = width(produced) * width(consumed)
        plans.append(LayerPlan("·".join(group), group, tuple(state), tuple(new_state), tuple(consumed),
                               tuple(produced), tuple(g_idx), width(state), width(new_state), core,
                               width(passing) * core))
        applied |= members
        state = new_state
    if state != list(net.outputs):
        plans.append(permutation(state, net.outputs))
    return plans


def check_plan(net: TensorNetwork, plans: Sequence[LayerPlan], *, view: str = "") -> None:
    """Refuse (:class:`BudgetError`, before any allocation) a stack whose layers would not fit:
    more than :data:`MAX_LAYER_NNZ` non-zeros in one layer, or a layer wider than
    :data:`MAX_STACK_WIDTH` (the self-check multiplies vectors of that length)."""
    what = f"the {view!r} view of " if view else ""
    for plan in plans:
        widest = max(plan.in_size, plan.out_size)
        if widest > MAX_STACK_WIDTH:
            raise BudgetError(
                f"a stack layer is limited to {MAX_STACK_WIDTH:,} inputs or outputs; layer {plan.name!r} of "
                f"{what}{net.name or 'this network'!r} maps {plan.in_size:,} -> {plan.out_size:,}"
            )
        if max(plan.nnz, plan.core_size) > MAX_LAYER_NNZ:
            raise BudgetError(
                f"a stack layer is limited to {MAX_LAYER_NNZ:,} non-zeros; layer {plan.name!r} of "
                f"{what}{net.name or 'this network'!r} ({plan.in_size:,} -> {plan.out_size:,}) has {plan.nnz:,}"
            )
    total = sum(plan.nnz for plan in plans)
    if total > MAX_VIEW_NNZ:
        raise BudgetError(
            f"a stack view is limited to {MAX_VIEW_NNZ:,} non-zeros in all its layers; {what}"
            f"{net.name or 'this network'!r} has {total:,} in {len(plans)} layers"
        )


def check_network(net: TensorNetwork) -> None:
    """Refuse (:class:`BudgetError`) a network whose stack views cannot be drawn here, from its
    shapes alone: too many parameters for random tensors, or in/out features wider than a stack
    layer may be."""
    for what, features in (("in_features", net.in_features), ("out_features", net.out_features)):
        if features > MAX_STACK_WIDTH:
            raise BudgetError(
                f"a stack layer is limited to {MAX_STACK_WIDTH:,} inputs or outputs; {net.name or 'this network'!r} "
                f"has {what} = {features:,}"
            )
    if net.params > MAX_STACK_PARAMS:
        raise BudgetError(
            f"stack views draw random tensors for networks up to {MAX_STACK_PARAMS:,} parameters; "
            f"{net.name or 'this network'!r} has {net.params:,}"
        )


def build_view(
    net: TensorNetwork,
    tensors: Mapping[str, Any],
    groups: Sequence[Sequence[str]],
    *,
    name: str,
    description: str = "",
    check: bool = True,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> StackView:
    """A stack that applies the tensor ``groups`` in the given order (each group contracted into
    one tensor first), checked against the dense matrix.  Its layers are planned from shapes and
    refused (:func:`check_plan`) before anything is allocated."""
    plans = plan_view(net, groups)
    check_plan(net, plans, view=name)
    arrays = {n: np.asarray(a, dtype=np.float64) for n, a in zip(net.tensor_names, ordered_tensors(net, tensors))}
    sizes = net.sizes
    layers: list[StackLayer] = []
    for plan in plans:
        if not plan.tensors:  # a permutation of the wires
            layers.append(_layer("P", (), plan.old, plan.new, (), (), np.ones((1, 1)), sizes))
            continue
        # the group's tensor over (produced, consumed); a wire both read and written (a hyperedge
        # passing through) gets a delta between its two copies
        both = [w for w in plan.consumed if w in plan.produced]
        base = _group_tensor(net, plan.tensors, arrays, plan.group_indices)
        core, structure = _with_deltas(base, plan.group_indices, plan.produced, plan.consumed, both, sizes)
        layers.append(_layer(plan.name, plan.tensors, plan.old, plan.new, plan.consumed, plan.produced, core, sizes,
                             structure))
    view = StackView(name, description, tuple(layers), arrays, extra=dict(extra or {}))
    return _checked(net, view, seed) if check else view


def _with_deltas(base: np.ndarray, g_idx: Sequence[str], produced: Sequence[str], consumed: Sequence[str],
                 both: Sequence[str], sizes: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """``core[produced..., consumed...]`` from ``base[g_idx...]``, and (when a wire is in ``both``)
    the mask of its structural non-zeros: the deltas between a passing wire's two copies."""
    names = {i: oe.get_symbol(k) for k, i in enumerate(g_idx)}
    out_names = dict(names)
    operands, terms = [base], ["".join(names[i] for i in g_idx)]
    mask_ops, mask_terms = [np.ones(base.shape)], [terms[0]]
    for k, w in enumerate(both):
        copy = oe.get_symbol(len(g_idx) + k)
        out_names[w] = copy  # the produced copy of a passing wire
        eye = np.eye(sizes[w])
        operands.append(eye)
        terms.append(names[w] + copy)
        mask_ops.append(eye)
        mask_terms.append(names[w] + copy)
    out = "".join(out_names[i] for i in produced) + "".join(names[i] for i in consumed)
    core = np.einsum(",".join(terms) + "->" + out, *operands)
    if not both:
        return core, None
    return core, np.einsum(",".join(mask_terms) + "->" + out, *mask_ops) != 0


def _checked(net: TensorNetwork, view: StackView, seed: int) -> StackView:
    from .contract import forward

    widest = max(max(layer.in_size, layer.out_size) for layer in view.layers)
    n_in = net.in_features
    if n_in * widest <= CHECK_ELEMENTS:
        cols = np.arange(n_in)
    else:
        k = max(8, min(n_in, CHECK_ELEMENTS // widest))
        cols = np.sort(np.random.default_rng(seed).choice(n_in, size=k, replace=False))
    probe = np.zeros((n_in, len(cols)))
    probe[cols, np.arange(len(cols))] = 1.0
    state = probe
    for layer in view.layers:
        state = layer.matrix @ state
    reference = forward(net, probe.T, view.tensors, budget=CHECK_BUDGET_ELEMENTS).T  # W[:, cols]
    diff = float(np.max(np.abs(state - reference))) if state.size else 0.0
    return StackView(view.name, view.description, view.layers, view.tensors, diff, len(cols),
                     len(cols) == n_in, view.extra)


# ---------------------------------------------------------------------- gauge
def gauge_move(net: TensorNetwork, tensors: Mapping[str, Any], bond: str, X: np.ndarray | None = None,
               seed: int = 0) -> dict[str, np.ndarray]:
    """New tensors with ``a -> a X^-1`` and ``b -> X b`` on ``bond`` (between ``a`` and ``b``, in
    network order; ``X`` defaults to :func:`tnviz.gauge.random_invertible`); the dense matrix is
    unchanged."""
    check_bond(net, bond)
    arrays = {n: np.asarray(a, dtype=np.float64) for n, a in zip(net.tensor_names, ordered_tensors(net, tensors))}
    X = random_invertible(net.sizes[bond], seed) if X is None else X
    return apply_gauge(net, arrays, bond, X)


# ---------------------------------------------------------------------- the views
def _contraction_groups(net: TensorNetwork) -> list[tuple[str, ...]]:
    """Tensor groups in the order the forward path (batch 1, the best path :func:`tnviz.cost`
    reports) applies them to x."""
    from .paths import DEFAULT_OPTIMIZER, forward_path

    path = forward_path(net, 1, DEFAULT_OPTIMIZER).path
    live: list[Any] = ["x", *[(n,) for n in net.tensor_names]]
    groups: list[tuple[str, ...]] = []
    for pair in path:
        picked = [live.pop(p) for p in sorted(pair, reverse=True)]
        if "x" in picked:
            groups += [g for g in picked if g != "x"]
            live.append("x")
        else:
            live.append(tuple(n for g in picked for n in g))
    names = net.tensor_names
    return [tuple(sorted(g, key=names.index)) for g in groups]


def _view_l2r(net, arrays, seed):
    return build_view(net, arrays, [(n,) for n in net.tensor_names], name="left-to-right", seed=seed,
                      description="one tensor per layer, first tensor nearest the input")


def _view_r2l(net, arrays, seed):
    return build_view(net, arrays, [(n,) for n in reversed(net.tensor_names)], name="right-to-left", seed=seed,
                      description="one tensor per layer, last tensor nearest the input")


def _view_grouped(net, arrays, seed):
    names = net.tensor_names
    if len(names) < 3:
        return None
    groups = [tuple(names[k:k + 2]) for k in range(0, len(names), 2)]
    return build_view(net, arrays, groups, name="grouped", seed=seed,
                      description="neighbouring tensors merged in pairs: fewer, denser layers")


def _view_shifted(net, arrays, seed):
    names = list(net.tensor_names)
    if len(names) < 2:
        return None
    k = max(1, len(names) // 2 - 1)
    order = names[:k - 1] + [names[k], names[k - 1]] + names[k + 1:]
    return build_view(
        net, arrays, [(n,) for n in order], name="shifted", seed=seed,
        description=(f"{names[k]} shifted below {names[k - 1]}: applied first, it is matricized differently "
                     f"(its shared legs with {names[k - 1]} become outputs, paper Fig. 4 iii)"),
        extra={"shifted": names[k]},
    )


def gauge_view(net: TensorNetwork, tensors: Mapping[str, Any], bond: str, seed: int = 0) -> StackView:
    """The left-to-right stack after a gauge move with a random invertible ``X`` on ``bond``."""
    check_bond(net, bond)
    arrays = {n: np.asarray(a, dtype=np.float64) for n, a in zip(net.tensor_names, ordered_tensors(net, tensors))}
    X = random_invertible(net.sizes[bond], seed)
    gauged = gauge_move(net, arrays, bond, X)
    a, b = net.tensors_on(bond)
    changed = max(float(np.max(np.abs(gauged[t] - arrays[t]))) for t in (a, b))
    return build_view(
        net, gauged, [(n,) for n in net.tensor_names], name="gauge", seed=seed,
        description=f"gauge move on bond {bond!r}: {a} -> {a} X^-1, {b} -> X {b} (random invertible X)",
        extra={"bond": bond, "tensors_changed_by": changed, "X_condition": float(np.linalg.cond(X)), "X": X},
    )


def _view_gauge(net, arrays, seed):
    bonds = list(net.bonds)
    if not bonds:
        return None
    return gauge_view(net, arrays, bonds[(len(bonds) - 1) // 2], seed)


def _view_contraction(net, arrays, seed):
    return build_view(net, arrays, _contraction_groups(net), name="contraction order", seed=seed,
                      description="the layers the planned contraction path applies to the input (paper Fig. 4 iv)")


#: Equivalent views by name: function(network, tensors, seed) -> StackView, or None when the
#: view does not apply (e.g. no bond for a gauge move).
VIEWS: dict[str, Callable[[TensorNetwork, Mapping[str, Any], int], StackView | None]] = {
    "left-to-right": _view_l2r,
    "right-to-left": _view_r2l,
    "grouped": _view_grouped,
    "shifted": _view_shifted,
    "gauge": _view_gauge,
    "contraction order": _view_contraction,
}


def stack_views(
    network: TensorNetwork | str | Mapping[str, Any],
    tensors: Mapping[str, Any] | None = None,
    *,
    views: Sequence[str] | None = None,
    seed: int = 0,
) -> list[StackView]:
    """Every equivalent stack view of the layer (``views`` picks some by name from :data:`VIEWS`).

    ``tensors`` default to seeded random tensors; every view carries ``max_abs_diff`` against
    the dense matrix.
    """
    net = load_network(network)
    names = list(VIEWS) if views is None else list(views)
    for v in names:
        if v not in VIEWS:
            raise InvalidNetworkError(f"unknown stack view {v!r}; choose one of {list(VIEWS)}")
    check_network(net)
    if tensors is None:
        tensors = random_tensors(net, seed=seed)
    out = []
    for v in names:
        view = VIEWS[v](net, tensors, seed)
        if view is not None:
            out.append(view)
    return out


def stack_report(network: TensorNetwork | str | Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """The stack views as plain JSON data (no matrices), for ``tnviz stack SPEC.json --json``."""
    net = load_network(network)
    return {
        "network": net.name,
        "in_features": net.in_features,
        "out_features": net.out_features,
        "params": net.params,
        "dense_flops": 2 * net.in_features * net.out_features,
        "seed": seed,
        "views": [v.to_dict() for v in stack_views(net, seed=seed)],
    }
