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
* Analysis: :func:`bond_entropy` (of a bond's spectrum), :func:`bond_stats` (class means, selectivity, covariance spectrum, rank,
  class-separation spectrum, linear-probe accuracy) and :data:`GAUGE_BEHAVIOUR`, which says which
  of them survive a gauge move ``a -> a X^-1, b -> X b`` on the bond: the state becomes
  ``state @ M`` (:func:`bond_map`), so quantities that are invariant under congruence with ``M``
  stay, per-channel ones do not.
* Gauge: :func:`gauge_matrix` (:data:`GAUGE_KINDS`: random orthogonal, random invertible, the
  principal axes of the activations via :func:`principal_gauge`), :func:`compare_stats`,
  :func:`gauge_report`.

What drives torch models lives in :mod:`tnviz.model.bonds`, above ``tnviz.nn``: the capture of
bond states with forward hooks (:class:`~tnviz.model.bonds.BondCapture`, whose hooks compute the
state on the side and return nothing, so outputs are bit-identical, and
:func:`~tnviz.model.bonds.capture_bonds`), the gauge move on a layer or inside a model
(:func:`~tnviz.model.bonds.gauge_layer`, :func:`~tnviz.model.bonds.gauge_model`), all of it for
one bond (:func:`~tnviz.model.bonds.inspect_bond`, what the Bond features page shows) and the
tensorized digits MLP.

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
from .cut import REDUCTIONS, BondCut, bond_cut, bond_state, finish_from_state, reduce_state
from .gauge import GAUGE_KINDS, ORTHOGONAL_KINDS, UNCHANGED_RTOL, bond_map, gauge_matrix, gauge_report, principal_gauge

__all__ = [
    "REDUCTIONS", "BondCut", "bond_cut", "bond_state", "finish_from_state", "reduce_state",
    "BondStats", "GAUGE_BEHAVIOUR", "bond_entropy", "bond_stats", "top_inputs", "compare_stats", "GAUGE_KINDS",
    "ORTHOGONAL_KINDS", "UNCHANGED_RTOL", "random_orthogonal", "bond_map",
    "principal_gauge", "gauge_matrix", "gauge_report",
]
