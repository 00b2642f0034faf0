"""The Gallery: every paper figure builds, validates, round-trips, costs and draws; the notation
items equal what the paper says they are (checked numerically against numpy)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import tnviz
from tnviz.gallery import GALLERY, GalleryEntry, fig1_mlp, fig1_reshaped_b, generic_layer
from tnviz.render import build_scene, network_shape, to_dot, to_svg

ENTRIES = [(name, k, net) for name, entry in GALLERY.items() for k, net in enumerate(entry.networks())]
IDS = [f"{name}#{k}" for name, k, _ in ENTRIES]


def test_registry_covers_the_four_figures_and_every_notation_item():
    assert all(isinstance(e, GalleryEntry) for e in GALLERY.values())
    figures = {e.figure.split(" (")[0] for e in GALLERY.values()}
    assert figures == {"Fig. 1", "Fig. 2", "Fig. 3", "Fig. 4"}
    fig2 = {e.figure for e in GALLERY.values() if e.figure.startswith("Fig. 2")}
    assert fig2 == {f"Fig. 2 ({r})" for r in ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii")}
    for name, entry in GALLERY.items():
        assert name.startswith(entry.figure), name
        assert len(entry.caption) > 60 and entry.title


@pytest.mark.parametrize("name,k,net", ENTRIES, ids=IDS)
def test_every_entry_builds_validates_costs_and_draws(name, k, net):
    assert isinstance(net, tnviz.TensorNetwork)
    assert tnviz.load_network(net.to_json()) == net  # re-validated from its JSON
    assert net.inputs and net.outputs
    c = tnviz.cost(net, batch=2)
    assert c.params == net.params and c.dense_params == net.dense_params and c.flops > 0
    scene = build_scene(net)
    assert {n.label for n in scene.tensor_nodes} == set(net.tensor_names)
    dot = to_dot(net)
    for t in net.tensor_names:
        assert f'"t:{t}"' in dot
    for index in (*net.inputs, *net.outputs):
        assert f"{index}={net.sizes[index]}" in dot


@pytest.mark.skipif(shutil.which("neato") is None, reason="Graphviz neato not installed")
@pytest.mark.parametrize("name", list(GALLERY))
def test_every_entry_renders_to_svg(name):
    for net in GALLERY[name].networks():
        svg = to_svg(net)
        assert svg.lstrip().startswith("<?xml") or "<svg" in svg[:400]
        assert all(f">{t}<" in svg for t in net.tensor_names)


def test_fig1_reshaped_b_has_3_input_and_5_output_legs():
    net = fig1_reshaped_b()
    assert len(net.tensors) == 1 and len(net.tensor("B").indices) == 8
    assert net.inputs == ("m1", "m2", "m3") and net.outputs == ("n1", "n2", "n3", "n4", "n5")
    assert net.params == net.dense_params  # reshaping alone compresses nothing


def test_fig1_mlp_layers_are_mpo_generic_ring_and_chain_their_features():
    a, b, c = fig1_mlp()
    assert GALLERY["Fig. 1 (i, iii): MLP with three TN layers"].is_stack
    # A: a chain of cores (3 tensors, 2 bonds; a 3-chain is also a star to network_shape); B: a grid; C: a ring
    assert a.tensor_names == ("A", "B", "C") and a.bonds == ("b1", "b2") and a.tensors_on("b2") == ("B", "C")
    assert (network_shape(b), network_shape(c)) == ("general", "ring")
    assert a.out_features == b.in_features and b.out_features == c.in_features
    # layer B is the reshaped m x n matrix B of Fig. 1 (ii): 3 input legs, 5 output legs
    reshaped = fig1_reshaped_b()
    assert (len(b.inputs), len(b.outputs)) == (3, 5)
    assert b.in_dims == reshaped.in_dims and b.out_dims == reshaped.out_dims
    assert all(n.compression > 10 for n in (a, b, c))
    # the MLP runs: x -> A -> relu -> B -> tanh -> C, shapes as in the figure
    x = np.random.default_rng(0).standard_normal((3, a.in_features))
    h = np.maximum(tnviz.forward(a, x, tnviz.random_tensors(a, 1)), 0)
    h = np.tanh(tnviz.forward(b, h, tnviz.random_tensors(b, 2)))
    y = tnviz.forward(c, h, tnviz.random_tensors(c, 3))
    assert y.shape == (3, c.out_features) == (3, 10)


def _dense(entry_name, seed=0):
    net = GALLERY[entry_name].network()
    tensors = tnviz.random_tensors(net, seed)
    return net, tensors, tnviz.to_dense(net, tensors)


def test_fig2_matrix_is_input_j_output_i():
    net, t, W = _dense("Fig. 2 (i): matrix")
    assert net.inputs == ("j",) and net.outputs == ("i",)
    np.testing.assert_allclose(W, t["m"], rtol=0, atol=1e-14)


def test_fig2_tensor_product_is_the_kronecker_product():
    net, t, W = _dense("Fig. 2 (iii): tensor product")
    assert not net.bonds and len(net.tensors) == 2
    np.testing.assert_allclose(W, np.kron(t["a"], t["b"]), rtol=1e-12, atol=1e-14)


def test_fig2_matrix_product_sums_the_red_index():
    net, t, W = _dense("Fig. 2 (iv): matrix product")
    assert net.bonds == ("k",)
    (edge,) = build_scene(net).edges_of("k")
    assert edge.color == tnviz.render.PALETTE["bond"]
    np.testing.assert_allclose(W, t["a"] @ t["b"], rtol=1e-12, atol=1e-14)


def test_fig2_delta_is_a_hyperedge_and_equals_delta_ijk_with_identity_wires():
    net = GALLERY["Fig. 2 (vi): delta (hyperedge)"].network()
    assert net.hyperedges == ("r",) and len(net.tensors_on("r")) == 3
    eye = np.eye(3)
    full = tnviz.to_tensor(net, {"Ui": eye, "Uj": eye, "Uk": eye})
    delta = np.zeros((3, 3, 3))
    for k in range(3):
        delta[k, k, k] = 1.0
    np.testing.assert_array_equal(full, delta)


def test_fig2_network_pqr_matches_einsum_and_other_notation_items():
    net, t, W = _dense("Fig. 2 (viii): network of P, Q, R")
    assert set(net.bonds) == {"a", "b", "c"} and network_shape(net) == "ring"
    ref = np.einsum("iac,ajb,bck->ijk", t["P"], t["Q"], t["R"]).reshape(4, 16)
    np.testing.assert_allclose(W, ref, rtol=1e-12, atol=1e-14)
    assert GALLERY["Fig. 2 (v): 3-index tensor"].network().tensor("n").indices == ("i", "j", "k")
    assert len(GALLERY["Fig. 2 (vii): n-index tensor"].network().tensor("T").indices) == 6
    ident = GALLERY["Fig. 2 (ii): identity"].network()
    assert ident.in_features == ident.out_features


def test_fig3_mpo_with_bond_1_is_a_kronecker_product_of_small_matrices():
    net, t, W = _dense("Fig. 3 (iii): MPO with all bonds 1")
    assert set(net.sizes[b] for b in net.bonds) == {1}
    assert all(e.style == "dashed" for e in build_scene(net).edges if e.kind == "bond")
    # core A[i1, o1, b1] etc.: W[(o1 o2 o3), (i1 i2 i3)] = A[o1, i1] B[o2, i2] C[o3, i3]
    mats = [t[name].reshape(4, 4).T for name in ("A", "B", "C")]
    np.testing.assert_allclose(W, np.kron(np.kron(mats[0], mats[1]), mats[2]), rtol=1e-12, atol=1e-14)


def test_fig3_conv_kernels_and_fig4_layers():
    tucker = GALLERY["Fig. 3 (iv): Tucker conv kernel"].network()
    cp = GALLERY["Fig. 3 (v): CP conv kernel"].network()
    for net in (tucker, cp):
        assert net.inputs == ("cin", "kh", "kw") and net.outputs == ("cout",)
        assert net.in_dims == (64, 3, 3) and net.out_dims == (128,)
    assert "G" in tucker.tensor_names and not tucker.hyperedges
    assert cp.hyperedges == ("r",) and "G" not in cp.tensor_names
    svd = GALLERY["Fig. 3 (i-ii): MPO from SVDs"].network()
    assert network_shape(svd) == "chain" and set(svd.sizes[b] for b in svd.bonds) == {8}
    # the caption's "exact would need bonds 16, 256, 16" is the max useful rank of each bond
    full = tnviz.mpo(svd.in_dims, svd.out_dims, ranks=256)
    assert tnviz.max_useful_ranks(full) == {"b1": 16, "b2": 256, "b3": 16}
    assert "16, 256, 16" in GALLERY["Fig. 3 (i-ii): MPO from SVDs"].caption
    mpo4 = GALLERY["Fig. 4 (i): MPO with 4 tensors"].network()
    assert mpo4.tensor_names == ("A", "B", "C", "D") and network_shape(mpo4) == "chain"
    generic = GALLERY["Fig. 4 (iv): generic TN layer"].network()
    assert network_shape(generic) == "general" and len(generic.tensors) == 6


def test_generic_layer_matches_einsum_and_rejects_bad_input():
    net = generic_layer([2, 3], [3, 2], rank=2, columns=2)
    tensors = tnviz.random_tensors(net, 4)
    sym = net.symbols
    eq = ",".join("".join(sym[i] for i in t.indices) for t in net.tensors) + "->" + "".join(
        sym[i] for i in (*net.outputs, *net.inputs))
    ref = np.einsum(eq, *[tensors[n] for n in net.tensor_names]).reshape(6, 6)
    np.testing.assert_allclose(tnviz.to_dense(net, tensors), ref, rtol=1e-12, atol=1e-14)
    with pytest.raises(tnviz.InvalidNetworkError, match="at least 2 columns; got 1"):
        generic_layer([2], [2], rank=2, columns=1)
    with pytest.raises(tnviz.InvalidNetworkError, match="needs input and output legs"):
        generic_layer([], [2], rank=2)
