"""Stack views: every view of every template multiplies to the dense matrix; the gauge move."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import tnviz
from tnviz.builders import TEMPLATES, build_template
from tnviz.errors import InvalidNetworkError
from tnviz.stack import VIEWS, build_view, gauge_move, stack_report, stack_views

# small versions of every template, so that every column of the identity is checked
SMALL = {
    "MPO / tensor train": {"in_dims": [2, 3, 2, 2], "out_dims": [2, 2, 3, 2], "ranks": 3},
    "Tensor ring": {"in_dims": [2, 3, 2], "out_dims": [3, 2, 2], "ranks": 2},
    "Tucker": {"in_dims": [3, 4], "out_dims": [4, 2], "ranks": 2},
    "CP": {"in_dims": [3, 4], "out_dims": [4, 2], "ranks": 3},
    "MPO 3 in / 5 out (Fig. 1)": {},
    "Tucker conv kernel (Fig. 3 iv)": {"in_dims": [3, 3, 3], "out_dims": [4], "ranks": [2, 2, 2, 2]},
    "CP conv kernel (Fig. 3 v)": {"in_dims": [3, 3, 3], "out_dims": [4], "ranks": 3},
}


def test_small_cases_cover_every_template():
    assert set(SMALL) == set(TEMPLATES)


@pytest.mark.parametrize("template", list(TEMPLATES))
def test_every_view_of_every_template_multiplies_to_the_dense_matrix(template):
    net = build_template(template, **SMALL[template])
    tensors = tnviz.random_tensors(net, seed=1)
    W = tnviz.to_dense(net, tensors)
    views = stack_views(net, tensors, seed=2)
    names = [v.name for v in views]
    assert {"left-to-right", "right-to-left", "shifted", "contraction order"} <= set(names)
    for view in views:
        assert view.exact_check and view.checked_columns == net.in_features
        assert view.max_abs_diff < 1e-12, (view.name, view.max_abs_diff)
        product = view.product().toarray()  # independent of the self-check
        np.testing.assert_allclose(product, W, rtol=1e-10, atol=1e-12)
        assert view.layers[0].in_size == net.in_features and view.layers[-1].out_size == net.out_features
        for a, b in zip(view.layers, view.layers[1:]):
            assert a.out_wires == b.in_wires and a.out_size == b.in_size
        for layer in view.layers:
            assert layer.matrix.shape == (layer.out_size, layer.in_size)
            assert layer.nnz >= layer.matrix.count_nonzero()
            assert layer.flops == 2 * layer.nnz and 0 < layer.density <= 1


def test_the_default_4096_mpo_checks_itself_on_sampled_columns():
    net = build_template("MPO / tensor train")
    views = stack_views(net, views=["left-to-right", "grouped"], seed=0)
    for view in views:
        assert not view.exact_check and 8 <= view.checked_columns < net.in_features
        assert view.max_abs_diff < 1e-12
    l2r = views[0]
    # paper Fig. 4 ii: four layers, the bonds as hidden widths, each I ⊗ core ⊗ I
    assert [(l.in_size, l.out_size) for l in l2r.layers] == [(4096, 16384), (16384, 16384), (16384, 16384), (16384, 4096)]
    assert all(l.kron for l in l2r.layers)
    # density of I ⊗ core ⊗ I = 1 / (product of the identities' sizes... ) = core / (in*out) * identities
    b = l2r.layers[1]
    assert b.nnz == 8 * 64 * (4 * 8) * (8 * 4)  # I(o1) ⊗ B[(b1 i2),(o2 b2)] ⊗ I(i3 i4)
    assert math.isclose(b.density, (4 * 8 * 8 * 4) / (16384 * 16384) * 8 * 64)


@pytest.mark.parametrize("tensor,entry", [("A", (0, 0, 0)), ("C", (3, 5, 2, 1)), ("D", (1, 7, 4))])
def test_the_sampled_check_finds_a_wrong_core(tensor, entry):
    """The 64 seeded columns of the default MPO's check (CHECK_ELEMENTS) see one wrong entry of
    any core: the stack is built from tensors with that entry off by 0.5, the reference from the
    right ones."""
    from dataclasses import replace

    from tnviz.stack import _checked, build_view

    net = build_template("MPO / tensor train")
    right = tnviz.random_tensors(net, seed=0)
    wrong = {n: np.array(a, dtype=np.float64, copy=True) for n, a in right.items()}
    wrong[tensor][entry] += 0.5
    view = build_view(net, wrong, [(n,) for n in net.tensor_names], name="left-to-right", check=False)
    good = _checked(net, replace(view, tensors={n: np.asarray(a, np.float64) for n, a in wrong.items()}), 0)
    bad = _checked(net, replace(view, tensors={n: np.asarray(a, np.float64) for n, a in right.items()}), 0)
    assert not bad.exact_check and bad.checked_columns == 64
    assert good.max_abs_diff < 1e-12 and bad.max_abs_diff > 1e-3


def test_mpo_views_hand_counted():
    net = tnviz.mpo([2, 3], [3, 2], ranks=2)
    (l2r,) = stack_views(net, views=["left-to-right"])
    a, b = l2r.layers
    assert (a.consumed, a.produced) == (("i1",), ("o1", "b1"))
    assert (a.in_wires, a.out_wires) == (("i1", "i2"), ("o1", "b1", "i2"))
    assert (a.in_size, a.out_size, a.nnz) == (6, 18, 3 * (2 * 3 * 2))
    assert (b.consumed, b.produced) == (("b1", "i2"), ("o2",))
    (shifted,) = stack_views(net, views=["shifted"])
    first = shifted.layers[0]
    assert first.tensors == ("B",) and first.produced == ("b1", "o2")  # b1 is now an output of B


def test_gauge_move_changes_the_tensors_not_the_matrix():
    net = build_template("MPO / tensor train", **SMALL["MPO / tensor train"])
    tensors = tnviz.random_tensors(net, seed=0)
    moved = gauge_move(net, tensors, "b2", seed=3)
    a, b = net.tensors_on("b2")
    assert np.max(np.abs(moved[a] - tensors[a])) > 1e-2
    assert np.max(np.abs(moved[b] - tensors[b])) > 1e-2
    for other in set(net.tensor_names) - {a, b}:
        np.testing.assert_array_equal(moved[other], tensors[other])
    np.testing.assert_allclose(tnviz.to_dense(net, moved), tnviz.to_dense(net, tensors), rtol=1e-10, atol=1e-12)
    (view,) = stack_views(net, tensors, views=["gauge"], seed=3)
    assert view.extra["tensors_changed_by"] > 1e-2 and view.max_abs_diff < 1e-12
    assert view.extra["X_condition"] < 10
    # a non-invertible X is not a gauge: the check would catch a broken move
    with pytest.raises(np.linalg.LinAlgError):
        gauge_move(net, tensors, "b2", X=np.zeros((3, 3)))
    with pytest.raises(InvalidNetworkError, match="is not one"):
        gauge_move(net, tensors, "i1")


def test_a_wrong_tensor_is_caught_by_the_self_check():
    net = tnviz.mpo([2, 2], [2, 2], ranks=2)
    tensors = tnviz.random_tensors(net, seed=0)
    view = build_view(net, tensors, [("A",), ("B",)], name="ok")
    assert view.max_abs_diff < 1e-12
    # layers from other tensors, checked against this network's tensors: must not pass
    other = build_view(net, tnviz.random_tensors(net, seed=1), [("A",), ("B",)], name="other", check=False)
    state = np.eye(4)
    for layer in other.layers:
        state = layer.matrix @ state
    assert np.max(np.abs(state - tnviz.to_dense(net, tensors))) > 1e-3


def test_generic_network_gets_its_stack_from_the_contraction_order():
    net = tnviz.from_einsum("xab,ayc,bczd,dw->xyzw", {"x": 3, "y": 2, "z": 5, "w": 3, "a": 2, "b": 3, "c": 2, "d": 4},
                            inputs="xz")
    views = {v.name: v for v in stack_views(net, seed=0)}
    order = views["contraction order"]
    applied = [n for layer in order.layers for n in layer.tensors]
    assert sorted(applied) == sorted(net.tensor_names)
    assert order.max_abs_diff < 1e-12
    # wires that need reordering show up as explicit permutation layers, still exact
    swapped = tnviz.TensorNetwork.build(net.tensors, net.sizes, ("z", "x"), ("w", "y"))
    for view in stack_views(swapped, views=["left-to-right"]):
        assert view.layers[0].name == "P" and view.layers[-1].name == "P"
        assert view.max_abs_diff < 1e-12


def test_report_is_json_without_matrices():
    net = build_template("Tensor ring", **SMALL["Tensor ring"])
    report = stack_report(net, seed=0)
    text = json.dumps(report)
    assert "matrix" not in text
    assert [v["name"] for v in report["views"]] == [v for v in VIEWS if v in {x["name"] for x in report["views"]}]
    layer = report["views"][0]["layers"][0]
    for key in ("in_size", "out_size", "density", "flops", "dense_flops", "nnz", "kron"):
        assert key in layer
    assert all(v["max_abs_diff"] < 1e-12 for v in report["views"])


def test_unknown_view_is_refused():
    with pytest.raises(InvalidNetworkError, match="choose one of"):
        stack_views(tnviz.mpo([2, 2], [2, 2], ranks=2), views=["sideways"])


def test_pattern_is_a_downsampled_density():
    net = tnviz.mpo([4, 4], [4, 4], ranks=2)
    layer = stack_views(net, views=["left-to-right"])[0].layers[0]
    pic = layer.pattern(max_side=8)
    assert pic.shape == (8, 8)
    assert math.isclose(pic.mean(), layer.density, rel_tol=1e-9)


# ---------------------------------------------------------------------- refused before allocating (issue 15 item 5)
def test_random_tensors_refuse_from_the_shapes_before_allocating():
    huge = tnviz.mpo([2, 2], [2, 2], ranks=10**9)  # 8e9 parameters: 64 GB in float64
    with pytest.raises(tnviz.BudgetError, match=r"random tensors are limited to 268,435,456 elements in all; .* has 8,000,000,000 parameters"):
        tnviz.random_tensors(huge)
    assert tnviz.random_tensors(tnviz.mpo([2, 2], [2, 2], ranks=3), budget=None)["A"].shape == (2, 2, 3)


def test_stack_views_plan_every_layer_from_shapes_and_refuse_first():
    from tnviz.stack import MAX_LAYER_NNZ, check_plan, plan_view

    net = tnviz.mpo([4, 4, 4], [4, 4, 4], ranks=3)
    plans = plan_view(net, [(n,) for n in net.tensor_names])
    (view,) = stack_views(net, views=["left-to-right"])
    assert [(p.in_size, p.out_size) for p in plans] == [(l.in_size, l.out_size) for l in view.layers]
    assert all(p.nnz >= l.nnz for p, l in zip(plans, view.layers))  # an upper bound, exact here
    assert [p.nnz for p in plans] == [l.nnz for l in view.layers]
    dense_core = tnviz.mpo([16, 16, 16], [16, 16, 16], ranks=64)  # 1 M parameters; B's layer: 268 M non-zeros
    plans = plan_view(dense_core, [(n,) for n in dense_core.tensor_names])
    assert max(p.nnz for p in plans) > MAX_LAYER_NNZ >= dense_core.params
    with pytest.raises(tnviz.BudgetError, match=f"limited to {MAX_LAYER_NNZ:,} non-zeros; layer 'B'"):
        check_plan(dense_core, plans[:2])
    with pytest.raises(tnviz.BudgetError, match="non-zeros"):
        stack_views(dense_core, views=["left-to-right"])
    for bad in (tnviz.mpo([2] * 20, [2] * 20, ranks=1), tnviz.mpo([2, 2], [2, 2], ranks=10**7)):
        with pytest.raises(tnviz.BudgetError):
            stack_views(bad)
