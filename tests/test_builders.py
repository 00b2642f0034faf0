"""Builders and contraction: every template's dense matrix against a direct np.einsum."""
from __future__ import annotations

import re

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tnviz
from tnviz import InvalidNetworkError, from_einsum, mpo, tensor_ring, to_dense
from tnviz.testing import small_template_networks


def _reference_dense(net, tensors):
    """W[outputs, inputs] by one np.einsum with the index names spelled out independently."""
    letters = {name: chr(ord("a") + k) if k < 26 else chr(ord("A") + k - 26) for k, name in enumerate(net.sizes)}
    operands = []
    for t in net.tensors:
        operands += [tensors[t.name], [letters[i] for i in t.indices]]
    out = [letters[i] for i in (*net.outputs, *net.inputs)]
    # np.einsum's sublist format takes integers
    conv = {ch: k for k, ch in enumerate(letters.values())}
    ops = [o if isinstance(o, np.ndarray) else [conv[c] for c in o] for o in operands]
    full = np.einsum(*ops, [conv[c] for c in out], optimize=False)
    return full.reshape(net.out_features, net.in_features)


@pytest.mark.parametrize("name,net", small_template_networks(), ids=[n for n, _ in small_template_networks()])
def test_to_dense_of_every_template_matches_einsum(name, net):
    tensors = tnviz.random_tensors(net, seed=3)
    W = to_dense(net, tensors)
    ref = _reference_dense(net, tensors)
    assert W.shape == (net.out_features, net.in_features)
    assert np.abs(ref).max() > 0.1  # not a trivially zero matrix
    np.testing.assert_allclose(W, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,net", small_template_networks(), ids=[n for n, _ in small_template_networks()])
def test_forward_equals_x_times_dense_transpose(name, net):
    tensors = tnviz.random_tensors(net, seed=4)
    x = np.random.default_rng(0).standard_normal((5, net.in_features))
    np.testing.assert_allclose(tnviz.forward(net, x, tensors), x @ to_dense(net, tensors).T, rtol=1e-10, atol=1e-12)


def test_to_dense_works_on_torch_tensors():
    torch = pytest.importorskip("torch")
    net = mpo([2, 3], [3, 2], 2)
    t_np = tnviz.random_tensors(net, seed=1)
    t_torch = {k: torch.from_numpy(v) for k, v in t_np.items()}
    W = to_dense(net, t_torch)
    assert isinstance(W, torch.Tensor)
    np.testing.assert_allclose(W.numpy(), to_dense(net, t_np))


def test_random_tensors_are_seeded_and_unit_scaled():
    net = mpo([8, 8, 8], [8, 8, 8], 6)
    a, b = tnviz.random_tensors(net, seed=7), tnviz.random_tensors(net, seed=7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    c = tnviz.random_tensors(net, seed=8)
    assert not np.array_equal(a["A"], c["A"])
    assert 0.8 < to_dense(net, a).std() < 1.25


def test_shape_mismatch_is_reported():
    net = mpo([2, 3], [3, 2], 2)
    tensors = tnviz.random_tensors(net)
    tensors["A"] = tensors["A"][:, :1]
    with pytest.raises(InvalidNetworkError, match="tensor 'A' has shape"):
        to_dense(net, tensors)


def test_mpo_with_unequal_leg_counts_fig1():
    net = mpo([4, 4, 4], [2, 2, 2, 2, 4], ranks=3)
    assert len(net.tensors) == 5
    only_out = [t for t in net.tensors if not any(i.startswith("i") for i in t.indices)]
    assert len(only_out) == 2  # two cores carry only output legs
    assert (net.in_features, net.out_features) == (64, 64)
    tensors = tnviz.random_tensors(net, seed=0)
    np.testing.assert_allclose(to_dense(net, tensors), _reference_dense(net, tensors), atol=1e-12)


def test_mpo_leg_placement_can_be_chosen():
    net = mpo([4, 4], [2, 2, 2, 2], 2, in_cores=[0, 1])
    assert net.tensors[0].indices == ("i1", "o1", "b1")
    assert net.tensors[1].indices == ("b1", "i2", "o2", "b2")
    with pytest.raises(InvalidNetworkError, match="in order"):
        mpo([4, 4], [2, 2, 2, 2], 2, in_cores=[3, 1])


def test_tensor_ring_closes_the_ring():
    net = tensor_ring([2, 2, 2], [2, 2, 2], [2, 3, 4])
    assert set(net.bonds) == {"b1", "b2", "b3"}
    assert net.tensors[0].indices[0] == "b3" and net.tensors[-1].indices[-1] == "b3"


def test_tucker_and_cp_shapes():
    t = tnviz.tucker([3, 4], [5], [2, 2, 2])
    assert t.shape("G") == (2, 2, 2) and t.shape("U1") == (5, 2)
    c = tnviz.conv_cp(8, 4, 3, rank=5)
    assert c.hyperedges == ("r",) and c.inputs == ("cin", "kh", "kw") and c.outputs == ("cout",)
    k = tnviz.conv_tucker(8, 4, (3, 5), ranks=[2, 2, 3, 3])
    assert k.in_dims == (4, 3, 5)


@pytest.mark.parametrize("call,message", [
    (lambda: mpo([2, 0], [2], 2), "positive integers"),
    (lambda: mpo([2, 2], [2, 2], [2, 2]), "needs 1 values"),
    (lambda: mpo([2, 2], [2, 2], 0), "positive integers"),
    (lambda: mpo([], [], 2), "at least one"),
    (lambda: tensor_ring([2], [2], 2), "at least 2 cores"),
    (lambda: tnviz.tucker([2, 2], [2], [2, 2]), "needs 3 values"),
    (lambda: tnviz.cp([2], [], 2), "at least 2 legs"),
    (lambda: tnviz.build_template("nope"), "unknown template 'nope'"),
    (lambda: tnviz.build_template("CP", depth=3), "takes"),
])
def test_builder_errors(call, message):
    with pytest.raises(InvalidNetworkError, match=message):
        call()


# ---------------------------------------------------------------------- einsum strings
def test_from_einsum_generic_and_hyperedge():
    net = from_einsum("ia,ajb,bk->ijk", {"i": 4, "j": 4, "k": 4, "a": 2, "b": 2}, inputs="i")
    assert net.outputs == ("j", "k") and net.bonds == ("a", "b")
    cp_like = from_einsum("ir,jr,kr->ijk", 3, inputs="ij")
    assert cp_like.hyperedges == ("r",)
    tensors = tnviz.random_tensors(cp_like, seed=1)
    np.testing.assert_allclose(to_dense(cp_like, tensors), _reference_dense(cp_like, tensors), atol=1e-12)


@pytest.mark.parametrize("eq,sizes,inputs,message", [
    ("ia,ab", 2, "", "one '->'"),
    ("ia,a1->i", 2, "", "only hold letters"),
    ("ia,,ab->ib", 2, "", "empty term"),
    ("ia,ab->iz", 2, "", "'z' does not"),
    ("ia,ab->iab", 2, "", "must belong to one term; 'a'"),
    ("ia,ab->i", 2, "", "must be listed after '->'; 'b'"),
    ("ia,ab->ib", {"i": 2}, "", "'a' has none"),
    ("ia,ab->ib", 2, "q", "'q' is not"),
    ("iia,ab->ib", 2, "i", "listed twice"),
    ("ia,ab->ib", {"i": 2, "a": 0, "b": 2}, "i", "has size 0"),
])
def test_from_einsum_errors(eq, sizes, inputs, message):
    with pytest.raises(InvalidNetworkError) as info:
        from_einsum(eq, sizes, inputs=inputs)
    assert message in str(info.value)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="abcij,->.1 \n\t", max_size=14), st.text(alphabet="abij", max_size=3))
def test_fuzz_einsum_parser_raises_only_our_error(eq, inputs):
    try:
        net = from_einsum(eq, 2, inputs=list(dict.fromkeys(inputs)))
    except InvalidNetworkError:
        return
    assert net.in_features == 2 ** len(net.inputs)
    assert all(i.isalpha() for i in net.sizes)  # no whitespace became an index


_ANY = st.none() | st.booleans() | st.integers(-3, 3) | st.text(alphabet="ijk\n", max_size=3)


@settings(max_examples=300, deadline=None)
@given(_ANY | st.lists(_ANY, max_size=3), st.none() | _ANY | st.lists(_ANY, max_size=3),
       st.integers(-2, 3) | st.dictionaries(st.text(alphabet="ijk", max_size=2), _ANY, max_size=3))
def test_fuzz_einsum_arguments_of_any_type_raise_only_our_error(inputs, outputs, sizes):
    try:
        from_einsum("ij,jk->ik", sizes, inputs=inputs, outputs=outputs)
    except InvalidNetworkError:
        pass


@pytest.mark.parametrize("kwargs,message", [
    ({"inputs": 5}, "inputs are einsum letters, a string like 'ij'"),
    ({"inputs": "i", "outputs": [1]}, "outputs are einsum letters, one character each; got 1"),
    ({"inputs": [["i"]]}, "one character each; got ['i']"),
])
def test_einsum_inputs_and_outputs_must_be_letters(kwargs, message):
    with pytest.raises(InvalidNetworkError, match=re.escape(message)):
        from_einsum("ij,jk->ik", 2, **kwargs)


@pytest.mark.parametrize("equation", ["ij,jk->ik\n", "ij,jk\n->ik", "ij,\njk->ik"])
def test_a_newline_is_not_an_einsum_index(equation):
    with pytest.raises(InvalidNetworkError, match="may only hold letters"):
        from_einsum(equation, 2, inputs="i")


# ---------------------------------------------------------------------- factorization
def test_balanced_factors_and_proposals():
    from tnviz.factorize import balanced_factors, propose_legs, prime_factors

    assert balanced_factors(4096, 4) == (8, 8, 8, 8)
    assert math.prod(balanced_factors(384, 3)) == 384
    assert balanced_factors(7, 2) == (7, 1)
    assert prime_factors(360) == [2, 2, 2, 3, 3, 5]
    for a, b in propose_legs(784, 10):
        assert math.prod(a) == 784 and math.prod(b) == 10
    assert tnviz.auto_legs(4096, 4096) == ((8, 8, 8, 8), (8, 8, 8, 8))
    with pytest.raises(InvalidNetworkError, match="positive integer"):
        prime_factors(0)


# ---------------------------------------------------------------------- layering
def test_core_imports_without_streamlit_plotly_graphviz_or_torch():
    code = (
        "import sys, tnviz, tnviz.cost, tnviz.network, tnviz.builders, tnviz.contract, tnviz.factorize\n"
        "bad = [m for m in ('streamlit', 'plotly', 'graphviz', 'torch') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the core imported {out.stdout.strip()}"


def test_nothing_under_tnviz_imports_streamlit():
    import pathlib

    root = pathlib.Path(tnviz.__file__).parent
    offenders = [str(p) for p in root.rglob("*.py") if "import streamlit" in p.read_text() or "from streamlit" in p.read_text()]
    assert offenders == []
