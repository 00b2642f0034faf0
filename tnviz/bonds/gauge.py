"""Gauge moves on a bond seen from its activations: the ``X`` of a move of each kind, what the
move does to the state (:func:`bond_map`) and to bond statistics (:func:`gauge_report`).  The
move itself is the core's :func:`tnviz.gauge.apply_gauge`; on a layer or a model it is
:func:`tnviz.model.bonds.gauge_layer` / :func:`~tnviz.model.bonds.gauge_model`."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import TnvizError
from ..gauge import random_invertible, random_orthogonal
from .analysis import GAUGE_BEHAVIOUR, BondStats, compare_stats
from .cut import BondCut


def bond_map(cut: BondCut, X: np.ndarray) -> np.ndarray:
    """``M`` with ``state' = state @ M`` (on the bond axis) after the gauge move ``X`` of
    :func:`tnviz.gauge.apply_gauge`: ``X⁻¹`` when the bond's first tensor is on the left, else ``Xᵀ``."""
    X = np.asarray(X, dtype=np.float64)
    return np.linalg.inv(X) if cut.first_tensor_left else X.T


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
