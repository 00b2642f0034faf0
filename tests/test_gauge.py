"""The one gauge module of the core (tnviz.gauge): every face moves a gauge with it and draws the
same X for the same seed (issue 14: the move existed twice, with two different random_invertible)."""
from __future__ import annotations

import numpy as np
import pytest

import tnviz
from tnviz import gauge
from tnviz.testing import small_template_networks


def test_every_face_uses_the_core_gauge():
    import tnviz.bonds.gauge as bonds_gauge
    import tnviz.model.bonds as inspection
    import tnviz.stack as stack
    import tnviz.teach as teach

    assert teach.random_invertible is gauge.random_invertible and teach.apply_gauge is gauge.apply_gauge
    assert stack.random_invertible is gauge.random_invertible and stack.apply_gauge is gauge.apply_gauge
    assert bonds_gauge.random_invertible is gauge.random_invertible
    assert inspection.apply_gauge is gauge.apply_gauge
    assert tnviz.bonds.random_orthogonal is gauge.random_orthogonal


def test_the_stack_view_teach_and_bond_features_draw_the_same_x():
    from tnviz.bonds import gauge_matrix
    from tnviz.stack import gauge_view

    net = tnviz.mpo([2, 3, 2], [3, 2, 2], ranks=[3, 4])
    tensors = tnviz.random_tensors(net, seed=0)
    view = gauge_view(net, tensors, "b2", seed=5)
    demo = tnviz.teach.gauge_demo(net, "b2", seed=5)
    X = gauge.random_invertible(4, 5)
    np.testing.assert_array_equal(view.extra["X"], X)
    np.testing.assert_array_equal(gauge_matrix("invertible", 4, seed=5), X)
    np.testing.assert_allclose(demo.condition, np.linalg.cond(X))


@pytest.mark.parametrize("size", [1, 2, 5, 16])
def test_random_invertible_is_seeded_well_conditioned_and_not_orthogonal(size):
    X = gauge.random_invertible(size, seed=3)
    np.testing.assert_array_equal(X, gauge.random_invertible(size, seed=3))
    s = np.linalg.svd(X, compute_uv=False)
    assert s.max() == pytest.approx(2.0) and s.min() == pytest.approx(0.5 if size > 1 else 2.0)
    if size > 1:
        assert not np.allclose(X, gauge.random_invertible(size, seed=4))
        assert np.abs(X.T @ X - np.eye(size)).max() > 0.1
    Q = gauge.random_orthogonal(size, seed=3)
    np.testing.assert_allclose(Q.T @ Q, np.eye(size), atol=1e-12)


@pytest.mark.parametrize("name,net", small_template_networks(), ids=[n for n, _ in small_template_networks()])
def test_apply_gauge_changes_both_tensors_and_keeps_the_layer(name, net):
    tensors = tnviz.random_tensors(net, seed=1)
    dense = tnviz.to_dense(net, tensors)
    for bond in gauge.gauge_bonds(net):
        moved = gauge.apply_gauge(net, tensors, bond, gauge.random_invertible(net.sizes[bond], 2))
        a, b = net.tensors_on(bond)
        assert np.abs(moved[a] - tensors[a]).max() > 1e-3 and np.abs(moved[b] - tensors[b]).max() > 1e-3
        np.testing.assert_allclose(tnviz.to_dense(net, moved), dense, rtol=1e-9, atol=1e-12)


def test_what_is_not_a_bond_is_refused_saying_what_it_is():
    net = tnviz.mpo([2, 2], [2, 2], ranks=2)
    with pytest.raises(tnviz.InvalidNetworkError, match=r"'i1' is an open leg \(it is not one of the bonds \['b1'\]\)"):
        gauge.apply_gauge(net, tnviz.random_tensors(net), "i1", np.eye(2))
    with pytest.raises(tnviz.InvalidNetworkError, match="a gauge matrix needs a positive size; got 0"):
        gauge.random_invertible(0)
