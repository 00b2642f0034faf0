"""Bond features: the activations living on the bonds of a TN layer, and what they tell.

A bond is a latent space that an ordinary layer does not have (paper, abstract).  For a layer
``y = x W^T`` whose ``W`` is a network, *cut* the network at a bond: the tensors on one side
(:attr:`BondCut.left`, the side that reads the input first) contracted with ``x`` give the
intermediate ``state[batch, other legs..., bond]``; the tensors on the other side finish it into
``y``.  For an MPO swept left to right ``left`` is the cores left of the bond and the other legs
are the outputs already produced and the inputs still to absorb.  A bond channel's *activation*
for one sample is that state with the other legs summed (``"sum"``), picked (``"index"``) or
reduced to their norm (``"norm"``).

* Capture: :class:`BondCapture` (forward hooks on every :class:`~tnviz.nn.TNLinear` of a model;
  the hooks compute the state on the side and return nothing, so outputs are bit-identical) and
  :func:`capture_bonds` (a dataset through a model -> ``{(layer, bond): (N, r) array}``).
* Analysis: :func:`bond_stats` (class means, selectivity, covariance spectrum, rank,
  class-separation spectrum, linear-probe accuracy) and :data:`GAUGE_BEHAVIOUR`, which says which
  of them survive a gauge move ``a -> a X^-1, b -> X b`` on the bond: the state becomes
  ``state @ M`` (:func:`bond_map`), so quantities that are invariant under congruence with ``M``
  stay, per-channel ones do not.
* Gauge: :func:`gauge_layer` / :func:`gauge_model` (the move on a layer or inside a model),
  :func:`gauge_matrix` (:data:`GAUGE_KINDS`: random orthogonal, random invertible, the principal
  axes of the activations via :func:`principal_gauge`), :func:`compare_stats`, :func:`gauge_report`.
* All of it for one bond: :func:`inspect_bond` (what the Bond features page shows).

>>> import numpy as np, tnviz
>>> net = tnviz.mpo([4, 4], [4, 4], ranks=3)
>>> cut = bond_cut(net, "b1")
>>> cut.left, cut.right, cut.state_indices
(('A',), ('B',), ('o1', 'i2', 'b1'))
>>> t = tnviz.random_tensors(net, seed=0, dtype=np.float64)
>>> x = np.random.default_rng(0).standard_normal((5, 16))
>>> y = finish_from_state(cut, bond_state(cut, x, t), t)
>>> bool(np.allclose(y, tnviz.forward(net, x, t)))
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import opt_einsum as oe

from .errors import InvalidNetworkError, TnvizError
from .network import BATCH_INDEX, TensorNetwork

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


def _component_without(net: TensorNetwork, start: str, cut_index: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for i in net.tensor(todo.pop()).indices:
            if i == cut_index:
                continue
            for n in net.tensors_on(i):
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
    return seen


def _inputs_on(net: TensorNetwork, names: set[str]) -> int:
    return sum(1 for n in names for i in net.tensor(n).indices if i in set(net.inputs))


def _default_left(net: TensorNetwork, bond: str) -> set[str]:
    a, b = net.tensors_on(bond)
    side_a = _component_without(net, a, bond)
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


# ---------------------------------------------------------------------- capture with hooks
class BondCapture:
    """Record bond activations of every :class:`~tnviz.nn.TNLinear` in ``model`` while it runs.

    ``bonds`` maps a layer's module name to the bonds to record (default: every bond of every
    TN layer).  The hooks are forward hooks that compute the state beside the layer and return
    ``None``: the model's outputs are untouched.  ``keep_states`` also keeps the full states.

    >>> import torch, tnviz
    >>> from tnviz.nn import TNLinear
    >>> layer = TNLinear(tnviz.mpo([4, 4], [4, 4], ranks=3))
    >>> with BondCapture(layer) as cap:
    ...     _ = layer(torch.randn(7, 16))
    >>> cap.activations("", "b1").shape
    (7, 3)
    """

    def __init__(self, model: Any, bonds: Mapping[str, Sequence[str]] | None = None, reduce: str = "sum",
                 at: Mapping[str, int] | None = None, keep_states: bool = False) -> None:
        from .nn import TNLinear

        if reduce not in REDUCTIONS:
            raise TnvizError(f"a bond reduction must be one of {list(REDUCTIONS)}; got {reduce!r}")
        layers = {name: m for name, m in model.named_modules() if isinstance(m, TNLinear)}
        if not layers:
            raise TnvizError(f"bond capture needs a model with TNLinear layers; {type(model).__name__} has none")
        if bonds is None:
            bonds = {name: m.network.bonds for name, m in layers.items()}
        unknown = [name for name in bonds if name not in layers]
        if unknown:
            raise TnvizError(f"bond capture names TN layers of the model ({list(layers)}); {unknown} are not")
        self.cuts = {(name, b): bond_cut(layers[name].network, b) for name, bs in bonds.items() for b in bs}
        self.layers = layers
        self.reduce, self.at, self.keep_states = reduce, at, keep_states
        self._records: dict[tuple[str, str], list[Any]] = {k: [] for k in self.cuts}
        self._states: dict[tuple[str, str], list[Any]] = {k: [] for k in self.cuts}
        self._handles: list[Any] = []

    def _hook(self, name: str):
        import torch

        def hook(module, inputs, output) -> None:
            x = inputs[0]
            with torch.no_grad():
                x2d = x.detach().reshape(-1, module.in_features)
                tensors = {n: t.detach() for n, t in module.named_network_tensors().items()}
                for (layer, _), cut in self.cuts.items():
                    if layer != name:
                        continue
                    state = bond_state(cut, x2d, tensors)
                    self._records[(layer, cut.bond)].append(reduce_state(cut, state, self.reduce, self.at))
                    if self.keep_states:
                        self._states[(layer, cut.bond)].append(state)
            return None

        return hook

    def __enter__(self) -> "BondCapture":
        for name in {layer for layer, _ in self.cuts}:
            self._handles.append(self.layers[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def activations(self, layer: str, bond: str) -> np.ndarray:
        """All recorded ``(N, bond)`` activations of ``bond`` in ``layer``, as float64 numpy."""
        import torch

        rec = self._records[(layer, bond)]
        if not rec:
            return np.zeros((0, self.cuts[(layer, bond)].size))
        return torch.cat(rec).double().cpu().numpy()

    def states(self, layer: str, bond: str) -> list[Any]:
        """The full states per call (only with ``keep_states=True``)."""
        return list(self._states[(layer, bond)])


def capture_bonds(model: Any, batches: Iterable[Any], bonds: Mapping[str, Sequence[str]] | None = None,
                  reduce: str = "sum", at: Mapping[str, int] | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Run ``batches`` through ``model`` (eval mode, no gradients) and return
    ``{(layer name, bond): (N, bond size) float64 array}``."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with BondCapture(model, bonds, reduce, at) as cap, torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        model.train(was_training)
    return {key: cap.activations(*key) for key in cap.cuts}


# ---------------------------------------------------------------------- analysis
@dataclass(frozen=True)
class BondStats:
    """Statistics of ``(N, r)`` bond activations with class labels (see :func:`bond_stats`)."""

    classes: tuple[int, ...]
    class_means: np.ndarray  # (classes, r)
    selectivity: np.ndarray  # (classes, r): (mean in class - mean elsewhere) / std of the channel
    spectrum: np.ndarray  # eigenvalues of the covariance, descending
    rank: int  # numerical rank of the centred activations
    separation: np.ndarray  # eigenvalues of (within-class scatter)^-1 (between-class scatter), descending
    probe_accuracy: float  # least-squares linear read-out of the class (with bias), on the same data
    total_variance: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.class_means.shape[1]

    @property
    def centred_means(self) -> np.ndarray:
        """Class means minus the mean over all samples: what tells the classes apart per channel."""
        return self.class_means - self.extra["overall_mean"]

    def channels_for(self, fraction: float = 0.9) -> int:
        """How many principal directions carry ``fraction`` of the variance."""
        if self.total_variance <= 0:
            return 0
        cum = np.cumsum(self.spectrum) / self.spectrum.sum()
        return int(np.searchsorted(cum, fraction - 1e-12) + 1)

    @property
    def participation_ratio(self) -> float:
        """``(sum λ)^2 / sum λ^2``: the effective number of channels carrying the variance."""
        s = self.spectrum
        return float(s.sum() ** 2 / max((s * s).sum(), 1e-300))

    def top_channels(self, k: int = 3) -> dict[int, list[int]]:
        """The ``k`` most selective channels of each class, most selective first."""
        order = np.argsort(-self.selectivity, axis=1, kind="stable")[:, :k]
        return {c: [int(j) for j in row] for c, row in zip(self.classes, order)}

    def values(self) -> dict[str, np.ndarray]:
        """Every quantity by its :data:`GAUGE_BEHAVIOUR` name."""
        return {
            "covariance spectrum": self.spectrum,
            "total variance": np.array([self.total_variance]),
            "rank": np.array([float(self.rank)]),
            "class-separation spectrum": self.separation,
            "linear probe accuracy": np.array([self.probe_accuracy]),
            "class means per channel": self.class_means,
            "selectivity per channel": self.selectivity,
        }


#: quantity -> (invariant under an orthogonal X, invariant under any invertible X, why).
GAUGE_BEHAVIOUR: dict[str, tuple[bool, bool, str]] = {
    "covariance spectrum": (True, False, "C -> MᵀCM: same eigenvalues only when M is orthogonal"),
    "total variance": (True, False, "trace(MᵀCM) = trace(C) only for orthogonal M"),
    "rank": (True, True, "H -> HM keeps the span of the activations (the subspace) and its dimension"),
    "class-separation spectrum": (True, True, "eig(W⁻¹B) -> eig(M⁻¹W⁻¹BM): similar matrices, same eigenvalues"),
    "linear probe accuracy": (True, True, "a linear read-out of HM is a linear read-out of H"),
    "class means per channel": (False, False, "each channel becomes a mixture of channels"),
    "selectivity per channel": (False, False, "per-channel, so it follows the mixing"),
}


def _one_hot(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    return (labels[:, None] == np.asarray(classes)[None, :]).astype(np.float64)


def bond_stats(acts: Any, labels: Any, classes: Sequence[int] | None = None, rtol: float = 1e-9) -> BondStats:
    """Statistics of bond activations ``acts (N, r)`` with integer ``labels (N,)``, in float64."""
    h = np.asarray(acts, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if h.ndim != 2 or h.shape[0] != y.shape[0] or h.shape[0] < 2:
        raise TnvizError(f"bond statistics need (N, channels) activations and N labels, N >= 2; got {h.shape} and {y.shape}")
    classes = tuple(int(c) for c in (np.unique(y) if classes is None else classes))
    onehot = _one_hot(y, classes)
    counts = onehot.sum(0)
    if np.any(counts == 0):
        raise TnvizError(f"every class needs samples; classes {[c for c, n in zip(classes, counts) if n == 0]} have none")
    means = (onehot.T @ h) / counts[:, None]
    overall = h.mean(0)
    centred = h - overall
    cov = centred.T @ centred / (len(h) - 1)
    spectrum = np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)
    sv = np.linalg.svd(centred, compute_uv=False)
    rank = int((sv > rtol * max(sv.max(initial=0.0), 1e-300)).sum())
    # selectivity (a d-prime): (class mean - mean of the rest) / std of the channel over all samples
    rest = (h.sum(0)[None, :] - means * counts[:, None]) / np.maximum(len(h) - counts, 1)[:, None]
    std = np.sqrt(np.maximum(np.diag(cov), 1e-300))
    selectivity = (means - rest) / std[None, :]
    # class-separation (Fisher) spectrum, computed in the span of the activations so a
    # rank-deficient bond does not make W singular
    within_c = h - onehot @ means
    between_c = (means - overall) * np.sqrt(counts)[:, None]
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[: rank].T  # (r, rank): the span of the centred activations
    W = basis.T @ (within_c.T @ within_c) @ basis
    B = basis.T @ (between_c.T @ between_c) @ basis
    if rank:
        L = np.linalg.cholesky(W + 1e-12 * np.trace(W) / rank * np.eye(rank))
        Linv = np.linalg.inv(L)
        separation = np.clip(np.linalg.eigvalsh(Linv @ B @ Linv.T)[::-1], 0.0, None)
    else:
        separation = np.zeros(0)
    design = np.hstack([centred @ basis, np.ones((len(h), 1))])
    coef, *_ = np.linalg.lstsq(design, onehot, rcond=None)
    probe = float(np.mean(np.argmax(design @ coef, 1) == np.argmax(onehot, 1)))
    return BondStats(classes, means, selectivity, spectrum, rank, separation, probe, float(np.trace(cov)),
                     {"overall_mean": overall})


def top_inputs(acts: Any, k: int = 5) -> np.ndarray:
    """``(channels, k)`` sample indices with the largest activation of each channel, largest first."""
    h = np.asarray(acts)
    k = min(k, h.shape[0])
    return np.argsort(-h, axis=0, kind="stable")[:k].T


def compare_stats(before: BondStats, after: BondStats) -> dict[str, float]:
    """Relative change ``max|after - before| / max|before|`` of every quantity of :meth:`BondStats.values`."""
    a, b = before.values(), after.values()
    out = {}
    for name in a:
        x, y = a[name], b[name]
        if x.shape != y.shape:
            out[name] = math.inf
            continue
        scale = max(float(np.max(np.abs(x), initial=0.0)), 1e-300)
        out[name] = float(np.max(np.abs(y - x), initial=0.0)) / scale
    return out


# ---------------------------------------------------------------------- gauge
def random_orthogonal(size: int, seed: int = 0) -> np.ndarray:
    """A seeded random orthogonal matrix (``Q`` of a Gaussian's QR, signs fixed)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((size, size)))
    return q * np.sign(np.diag(r))[None, :]


def bond_map(cut: BondCut, X: np.ndarray) -> np.ndarray:
    """``M`` with ``state' = state @ M`` (on the bond axis) after the gauge move ``X`` of
    :func:`tnviz.teach.apply_gauge`: ``X⁻¹`` when the bond's first tensor is on the left, else ``Xᵀ``."""
    X = np.asarray(X, dtype=np.float64)
    return np.linalg.inv(X) if cut.first_tensor_left else X.T


def gauge_layer(layer: Any, bond: str, X: np.ndarray) -> Any:
    """A copy of a :class:`~tnviz.nn.TNLinear` with ``X X⁻¹`` inserted on ``bond`` (done in
    float64, stored back in the layer's dtype): the same layer, other bond channels."""
    import copy

    import torch

    from .teach import apply_gauge

    net = layer.network
    tensors = {n: t.detach().double().cpu().numpy() for n, t in layer.named_network_tensors().items()}
    moved = apply_gauge(net, tensors, bond, np.asarray(X, dtype=np.float64))
    new = copy.deepcopy(layer)
    new.clear_cache()
    new.load_tensors({n: torch.from_numpy(a) for n, a in moved.items()})
    return new


#: Gauge moves offered to users: kind -> description.
GAUGE_KINDS: dict[str, str] = {
    "orthogonal": "a random orthogonal X (a rotation of the bond channels)",
    "invertible": "a random invertible X (singular values in [0.5, 2]: rotation and stretching)",
    "principal": "the principal axes of the activations (orthogonal: channel k becomes principal direction k)",
}
#: Gauge kinds whose X is orthogonal (the first column of :data:`GAUGE_BEHAVIOUR` applies).
ORTHOGONAL_KINDS = ("orthogonal", "principal")

#: Relative change below which a quantity counts as unchanged.
UNCHANGED_RTOL = 1e-6  # analyses run in float64 (see gauge_model)


def principal_gauge(acts: Any) -> np.ndarray:
    """The orthogonal ``X`` that turns the bond channels into the principal axes of ``acts (N, r)``:
    after the move (for either side, ``state' = state Xᵀ``) the covariance is diagonal, in
    descending order; each axis's sign makes its largest component positive."""
    h = np.asarray(acts, dtype=np.float64)
    centred = h - h.mean(0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    V = vectors[:, ::-1]
    signs = np.sign(V[np.argmax(np.abs(V), axis=0), np.arange(V.shape[1])])
    return (V * np.where(signs == 0, 1.0, signs)).T


def gauge_matrix(kind: str, size: int, seed: int = 0, acts: Any = None) -> np.ndarray:
    """The ``X`` of a gauge move of ``kind`` (a key of :data:`GAUGE_KINDS`): seeded random, or
    for ``"principal"`` from the activations ``acts``."""
    if kind == "principal":
        if acts is None or np.asarray(acts).shape[1:] != (size,):
            raise TnvizError(f"the principal-axes gauge needs (N, {size}) bond activations; got "
                             f"{None if acts is None else np.asarray(acts).shape}")
        return principal_gauge(acts)
    if kind == "orthogonal":
        return random_orthogonal(size, seed)
    if kind == "invertible":
        from .teach import random_invertible

        return random_invertible(size, seed)
    raise TnvizError(f"a gauge move is one of {list(GAUGE_KINDS)}; got {kind!r}")


def gauge_report(before: BondStats, after: BondStats, kind: str, rtol: float = UNCHANGED_RTOL) -> list[dict[str, Any]]:
    """One row per quantity of :data:`GAUGE_BEHAVIOUR`: whether theory says a ``kind`` gauge move
    keeps it, its measured relative change, and whether the measurement agrees."""
    if kind not in GAUGE_KINDS:
        raise TnvizError(f"a gauge move is one of {list(GAUGE_KINDS)}; got {kind!r}")
    change = compare_stats(before, after)
    rows = []
    for quantity, (orthogonal_ok, invertible_ok, why) in GAUGE_BEHAVIOUR.items():
        invariant = orthogonal_ok if kind in ORTHOGONAL_KINDS else invertible_ok
        unchanged = change[quantity] < rtol
        rows.append({"quantity": quantity, "invariant": invariant, "relative change": change[quantity],
                     "unchanged": unchanged, "agrees": unchanged == invariant, "why": why})
    return rows



def gauge_model(model: Any, layer: str, bond: str, X: np.ndarray) -> Any:
    """A deep copy of ``model`` whose TN layer ``layer`` (module name, ``""`` for the model
    itself) has ``X X⁻¹`` inserted on ``bond``; the model computes the same function."""
    import copy

    from .nn import TNLinear

    modules = dict(model.named_modules())
    if not isinstance(modules.get(layer), TNLinear):
        names = [n for n, m in modules.items() if isinstance(m, TNLinear)]
        raise TnvizError(f"a gauge move acts on a TN layer of the model ({names}); {layer!r} is not one")
    moved = gauge_layer(modules[layer], bond, X)
    if layer == "":
        return moved
    new = copy.deepcopy(model)
    parent_name, _, child = layer.rpartition(".")
    parent = new.get_submodule(parent_name) if parent_name else new
    setattr(parent, child, moved)
    return new



@dataclass(frozen=True)
class BondInspection:
    """Everything shown about one bond of one model (see :func:`inspect_bond`), as plain data."""

    layer: str
    cut: BondCut
    activations: np.ndarray  # (N, r), float64
    stats: BondStats
    top: np.ndarray  # (r, k) sample indices, most active first
    gauge: str | None = None
    X: np.ndarray | None = None
    activations_after: np.ndarray | None = None
    stats_after: BondStats | None = None
    gauge_rows: tuple[dict[str, Any], ...] = ()
    output_change: float | None = None  # max |model'(x) - model(x)| after the gauge move
    output_scale: float | None = None  # max |model(x)|


def inspect_bond(model: Any, layer: str, bond: str, x: Any, labels: Any, *, reduce: str = "sum",
                 at: Mapping[str, int] | None = None, gauge: str | None = None, seed: int = 0, top_k: int = 6,
                 activations: Any = None) -> BondInspection:
    """Capture ``bond`` of TN layer ``layer`` on ``x`` (in float64, on a copy of the model), its
    statistics against ``labels``, its most active inputs and, with ``gauge`` (a key of
    :data:`GAUGE_KINDS`), the same after a seeded gauge move, the :func:`gauge_report` and how much
    the model's outputs moved.  ``activations(model, x) -> (N, r)`` replaces the hooks for models
    whose forward does not call the layer (the autoencoder)."""
    import copy

    import torch

    model64 = copy.deepcopy(model).double().eval()
    modules = dict(model64.named_modules())
    from .nn import TNLinear

    if not isinstance(modules.get(layer), TNLinear):
        names = [n for n, m in modules.items() if isinstance(m, TNLinear)]
        raise TnvizError(f"bond features need a TN layer of the model ({names}); {layer!r} is not one")
    cut = bond_cut(modules[layer].network, bond)
    x64 = torch.as_tensor(x).double().to(next(model64.parameters()).device)

    def capture(m: Any) -> np.ndarray:
        if activations is not None:
            with torch.no_grad():
                return activations(m, x64).detach().double().cpu().numpy()
        return capture_bonds(m, [x64], bonds={layer: [bond]}, reduce=reduce, at=at)[(layer, bond)]

    labels = np.asarray(labels).reshape(-1)
    acts = capture(model64)
    stats = bond_stats(acts, labels)
    top = top_inputs(acts, top_k)
    if gauge is None:
        return BondInspection(layer, cut, acts, stats, top)
    X = gauge_matrix(gauge, cut.size, seed, acts=acts)
    moved = gauge_model(model64, layer, bond, X)
    after = capture(moved)
    stats_after = bond_stats(after, labels)
    with torch.no_grad():
        y, y2 = model64(x64), moved(x64)
    return BondInspection(
        layer, cut, acts, stats, top, gauge, X, after, stats_after, tuple(gauge_report(stats, stats_after, gauge)),
        float((y2 - y).abs().max()), float(y.abs().max()),
    )


# ---------------------------------------------------------------------- demo model
#: The digits MLP layers that can be tensorized for the demo: layer -> (in_dims, out_dims).
DIGITS_TN_LAYERS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "fc2": ((4, 4, 4, 4), (4, 4, 4, 4)),
    "fc1": ((8, 8), (4, 4, 4, 4)),
}


def tensorized_digits_mlp(layer: str = "fc2", max_rank: int = 8, heal_epochs: int = 0, seed: int = 0,
                          device: Any = None) -> Any:
    """The digits MLP demo with ``layer`` replaced by an MPO (TT-SVD of its weight, ``max_rank``),
    optionally healed end to end for ``heal_epochs`` on the training split (seeded)."""
    import copy

    from .model.demos import digits_model
    from .nn import TNLinear

    if layer not in DIGITS_TN_LAYERS:
        raise TnvizError(f"the tensorized digits MLP replaces one of {list(DIGITS_TN_LAYERS)}; got {layer!r}")
    base = digits_model("mlp", seed=seed, device=device)
    model = copy.deepcopy(base)
    in_dims, out_dims = DIGITS_TN_LAYERS[layer]
    tn = TNLinear.from_linear(getattr(base, layer), "mpo", in_dims=list(in_dims), out_dims=list(out_dims),
                              max_rank=max_rank)
    setattr(model, layer, tn)
    if heal_epochs > 0:
        from .model.heal import heal_digits

        heal_digits(model, epochs=heal_epochs, seed=seed)
    return model.eval()
