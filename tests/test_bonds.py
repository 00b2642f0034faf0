"""Bond features: cuts reproduce the layer, hooks leave outputs bit-identical, statistics against
direct formulas, and which statistics survive a gauge move (invariant ones equal, others change)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import tnviz
from tnviz.bonds import (
    GAUGE_BEHAVIOUR, REDUCTIONS, bond_cut, bond_map, bond_state, bond_stats, compare_stats, finish_from_state,
    random_orthogonal, reduce_state, top_inputs,
)
from tnviz.model.bonds import BondCapture, capture_bonds, gauge_layer
from tnviz.errors import InvalidNetworkError, TnvizError
from tnviz.nn import TNLinear
from tnviz.teach import random_invertible
from tnviz.testing import small_template_networks

CASES = [(name, net, bond) for name, net in small_template_networks() for bond in net.bonds]


@pytest.mark.parametrize("name,net,bond", CASES, ids=[f"{n}-{b}" for n, _, b in CASES])
def test_state_then_rest_reproduces_the_layer(name, net, bond):
    """x·left -> state; state·right -> y equals the dense layer (float64) for every bond of every template."""
    cut = bond_cut(net, bond)
    assert set(cut.left) | set(cut.right) == set(net.tensor_names) and not set(cut.left) & set(cut.right)
    t = tnviz.random_tensors(net, seed=1, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((5, net.in_features))
    state = bond_state(cut, x, t)
    assert state.shape == cut.state_shape(5)
    y = finish_from_state(cut, state, t)
    reference = x @ tnviz.to_dense(net, t).T
    assert np.max(np.abs(y - reference)) < 1e-10 * max(1.0, np.max(np.abs(reference)))


def test_mpo_cut_is_the_left_to_right_sweep():
    net = tnviz.mpo([2, 3, 2], [3, 2, 2], ranks=[3, 4])
    cut = bond_cut(net, "b2")
    assert cut.left == ("A", "B") and cut.right == ("C",)
    assert cut.state_indices == ("o1", "o2", "i3", "b2")
    # Tucker: an input factor's bond sees x through that factor only
    tk = tnviz.tucker([3, 4], [2, 5], ranks=[2, 3, 2, 3])
    factor = next(t.name for t in tk.tensors if "i1" in t.indices)
    rank = next(i for i in tk.tensor(factor).indices if i != "i1")
    assert bond_cut(tk, rank).left == (factor,)
    # an output factor's bond: everything else reads x first
    out_factor = next(t.name for t in tk.tensors if "o1" in t.indices)
    assert out_factor in bond_cut(tk, next(i for i in tk.tensor(out_factor).indices if i != "o1")).right


def test_reductions_against_numpy():
    net = tnviz.mpo([2, 3, 2], [3, 2, 2], ranks=[3, 4])
    cut = bond_cut(net, "b1")
    t = tnviz.random_tensors(net, seed=0, dtype=np.float64)
    state = bond_state(cut, np.random.default_rng(0).standard_normal((4, 12)), t)  # (4, o1, i2, i3, b1)
    assert np.allclose(reduce_state(cut, state, "sum"), state.sum((1, 2, 3)))
    assert np.allclose(reduce_state(cut, state, "norm"), np.sqrt((state ** 2).sum((1, 2, 3))))
    assert np.array_equal(reduce_state(cut, state, "index", {"o1": 2, "i3": 1}), state[:, 2, 0, 1, :])
    with pytest.raises(TnvizError, match="one of"):
        reduce_state(cut, state, "mean")
    with pytest.raises(TnvizError, match="other legs"):
        reduce_state(cut, state, "index", {"o1": 3})
    assert set(REDUCTIONS) == {"sum", "index", "norm"}


def test_bad_bonds_and_sides_are_refused():
    net = tnviz.mpo([4, 4], [4, 4], ranks=3)
    with pytest.raises(InvalidNetworkError, match="exactly two tensors"):
        bond_cut(net, "i1")
    with pytest.raises(InvalidNetworkError, match="exactly one of the two tensors"):
        bond_cut(net, "b1", left=["A", "B"])
    with pytest.raises(InvalidNetworkError, match="tensors of the network"):
        bond_cut(net, "b1", left=["Z"])
    with pytest.raises(TnvizError, match="TNLinear"):
        BondCapture(torch.nn.Linear(3, 3))


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        TNLinear(tnviz.mpo([4, 4], [2, 4, 4], ranks=[3, 5]), dtype=dtype), torch.nn.ReLU(),
        TNLinear(tnviz.tensor_ring([4, 8], [2, 5], ranks=[3, 2]), dtype=dtype),
    ).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hooks_leave_outputs_bit_identical(dtype):
    model = _model(dtype)
    x = torch.randn(33, 16, dtype=dtype, generator=torch.Generator().manual_seed(3))
    plain = model(x)
    with BondCapture(model, reduce="norm", keep_states=True) as cap:
        hooked = model(x)
    after = model(x)
    assert torch.equal(plain, hooked) and torch.equal(plain, after)
    assert set(cap.cuts) == {("0", "b1"), ("0", "b2"), ("2", "b1"), ("2", "b2")}
    assert cap.activations("0", "b2").shape == (33, 5)
    assert not model[0]._forward_hooks  # removed on exit


def test_captured_states_contracted_with_the_rest_give_the_layer_output():
    model = _model()
    x = torch.randn(20, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with BondCapture(model, keep_states=True) as cap:
        model(x)
    hidden = torch.relu(model[0](x))
    for (name, bond), cut in cap.cuts.items():
        layer = model[int(name)]
        (state,) = cap.states(name, bond)
        y = finish_from_state(cut, state, layer.named_network_tensors()) + layer.bias
        expected = layer(x if name == "0" else hidden)
        assert torch.allclose(y, expected, atol=1e-12, rtol=0), (name, bond)
        # and the recorded activation is the state summed over its other legs
        assert np.allclose(cap.activations(name, bond), state.sum(tuple(range(1, state.ndim - 1))).numpy())


def test_capture_bonds_runs_batches_and_selects_bonds():
    model = _model()
    batches = [torch.randn(8, 16, dtype=torch.float64), torch.randn(5, 16, dtype=torch.float64)]
    out = capture_bonds(model, batches, bonds={"2": ["b2"]}, reduce="index", at={"o1": 1})
    assert list(out) == [("2", "b2")] and out[("2", "b2")].shape == (13, 2)
    with pytest.raises(TnvizError, match="TN layers of the model"):
        capture_bonds(model, batches, bonds={"1": ["b1"]})


# ---------------------------------------------------------------------- statistics
def test_bond_stats_against_direct_formulas():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 40)
    acts = rng.standard_normal((120, 4)) + np.eye(3, 4)[labels] * 3.0
    s = bond_stats(acts, labels)
    for c in range(3):
        assert np.allclose(s.class_means[c], acts[labels == c].mean(0))
        rest = acts[labels != c].mean(0)
        assert np.allclose(s.selectivity[c], (acts[labels == c].mean(0) - rest) / acts.std(0, ddof=1))
    assert np.allclose(s.centred_means, s.class_means - acts.mean(0))
    assert np.allclose(s.spectrum, np.sort(np.linalg.eigvalsh(np.cov(acts.T)))[::-1])
    assert s.rank == 4 and s.channels == 4
    assert s.top_channels(1) == {0: [0], 1: [1], 2: [2]}
    assert s.probe_accuracy > 0.9
    assert 1 <= s.channels_for(0.9) <= 4 and 1.0 <= s.participation_ratio <= 4.0
    # a rank-2 bond: two channels copy the others
    low = np.hstack([acts[:, :2], acts[:, :2] @ np.array([[1.0, 2.0], [3.0, -1.0]])])
    s2 = bond_stats(low, labels)
    assert s2.rank == 2 and s2.separation.shape == (2,) and s2.spectrum[2:].max() < 1e-9
    with pytest.raises(TnvizError, match="every class needs samples"):
        bond_stats(acts, labels, classes=[0, 1, 2, 7])


def test_probe_accuracy_is_measured_on_samples_it_was_not_fit_on():
    """Random labels on many channels: a probe scored on its own fit data looks good, held out it is chance."""
    from tnviz.bonds.analysis import probe_split

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 30)
    fit, test = probe_split(labels, seed=0)
    assert len(np.intersect1d(fit, test)) == 0 and len(fit) + len(test) == 120
    assert all((labels[test] == c).sum() == 15 for c in range(4))  # stratified halves
    noise = rng.standard_normal((120, 40))
    s = bond_stats(noise, labels)
    assert s.extra["probe_fit_accuracy"] > 0.9  # 41 parameters per class on 60 samples: memorised
    assert s.probe_accuracy < 0.5  # chance is 0.25
    # the reported number is the held-out one: an explicit fit on the fit half, scored on the test half
    centred = noise[fit] - noise[fit].mean(0)
    design = np.hstack([centred, np.ones((len(fit), 1))])
    coef, *_ = np.linalg.lstsq(design, np.eye(4)[labels[fit]], rcond=None)
    pred = np.argmax(np.hstack([noise[test] - noise[fit].mean(0), np.ones((len(test), 1))]) @ coef, 1)
    assert np.isclose(s.probe_accuracy, np.mean(pred == labels[test]))


def test_top_inputs_orders_by_activation():
    acts = np.array([[1.0, 5.0], [3.0, 0.0], [2.0, 9.0]])
    assert top_inputs(acts, 2).tolist() == [[1, 2], [2, 0]]


def _digits_bond(layer, bond):
    from tnviz.model.demos import digits_split

    data = digits_split()
    x = data.x_test.reshape(len(data.x_test), -1).double()
    acts = capture_bonds(layer, [x], bonds={"": [bond]})[("", bond)]
    return acts, data.y_test.numpy()


@pytest.mark.parametrize("kind", ["orthogonal", "invertible"])
def test_gauge_invariants_stay_and_per_channel_statistics_change(kind):
    torch.manual_seed(1)
    layer = TNLinear(tnviz.mpo([8, 8], [4, 4, 4], ranks=[6, 5]), dtype=torch.float64).eval()
    bond = "b1"
    X = random_orthogonal(6, seed=3) if kind == "orthogonal" else random_invertible(6, seed=3)
    moved = gauge_layer(layer, bond, X)
    x = torch.rand(50, 64, dtype=torch.float64)
    assert torch.allclose(moved(x), layer(x), atol=1e-12)  # the same layer ...
    assert not torch.allclose(moved.named_network_tensors()["A"], layer.named_network_tensors()["A"])
    before, labels = _digits_bond(layer, bond)
    after, _ = _digits_bond(moved, bond)
    M = bond_map(bond_cut(layer.network, bond), X)
    assert np.allclose(after, before @ M, atol=1e-10)  # ... other bond channels: H -> H M
    change = compare_stats(bond_stats(before, labels), bond_stats(after, labels))
    for quantity, (orthogonal_ok, invertible_ok, _) in GAUGE_BEHAVIOUR.items():
        invariant = orthogonal_ok if kind == "orthogonal" else invertible_ok
        if invariant:
            assert change[quantity] < 1e-8, (quantity, change[quantity])
        else:
            assert change[quantity] > 1e-3, (quantity, change[quantity])


def test_norm_reduction_is_not_gauge_covariant():
    """The non-linear 'norm' reduction does not transform as H M (why the page warns)."""
    torch.manual_seed(2)
    layer = TNLinear(tnviz.mpo([8, 8], [4, 4, 4], ranks=[6, 5]), dtype=torch.float64).eval()
    X = random_orthogonal(6, seed=1)
    x = torch.rand(30, 64, dtype=torch.float64)
    before = capture_bonds(layer, [x], bonds={"": ["b1"]}, reduce="norm")[("", "b1")]
    after = capture_bonds(gauge_layer(layer, "b1", X), [x], bonds={"": ["b1"]}, reduce="norm")[("", "b1")]
    M = bond_map(bond_cut(layer.network, "b1"), X)
    assert not np.allclose(after, before @ M, atol=1e-6)


def test_random_orthogonal_is_orthogonal():
    Q = random_orthogonal(7, seed=5)
    assert np.allclose(Q.T @ Q, np.eye(7), atol=1e-12)
    assert not np.allclose(Q, random_orthogonal(7, seed=6))


def test_tensorized_digits_mlp_has_bonds_to_capture():
    from tnviz.model.bonds import tensorized_digits_mlp
    from tnviz.model.demos import digits_batches

    model = tensorized_digits_mlp("fc2", max_rank=4)
    assert isinstance(model.fc2, TNLinear) and model.fc2.ranks() == {"b1": 4, "b2": 4, "b3": 4}
    acts = capture_bonds(model, digits_batches("test", limit=40))
    assert sorted(acts) == [("fc2", "b1"), ("fc2", "b2"), ("fc2", "b3")]
    assert acts[("fc2", "b2")].shape == (40, 4)
    with pytest.raises(TnvizError, match="replaces one of"):
        tensorized_digits_mlp("fc3")


def test_bonds_module_imports_without_torch():
    code = "import sys, tnviz.bonds; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------- inspection, gauge report, charts
def test_inspect_bond_with_a_gauge_move_keeps_the_model():
    from tnviz.bonds import GAUGE_KINDS, gauge_matrix, gauge_report
    from tnviz.model.bonds import gauge_model, inspect_bond

    model = _model(torch.float32)
    x = torch.rand(60, 16)
    labels = np.arange(60) % 3
    plain = inspect_bond(model, "2", "b1", x, labels)
    assert plain.gauge is None and plain.activations.shape == (60, 3) and plain.top.shape == (3, 6)
    for kind in GAUGE_KINDS:
        res = inspect_bond(model, "2", "b1", x, labels, gauge=kind, seed=4)
        assert res.output_change < 1e-12 * max(1.0, res.output_scale)  # float64 copy: the same model
        assert np.allclose(res.activations_after, res.activations @ bond_map(res.cut, res.X), atol=1e-10)
        assert all(row["agrees"] for row in res.gauge_rows), res.gauge_rows
        assert [row["quantity"] for row in res.gauge_rows] == list(GAUGE_BEHAVIOUR)
    # a per-channel statistic that did not change would make the report disagree
    same = bond_stats(plain.activations, labels)
    assert not all(row["agrees"] for row in gauge_report(same, same, "invertible"))
    with pytest.raises(TnvizError, match="a gauge move is one of"):
        gauge_matrix("shear", 3)
    with pytest.raises(TnvizError, match="TN layer of the model"):
        gauge_model(model, "1", "b1", np.eye(3))
    nested = torch.nn.Sequential(model)
    moved = gauge_model(nested, "0.2", "b1", gauge_matrix("invertible", 3, seed=1))
    assert torch.allclose(moved(x), nested(x), atol=1e-5)
    assert not torch.equal(moved[0][2].named_network_tensors()["A"], model[2].named_network_tensors()["A"])


def test_autoencoder_bond_activations_are_the_code_and_the_b1_state():
    from tnviz.model.autoencoder import TensorizedAutoencoder

    torch.manual_seed(0)
    ae = TensorizedAutoencoder(latent=5, dtype=torch.float64)
    x = torch.rand(7, 64, dtype=torch.float64)
    assert torch.equal(ae.bond_activations(x, "z"), ae.encode(x))
    cut = bond_cut(ae.network, "b1")
    state = bond_state(cut, x, ae.layer.named_network_tensors())
    assert torch.allclose(ae.bond_activations(x, "b1", "norm"), state.norm(dim=1))
    with pytest.raises(TnvizError, match="encoder bonds"):
        ae.bond_activations(x, "b3")


def test_bond_charts_carry_the_numbers():
    from tnviz.render.bond_charts import class_channel_heatmap, image_mosaic, spectrum_chart

    values = np.arange(6.0).reshape(2, 3) - 2
    heat = class_channel_heatmap(values, [0, 1], highlight={0: [2], 1: [0]})
    assert np.array_equal(np.asarray(heat.data[0].z), values) and heat.data[0].zmin == -3.0
    assert list(heat.data[1].x) == ["c2", "c0"]
    spec = spectrum_chart(np.array([3.0, 1.0]), after=np.array([2.0, 2.0]))
    assert np.allclose(spec.data[1].y, [0.75, 1.0]) and len(spec.data) == 3
    tiles = np.random.default_rng(0).random((2, 3, 8, 8))
    mosaic = np.asarray(image_mosaic(tiles, row_labels=["a", "b"]).data[0].z)
    assert mosaic.shape == (17, 26) and np.array_equal(mosaic[9:17, 18:26], tiles[1, 2])
    assert np.isnan(mosaic[8]).all()
    centred = image_mosaic(tiles - 0.5, symmetric=True).data[0]
    assert centred.zmid == 0.0 and centred.zmin == -centred.zmax


def test_healing_moves_the_bond_features_and_the_accuracy():
    """One epoch of end-to-end healing: accuracy up, the bond's statistics change with the weights."""
    from tnviz.model.bonds import inspect_bond, tensorized_digits_mlp
    from tnviz.model.demos import digits_split
    from tnviz.model.evaluate import digits_accuracy

    data = digits_split()
    x = data.x_test.reshape(len(data.x_test), -1)
    raw = tensorized_digits_mlp("fc2", max_rank=4)
    healed = tensorized_digits_mlp("fc2", max_rank=4, heal_epochs=1)
    assert digits_accuracy(healed) > digits_accuracy(raw) + 0.05
    before = inspect_bond(raw, "fc2", "b2", x, data.y_test).stats
    after = inspect_bond(healed, "fc2", "b2", x, data.y_test).stats
    assert compare_stats(before, after)["covariance spectrum"] > 1e-3


def test_principal_gauge_diagonalises_the_bond_covariance():
    from tnviz.bonds import gauge_matrix, principal_gauge
    from tnviz.model.bonds import inspect_bond

    model = _model()
    x = torch.rand(80, 16, dtype=torch.float64)
    labels = np.arange(80) % 4
    res = inspect_bond(model, "0", "b2", x, labels, gauge="principal")
    assert np.allclose(res.X @ res.X.T, np.eye(5), atol=1e-12)
    cov = np.cov(res.activations_after.T)
    assert np.max(np.abs(cov - np.diag(np.diag(cov)))) < 1e-9 * np.max(np.abs(cov))
    assert np.allclose(np.diag(cov), res.stats.spectrum, rtol=1e-9, atol=1e-12)  # descending, the spectrum
    assert all(row["agrees"] for row in res.gauge_rows)
    assert np.array_equal(principal_gauge(res.activations), res.X)
    with pytest.raises(TnvizError, match="principal-axes gauge needs"):
        gauge_matrix("principal", 5)


# ---------------------------------------------------------------------- bond entropy: one implementation
def test_bond_entropy_has_one_implementation_which_every_copy_agrees_with():
    import math

    import tnviz.decompose.spectra
    from tnviz.bonds import bond_entropy

    assert tnviz.decompose.spectra.bond_entropy is bond_entropy is tnviz.bonds.analysis.bond_entropy
    values = [4.0, 2.0, 1.0, 0.5, 0.0]
    p = [v * v / sum(w * w for w in values) for v in values if v]
    assert bond_entropy(values) == pytest.approx(-sum(q * math.log(q) for q in p), rel=1e-12)
    assert bond_entropy(np.array(values)) == bond_entropy(values) and bond_entropy([0.0, 0.0]) == 0.0
    with pytest.raises(tnviz.RankError, match="finite and non-negative"):
        bond_entropy([1.0, -1.0])
    torch = pytest.importorskip("torch")
    t = torch.tensor(values, dtype=torch.float32)
    assert bond_entropy(t) == pytest.approx(bond_entropy(values), rel=1e-6)
    import importlib
    import pkgutil

    # no module keeps a copy of its own (model/compress.py had one)
    for info in pkgutil.walk_packages(tnviz.__path__, "tnviz."):
        if info.name.startswith(("tnviz.cli", "tnviz.nn.triton")):
            continue
        module = importlib.import_module(info.name)
        if hasattr(module, "bond_entropy"):
            assert module.bond_entropy is bond_entropy, info.name
    dec = tnviz.decompose(torch.randn(16, 16, dtype=torch.float64), "mpo", in_dims=[4, 4], out_dims=[4, 4])
    for bond, s in dec.spectra.items():
        assert dec.entropies[bond] == pytest.approx(bond_entropy(s), rel=1e-9)
