"""Teach logic: the step-through follows tnviz.cost's path for every optimizer, its running FLOPs
add up, replaying the steps with arrays gives the forward pass; the gauge move changes tensors and
keeps the layer (float64), on every bond of every template."""
from __future__ import annotations

import numpy as np
import pytest

import tnviz
from tnviz.cost import forward_path
from tnviz.gallery import GALLERY
from tnviz.network import BATCH_INDEX
from tnviz.teach import (
    apply_gauge,
    contraction_walkthrough,
    gauge_bonds,
    gauge_demo,
    random_invertible,
    stage,
    with_input,
)
from tnviz.testing import small_template_networks

SMALL = small_template_networks()
NETWORKS = SMALL + [
    (name, GALLERY[name].network())
    for name in ("Fig. 2 (iii): tensor product", "Fig. 2 (viii): network of P, Q, R", "Fig. 4 (iv): generic TN layer")
]
OPTIMIZERS = list(tnviz.OPTIMIZERS)


@pytest.mark.parametrize("optimize", OPTIMIZERS)
@pytest.mark.parametrize("name,net", NETWORKS, ids=[n for n, _ in NETWORKS])
def test_steps_match_cost_and_running_flops_add_up(name, net, optimize):
    walk = contraction_walkthrough(net, batch=3, optimize=optimize)
    reference = forward_path(net, 3, optimize)
    assert len(walk.steps) == len(reference.steps) == len(net.tensors)
    running = 0
    for k, (step, ref) in enumerate(zip(walk.steps, reference.steps)):
        assert step.number == k + 1
        assert step.operands == ref.operands and step.result == ref.result
        assert step.result_indices == ref.result_indices and step.summed == ref.summed
        assert step.flops == ref.flops and step.size == ref.size
        sizes = {BATCH_INDEX: 3, **net.sizes}
        assert step.result_shape == tuple(sizes[i] for i in ref.result_indices)
        running += ref.flops
        assert step.running_flops == running
    assert walk.steps[-1].running_flops == walk.total_flops == reference.flops
    assert walk.total_flops == tnviz.cost(net, 3, optimize).flops
    assert walk.dense_flops == tnviz.cost(net, 3, optimize).dense_flops
    # every drawn tensor is merged exactly once into the final result
    final = walk.steps[-1].highlight_tensors
    assert sorted(final) == sorted(walk.display.tensor_names)


@pytest.mark.parametrize("optimize", ["optimal", "greedy", "left-to-right"])
@pytest.mark.parametrize("name,net", NETWORKS[:4] + NETWORKS[-2:], ids=[n for n, _ in NETWORKS[:4] + NETWORKS[-2:]])
def test_replaying_the_steps_with_arrays_gives_the_forward_pass(name, net, optimize):
    walk = contraction_walkthrough(net, batch=2, optimize=optimize)
    tensors = tnviz.random_tensors(net, seed=5)
    x = np.random.default_rng(6).standard_normal((2, net.in_features))
    values = {"x": x.reshape((2, *net.in_dims)), **tensors}
    letters = {i: tnviz.network.get_symbol(k) for k, i in enumerate([BATCH_INDEX, *net.sizes])}
    held = {"x": (walk.input_name,), **{n: (n,) for n in net.tensor_names}}
    for step in walk.steps:
        eq = ",".join("".join(letters[i] for i in ix) for ix in step.operand_indices)
        eq += "->" + "".join(letters[i] for i in step.result_indices)
        result = np.einsum(eq, *[values.pop(op) for op in step.operands])
        assert result.shape == step.result_shape and result.size == step.size
        # the members shown for each operand are the tensors it really holds
        assert tuple(held[op] for op in step.operands) == step.members
        held[step.result] = tuple(m for op in step.operands for m in held.pop(op))
        values[step.result] = result
    (y,) = values.values()
    expected = tnviz.forward(net, x, tensors)
    np.testing.assert_allclose(y.reshape(2, net.out_features), expected, rtol=1e-10, atol=1e-12)


def test_path_choice_changes_the_sequence():
    net = GALLERY["Fig. 4 (i): MPO with 4 tensors"].network()
    sequences = {
        opt: [s.operands for s in contraction_walkthrough(net, 1, opt).steps]
        for opt in ("optimal", "greedy", "left-to-right")
    }
    assert sequences["left-to-right"] == [("x", "A"), ("B", "#1"), ("C", "#2"), ("D", "#3")]
    assert sequences["optimal"] != sequences["left-to-right"]


def test_with_input_draws_x_with_a_batch_leg_and_avoids_name_clashes():
    net = tnviz.mpo([2, 3], [3, 2], ranks=2)
    shown = with_input(net, batch=4)
    # the batch leg is N, not B: "B=4" beside the tensor B read as one thing (issue 17)
    assert shown.tensor("x").indices == ("N", "i1", "i2") and shown.inputs == ("N",)
    assert shown.sizes["N"] == 4 and set(net.inputs) <= set(shown.bonds)
    assert "N" not in net.tensor_names and "B" in net.tensor_names
    assert shown.layout["x"][1] < min(y for n, (_, y) in shown.layout.items() if n != "x")
    clash = tnviz.from_einsum("xN,No->xo", {"x": 2, "N": 3, "o": 2}, inputs="x", names=["x", "y"])
    walk = contraction_walkthrough(clash, 1, "left-to-right")
    assert walk.input_name == "x'" and walk.batch_leg == "N'"
    named = tnviz.from_einsum("ab,bc->ac", 2, inputs="a", names=["N", "M"])  # a tensor named N
    assert with_input(named).inputs == ("N'",)
    assert walk.steps[0].members == (("x'",), ("x",))
    with pytest.raises(tnviz.InvalidNetworkError, match="positive integer; got 0"):
        with_input(net, 0)


@pytest.mark.parametrize("optimize", ["optimal", "left-to-right"])
def test_stages_shrink_to_one_output_tensor(optimize):
    net = GALLERY["Fig. 2 (viii): network of P, Q, R"].network()
    walk = contraction_walkthrough(net, 2, optimize)
    assert stage(walk, 0).network == walk.display
    for done in range(len(walk.steps) + 1):
        st = stage(walk, done)
        assert len(st.network.tensors) == len(walk.display.tensors) - done
        assert st.network.outputs == net.outputs and st.network.inputs == (walk.batch_leg,)
        if done < len(walk.steps):
            assert len(st.next_pair) == 2 and set(st.next_pair) <= set(st.network.tensor_names)
            assert set(st.next_summed) <= set(st.network.sizes)
        else:
            assert st.next_pair == ()
            assert st.network.tensor_names == ("y",)
            assert st.network.tensors[0].indices == (walk.batch_leg, *net.outputs)
    with pytest.raises(tnviz.InvalidNetworkError, match="step count 0..3; got 4"):
        stage(walk, 4)


# ---------------------------------------------------------------------- gauge
BONDS = [(name, net, bond) for name, net in SMALL for bond in gauge_bonds(net)]


def test_every_template_with_bonds_is_covered():
    names = {name for name, _, _ in BONDS}
    assert {"MPO / tensor train", "Tensor ring", "Tucker", "MPO 3 in / 5 out (Fig. 1)"} <= names
    assert "CP" not in names  # a CP layer has only its hyperedge


def test_random_invertible_is_seeded_invertible_and_not_orthogonal():
    X = random_invertible(5, seed=3)
    np.testing.assert_array_equal(X, random_invertible(5, seed=3))
    assert not np.allclose(X, random_invertible(5, seed=4))
    assert np.linalg.cond(X) <= 4.0 + 1e-9
    assert np.abs(X.T @ X - np.eye(5)).max() > 0.1


@pytest.mark.parametrize("name,net,bond", BONDS, ids=[f"{n}:{b}" for n, _, b in BONDS])
def test_gauge_changes_the_tensors_and_keeps_the_dense_matrix(name, net, bond):
    demo = gauge_demo(net, bond, seed=7)
    assert demo.compared.startswith("dense matrix")
    a, b = net.tensors_on(bond)
    assert (demo.left, demo.right) == (a, b)
    assert demo.change_norms[a] > 1e-3 and demo.change_norms[b] > 1e-3
    assert demo.relative_changes[a] > 1e-3 and demo.relative_changes[b] > 1e-3
    for other in set(net.tensor_names) - {a, b}:
        np.testing.assert_array_equal(demo.after[other], demo.before[other])
    assert demo.max_abs_value > 0.1
    assert demo.max_abs_diff < 1e-10
    # the check can fail: half a gauge move (only a -> a X^-1) does change the layer
    X = random_invertible(net.sizes[bond], 7)
    half = dict(apply_gauge(net, demo.before, bond, X))
    half[b] = demo.before[b]
    assert np.abs(tnviz.to_dense(net, half) - tnviz.to_dense(net, demo.before)).max() > 1e-3


def test_gauge_on_a_large_layer_compares_outputs_on_probe_inputs():
    net = tnviz.build_template("MPO / tensor train")  # 4096 x 4096: 16.8 M dense entries
    demo = gauge_demo(net, "b2", seed=1)
    assert demo.compared.startswith("outputs on 16 random inputs")
    assert demo.change_norms["B"] > 1e-3 and demo.max_abs_diff < 1e-10 * max(1.0, demo.max_abs_value)


def test_gauge_refuses_what_is_not_a_bond():
    cp = tnviz.build_template("CP", in_dims=[2, 2], out_dims=[2], ranks=2)
    with pytest.raises(tnviz.InvalidNetworkError, match="exactly two tensors; 'r' is a hyperedge shared by 3"):
        gauge_demo(cp, "r")
    net = tnviz.mpo([2, 2], [2, 2], ranks=2)
    with pytest.raises(tnviz.InvalidNetworkError, match="'i1' is an open leg"):
        gauge_demo(net, "i1")
    with pytest.raises(tnviz.InvalidNetworkError, match="one of \\['b1'\\]\\); 'zz' is not an index"):
        gauge_demo(net, "zz")
    with pytest.raises(tnviz.InvalidNetworkError, match="must be 2x2 for bond 'b1'"):
        apply_gauge(net, tnviz.random_tensors(net), "b1", np.eye(3))
