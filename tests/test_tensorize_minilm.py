"""MiniLM: the 12 feed-forward weights at about half their parameters, plain vs data-aware, and
layer-wise healing (embedding cosine vs the original on the held-out bundled sentences)."""
from __future__ import annotations

import copy

import pytest
import torch

from tnviz.model.demos import embed, sentences
from tnviz.decompose.data_aware import input_tensors
from tnviz.model.heal import heal_distill, heal_layerwise
from tnviz.model.tensorize import Rule, apply_plan, calibration_stats, demo_subject, functional, make_plan

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
    reference = embed(sentences("heldout"), model)
    plan = make_plan(model, [Rule(FEED_FORWARD, "svd", {"ratio": 2})])
    assert len(plan.layers) == 12
    stats = calibration_stats(model, calibration, plan.names(), "cpu")
    plain = apply_plan(model, plan, data_aware=False, device="cpu")
    aware = apply_plan(model, plan, stats=stats, device="cpu")
    for result in (plain, aware):
        assert len(result.layers) == 12
        assert 1.95 < result.totals["ratio"] < 2.1  # about half the parameters
    cos_plain = functional("minilm", model, plain.model, reference_outputs=reference)["cosine"]
    cos_aware = functional("minilm", model, aware.model, reference_outputs=reference)["cosine"]
    distilled = copy.deepcopy(aware.model)
    joint = heal_distill(distilled, model, calibration, steps=20)
    cos_distilled = functional("minilm", model, distilled, reference_outputs=reference)["cosine"]
    report = heal_layerwise(aware.model, model, calibration, steps=10, lr=2e-4, batch_rows=256)
    cos_healed = functional("minilm", model, aware.model, reference_outputs=reference)["cosine"]
    print(f"MiniLM FF at {aware.totals['ratio']:.2f}x, held-out cosine: plain SVD {cos_plain:.4f}, "
          f"data-aware SVD {cos_aware:.4f}, after layer-wise healing {cos_healed:.4f} ({report.seconds:.1f}s), "
          f"distilled jointly instead {cos_distilled:.4f} ({joint.seconds:.1f}s)")
    assert cos_aware > cos_plain + 0.1
    assert joint.loss_after["model"] < joint.loss_before["model"] and not joint.kept
    assert cos_distilled > cos_healed > cos_aware  # on held-out sentences, not the ones distilled on
    assert all(report.loss_after[n] <= report.loss_before[n] for n in report.loss_after)  # never worse, by design
    assert sum(report.loss_after.values()) < sum(report.loss_before.values())  # and better overall


def test_minilm_data_aware_mpo_inputs_on_one_core_beats_chain_placement(minilm):
    """The default placement of a data-aware MPO (every input leg on the last core: the full
    covariance is absorbed exactly) against the builder's chain placement (Kronecker whitening +
    least-squares refit, the previous default), and the default bond split (chosen by the data
    error) against one cap on every bond, same parameters, first two blocks' FF weights."""
    model = minilm.model
    calibration = model.batches(sentences("calibration")[:64], 32, "cpu")
    reference = embed(sentences("heldout"), model)
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
    cos = {name: functional("minilm", model, r.model, reference_outputs=reference)["cosine"]
           for name, r in (("auto", auto), ("uniform", uniform), ("chain", chain))}
    print(f"MiniLM FF blocks 0-1 at 2x, data-aware MPO held-out cosine: inputs on one core, split by data "
          f"{cos['auto']:.4f}, uniform caps {cos['uniform']:.4f}; chain + refit {cos['chain']:.4f}")
    assert cos["auto"] > cos["uniform"] > cos["chain"]
