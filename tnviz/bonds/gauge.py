"""Gauge moves on a bond of a TN layer or a model, and what they do to bond statistics."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import TnvizError
from .analysis import GAUGE_BEHAVIOUR, BondStats, compare_stats
from .capture import BondCut


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

    from ..teach import apply_gauge

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
        from ..teach import random_invertible

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

    from ..nn import TNLinear

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
