"""Bond features: the activations living on the bonds of a TN layer, and what they tell.

A bond is a latent space that an ordinary layer does not have (paper, abstract).  For a layer
``y = x W^T`` whose ``W`` is a network, *cut* the network at a bond: the tensors on one side
(:attr:`BondCut.left`, the side that reads the input first) contracted with ``x`` give the
intermediate ``state[batch, other legs..., bond]``; the tensors on the other side finish it into
``y``.  For an MPO swept left to right ``left`` is the cores left of the bond and the other legs
are the outputs already produced and the inputs still to absorb.  A bond channel's *activation*
for one sample is that state with the other legs summed (``"sum"``), picked (``"index"``) or
reduced to their norm (``"norm"``).

* The cut (core, arrays only): :func:`bond_cut`, :func:`bond_state`, :func:`finish_from_state`,
  :func:`reduce_state` (:mod:`tnviz.bonds.cut`).
* Capture (drives TN layers, above ``tnviz.nn``): :class:`BondCapture` (forward hooks on every :class:`~tnviz.nn.TNLinear` of a model;
  the hooks compute the state on the side and return nothing, so outputs are bit-identical) and
  :func:`capture_bonds` (a dataset through a model -> ``{(layer, bond): (N, r) array}``).
* Analysis: :func:`bond_entropy` (of a bond's spectrum), :func:`bond_stats` (class means, selectivity, covariance spectrum, rank,
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

from ..gauge import random_orthogonal
from .analysis import GAUGE_BEHAVIOUR, BondStats, bond_entropy, bond_stats, compare_stats, top_inputs
from .capture import BondCapture, capture_bonds
from .cut import REDUCTIONS, BondCut, bond_cut, bond_state, finish_from_state, reduce_state
from .gauge import GAUGE_KINDS, ORTHOGONAL_KINDS, UNCHANGED_RTOL, bond_map, gauge_matrix, gauge_report, principal_gauge
from .inspection import (
    DIGITS_TN_LAYERS, BondInspection, gauge_layer, gauge_model, inspect_bond, tensorized_digits_mlp,
)

__all__ = [
    "REDUCTIONS", "BondCut", "bond_cut", "bond_state", "finish_from_state", "reduce_state", "BondCapture",
    "capture_bonds", "BondStats", "GAUGE_BEHAVIOUR", "bond_entropy", "bond_stats", "top_inputs", "compare_stats", "GAUGE_KINDS",
    "ORTHOGONAL_KINDS", "UNCHANGED_RTOL", "random_orthogonal", "bond_map", "gauge_layer", "gauge_model",
    "principal_gauge", "gauge_matrix", "gauge_report", "BondInspection", "inspect_bond", "DIGITS_TN_LAYERS",
    "tensorized_digits_mlp",
]
