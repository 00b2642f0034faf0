"""Applying a plan: layers against dense references, data-aware against plain, leg placement and
bond splits, weights that stay dense, and the preview that shows what the run will produce."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tnviz.decompose.data_aware import input_tensors
from tnviz.errors import TnvizError
from tnviz.model.apply import (PLACEMENTS, Kept, apply_plan, calibration_stats, compress_layer, inputs_last_cores,
                               preview)
from tnviz.model.data import sentences
from tnviz.model.evaluate import embed
from tnviz.model.heal import heal_distill, heal_layerwise
from tnviz.model.plan import Rule, make_plan
from tnviz.model.subject import demo_subject
from tnviz.nn import TNEmbedding

pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


@pytest.fixture(scope="module")
def mlp():
    return demo_subject("digits-mlp", "cpu")


@pytest.fixture(scope="module")
def cnn():
    return demo_subject("digits-cnn", "cpu")


def test_data_aware_beats_plain_on_digits(mlp):
    plan = make_plan(mlp.model, [Rule(r"fc2$", "svd", {"ratio": 16})])
    plain = apply_plan(mlp.model, plan, data_aware=False, device="cpu")
    aware = apply_plan(mlp.model, plan, calibration=mlp.calibration, device="cpu")
    assert plain.layers[0].params_after == aware.layers[0].params_after
    assert aware.layers[0].data_error is not None and plain.layers[0].data_error is None
    # the data error of the plain layer, measured on the same inputs, is larger
    from tnviz.model.calibrate import collect_input_stats

    C = collect_input_stats(mlp.model, mlp.calibration, ["fc2"])["fc2"].second_moment
    W = mlp.model.fc2.weight.detach().double()

    def data_error(layer):
        E = W - layer.to_dense().detach().double()
        return float(torch.sqrt(torch.trace(E @ C @ E.T) / torch.trace(W @ C @ W.T)))

    assert data_error(aware.model.fc2) < data_error(plain.model.fc2)
    assert abs(data_error(aware.model.fc2) - aware.layers[0].data_error) < 1e-3
    # the original is untouched (a deep copy was compressed)
    assert isinstance(mlp.model.fc2, nn.Linear)


def test_layers_equal_dense_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(24, 36), nn.ReLU(), nn.Linear(36, 12)).double()
    result = apply_plan(model, make_plan(model, [Rule(".*", "tr", {"max_rank": 3})]), data_aware=False, device="cpu")
    x = torch.randn(5, 24, dtype=torch.float64)
    first = result.model[0]
    dense = first.to_dense().detach()
    assert torch.allclose(first(x), x @ dense.T + model[0].bias, atol=1e-12)
    assert result.layers[0].rel_error == pytest.approx(
        float(torch.linalg.norm(dense - model[0].weight.detach()) / torch.linalg.norm(model[0].weight.detach())), rel=1e-9)


def test_embedding_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(64, 16), nn.Linear(16, 4))
    result = apply_plan(model, make_plan(model, [Rule("^0$", "mpo", {"max_rank": 4})]), data_aware=False,
                        device="cpu")
    emb = result.model[0]
    assert isinstance(emb, TNEmbedding)
    ids = torch.tensor([[1, 5, 63]])
    table = emb.linear.to_dense().detach()
    assert torch.equal(emb(ids), table[ids]) and result.layers[0].params_after < 64 * 16


def test_calibration_is_required_when_data_aware(mlp):
    with pytest.raises(TnvizError, match="calibration batches"):
        apply_plan(mlp.model, make_plan(mlp.model), device="cpu")


def test_data_aware_mpo_placement_inputs_on_last_core():
    """placement='auto': a data-aware MPO gets every input leg on its last core, so the FULL
    covariance is absorbed exactly; its data error and output are checked against dense float64."""
    assert inputs_last_cores((8, 8, 6), (16, 12, 8)) == ((2, 2, 2), (0, 0, 1))
    assert inputs_last_cores((4, 4), (2, 2, 2)) == ((2, 2), (0, 0, 1))
    assert inputs_last_cores((384,), (16, 24)) is None  # one input leg: already on one core
    assert inputs_last_cores((2, 2, 2, 2), (4, 4)) is None  # too few output legs for the other cores
    assert set(PLACEMENTS) == {"auto", "chain"}
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64)).double()
    mix = torch.randn(64, 64, generator=g, dtype=torch.float64)  # strongly correlated, non-Kronecker inputs
    batches = [torch.randn(128, 64, generator=g, dtype=torch.float64) @ mix for _ in range(2)]
    rule = Rule(r"^0$", "mpo", {"max_rank": 6}, in_dims=(4, 4, 4), out_dims=(4, 4, 4))
    plan = make_plan(model, [rule])
    stats = calibration_stats(model, batches, plan.names(), "cpu")
    auto = apply_plan(model, plan, stats=stats, device="cpu")
    chain = apply_plan(model, plan, stats=stats, device="cpu", placement="chain", refit_sweeps=0)
    net = auto.layers[0].network
    assert input_tensors(net) == [net.tensor_names[-1]] and len(input_tensors(chain.layers[0].network)) == 3
    W = model[0].weight.detach()
    C = stats["0"].second_moment.to(torch.float64)
    layer = auto.model[0]
    W_approx = layer.to_dense().detach().to(torch.float64)
    x = batches[0]
    with torch.no_grad():
        assert torch.allclose(layer(x), x @ W_approx.T + layer.bias, atol=1e-8)
    E = W - W_approx
    dense_err = float(torch.sqrt(torch.trace(E @ C @ E.T) / torch.trace(W @ C @ W.T)))
    assert auto.layers[0].data_error == pytest.approx(dense_err, rel=1e-6)
    assert auto.layers[0].data_error < chain.layers[0].data_error
    # an explicit placement in the rule is kept
    kept = apply_plan(model, make_plan(model, [Rule(r"^0$", "mpo", {"max_rank": 6}, in_dims=(4, 4, 4), out_dims=(4, 4, 4),
                                                    in_cores=(0, 1, 2), out_cores=(0, 1, 2))]),
                      stats=stats, device="cpu", refit_sweeps=0)
    assert len(input_tensors(kept.layers[0].network)) == 3
    with pytest.raises(TnvizError, match="placement must be one of"):
        apply_plan(model, plan, stats=stats, device="cpu", placement="middle")


def test_a_network_that_does_not_save_parameters_is_kept_dense_with_the_reason():
    """(issue 13 item 7) an rtol the network can only meet with more parameters than the weight's."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(384, 384))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(384, 384, generator=g))  # a flat spectrum: no rank is small
    for method in ("mpo", "tucker"):
        plan = make_plan(model, [Rule("^0$", method, {"rtol": 0.1})])
        outcome = compress_layer(model[0].weight, plan.layers[0])
        assert isinstance(outcome, Kept) and "not fewer than the weight's 147,456" in outcome.reason
        result = apply_plan(model, plan, data_aware=False, device="cpu")
        assert result.layers == [] and result.skipped[0]["name"] == "0"
        assert isinstance(result.model[0], nn.Linear)  # left as it was
        row, = preview(model, plan)
        assert row["params after"] == 147_456 and "kept dense" in row["note"]


def test_preview_shows_what_the_run_produces(cnn):
    """(issue 13 item 7) the preview of a data-aware plan, with the run's calibration statistics,
    gives every layer the parameters and error the run gives it."""
    plan = make_plan(cnn, [Rule(r"conv2", "tucker", {"ratio": 4}), Rule(r"fc1", "mpo", {"ratio": 8})])
    stats = cnn.input_stats(plan.names())
    rows = {r["layer"]: r for r in preview(cnn, plan, stats)}
    result = apply_plan(cnn.model, plan, stats=stats, device="cpu")
    assert len(result.layers) == 2
    for layer in result.layers:
        assert rows[layer.name]["params after"] == layer.params_after
        assert rows[layer.name]["weight error"] == pytest.approx(layer.rel_error, rel=1e-9)


# ---------------------------------------------------------------------- MiniLM (slow)
FEED_FORWARD = r"layer\.\d+\.(intermediate|output)\.dense$"


@pytest.fixture(scope="module")
def minilm():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        subject = demo_subject("minilm", "cpu")
    except Exception as exc:  # the package is a declared dependency; say so plainly if it is absent
        pytest.skip(f"MiniLM demo unavailable: {exc}")
    yield subject
    torch.set_num_threads(threads)


def test_minilm_feed_forward_half_params_data_aware_beats_plain(minilm):
    model = minilm.model
    calibration = model.batches(sentences("calibration")[:64], 32, "cpu")
    plan = make_plan(model, [Rule(FEED_FORWARD, "svd", {"ratio": 2})])
    assert len(plan.layers) == 12
    stats = calibration_stats(model, calibration, plan.names(), "cpu")
    plain = apply_plan(model, plan, data_aware=False, device="cpu")
    aware = apply_plan(model, plan, stats=stats, device="cpu")
    for result in (plain, aware):
        assert len(result.layers) == 12
        assert 1.95 < result.totals["ratio"] < 2.1  # about half the parameters
    cos_plain = minilm.measure(plain.model)["cosine"]
    cos_aware = minilm.measure(aware.model)["cosine"]
    distilled = copy.deepcopy(aware.model)
    joint = heal_distill(distilled, model, calibration, steps=20)
    cos_distilled = minilm.measure(distilled)["cosine"]
    report = heal_layerwise(aware.model, model, calibration, steps=10, lr=2e-4, batch_rows=256)
    cos_healed = minilm.measure(aware.model)["cosine"]
    print(f"MiniLM FF at {aware.totals['ratio']:.2f}x, held-out cosine: plain SVD {cos_plain:.4f}, "
          f"data-aware SVD {cos_aware:.4f}, after layer-wise healing {cos_healed:.4f} ({report.seconds:.1f}s), "
          f"distilled jointly instead {cos_distilled:.4f} ({joint.seconds:.1f}s)")
    assert cos_aware > cos_plain + 0.1
    assert joint.loss_after["model"] < joint.loss_before["model"] and not joint.kept
    assert cos_distilled > cos_healed > cos_aware  # on held-out sentences, not the ones distilled on
    assert all(report.loss_after[n] <= report.loss_before[n] for n in report.loss_after)  # never worse, by design
    assert sum(report.loss_after.values()) < sum(report.loss_before.values())  # and better overall
    # the metric's reference is the original's embeddings of the held-out sentences
    assert torch.equal(minilm._reference, embed(sentences("heldout"), model))


def test_minilm_data_aware_mpo_inputs_on_one_core_beats_chain_placement(minilm):
    """The default placement of a data-aware MPO (every input leg on the last core: the full
    covariance is absorbed exactly) against the builder's chain placement (Kronecker whitening +
    least-squares refit, the previous default), and the default bond split (chosen by the data
    error) against one cap on every bond, same parameters, first two blocks' FF weights."""
    model = minilm.model
    calibration = model.batches(sentences("calibration")[:64], 32, "cpu")
    plan = make_plan(model, [Rule(r"layer\.[01]\.(intermediate|output)\.dense$", "mpo", {"ratio": 2})])
    assert len(plan.layers) == 4
    stats = calibration_stats(model, calibration, plan.names(), "cpu")
    auto = apply_plan(model, plan, stats=stats, device="cpu")
    uniform = apply_plan(model, plan, stats=stats, device="cpu", bond_split="uniform")  # one cap on every bond
    chain = apply_plan(model, plan, stats=stats, device="cpu", placement="chain")  # refit 1 x 15: the old default
    for result in (auto, uniform, chain):
        assert len(result.layers) == 4 and 1.95 < result.totals["ratio"] < 2.1
    for a, u, c in zip(auto.layers, uniform.layers, chain.layers):
        assert input_tensors(a.network) == [a.network.tensor_names[-1]]  # every input leg on the last core
        assert input_tensors(u.network) == [u.network.tensor_names[-1]]
        assert len(input_tensors(c.network)) > 1
        assert a.params_after <= a.params_before // 2 + 1
        assert u.data_error < c.data_error  # the exact whitening wins layer by layer
        assert a.data_error <= u.data_error  # the split chosen by the data error never loses to the uniform caps
        if "intermediate" in a.name:  # 1536 outputs: the full output-side bond wins by a margin
            assert a.ranks["b1"] == 192 > u.ranks["b1"] and a.data_error < u.data_error - 0.01
    cos = {name: minilm.measure(r.model)["cosine"] for name, r in (("auto", auto), ("uniform", uniform), ("chain", chain))}
    print(f"MiniLM FF blocks 0-1 at 2x, data-aware MPO held-out cosine: inputs on one core, split by data "
          f"{cos['auto']:.4f}, uniform caps {cos['uniform']:.4f}; chain + refit {cos['chain']:.4f}")
    assert cos["auto"] > cos["uniform"] > cos["chain"]


def test_the_bond_split_and_the_decomposition_share_the_first_unfoldings_svd(monkeypatch):
    """A data-aware MPO with the bond split: the decomposition at the chosen caps reuses the exact
    SVD the split made of the whitened weight's first unfolding (one LAPACK call fewer) and the
    whitened weight ``W·L`` itself (one product fewer), and gives the same tensors bit for bit as
    with every SVD and product run afresh."""
    import contextlib

    from tnviz.decompose import data_aware as da
    from tnviz.decompose import randomized

    g = torch.Generator().manual_seed(4)
    model = nn.Sequential(nn.Linear(256, 512))  # its MPO has two bonds to split
    X = torch.randn(1000, 256, generator=g) @ torch.randn(256, 256, generator=g)
    plan = make_plan(model, [Rule("^0$", "mpo", {"ratio": 2})])
    cov = (X.double().T @ X.double()) / 1000
    calls, products = [], []
    real, real_product = randomized._exact_svd, da.times_lower
    monkeypatch.setattr(randomized, "_exact_svd", lambda M: calls.append(tuple(M.shape)) or real(M))
    monkeypatch.setattr(da, "times_lower", lambda M, L: products.append(tuple(M.shape)) or real_product(M, L))
    shared = compress_layer(model[0].weight, plan.layers[0], cov)
    with_sharing, products_shared = list(calls), list(products)
    calls.clear()
    products.clear()
    monkeypatch.setattr(randomized, "shared_svds", lambda *a, **k: contextlib.nullcontext())
    fresh = compress_layer(model[0].weight, plan.layers[0], cov)
    assert len(with_sharing) == len(calls) - 1 and with_sharing[0] == calls[0]
    assert products_shared == [(512, 256)] and products == [(512, 256)] * 2
    assert shared.ranks == fresh.ranks and shared.data_error == fresh.data_error
    for name, tensor in fresh.tensors.items():
        assert torch.equal(shared.tensors[name], tensor), name
