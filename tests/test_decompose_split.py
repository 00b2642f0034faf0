"""split_bonds: the budget split of a data-aware MPO between its bonds, checked against dense references."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tnviz.contract import to_dense
from tnviz.decompose import decompose
from tnviz.decompose.data_aware import DEFAULT_EPS, input_tensors
from tnviz.decompose.split import split_bonds
from tnviz.errors import DecompositionError, TnvizError
from tnviz.model.apply import BOND_SPLITS, apply_plan
from tnviz.model.plan import Rule, make_plan

LEGS = dict(in_dims=(4, 6), out_dims=(4, 4, 3), in_cores=(2, 2), out_cores=(0, 0, 1))


def _data(out: int = 48, inp: int = 24, rows: int = 500, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out, inp, dtype=torch.float64, generator=g)
    mix = torch.randn(inp, inp, dtype=torch.float64, generator=g) / math.sqrt(inp)
    X = mix @ torch.randn(inp, rows, dtype=torch.float64, generator=g)  # correlated inputs
    return W, X @ X.T / rows


def _dense_data_error(W, W_approx, C, eps: float = DEFAULT_EPS) -> float:
    """||(W - W~) L|| / ||W L|| with L L^T = C + eps·mean(diag C)·I, in numpy float64."""
    W, W_approx, C = (np.asarray(t, dtype=np.float64) for t in (W, W_approx, C))
    L = np.linalg.cholesky(C + eps * np.mean(np.diag(C)) * np.eye(len(C)))
    return float(np.linalg.norm((W - W_approx) @ L) / np.linalg.norm(W @ L))


def test_every_candidate_scored_exactly_and_best_chosen():
    W, C = _data()
    target = W.numel() // 2
    best = split_bonds(W, C, target_params=target, **LEGS)
    assert best is not None and len(best.candidates) >= 3
    for cand in best.candidates:
        dec = decompose(W, "mpo", input_cov=C, max_rank=cand.caps, **LEGS)
        assert dec.params == cand.params <= target
        assert dict(dec.ranks) == cand.caps
        reference = _dense_data_error(W, to_dense(dec.network, dec.tensors), C)
        assert cand.data_error == pytest.approx(reference, rel=1e-9)
    assert best.data_error == min(c.data_error for c in best.candidates)
    assert best.caps == next(c.caps for c in best.candidates if c.data_error == best.data_error)


def test_uniform_candidate_is_decompose_target_params_and_never_beaten_by_choice():
    W, C = _data(seed=1)
    target = W.numel() // 2
    best = split_bonds(W, C, target_params=target, **LEGS)
    uniform = best.candidates[0]
    assert uniform.label == "uniform"
    dec = decompose(W, "mpo", input_cov=C, target_params=target, **LEGS)
    assert dict(dec.ranks) == uniform.caps
    assert best.data_error <= uniform.data_error


def test_structured_output_side_prefers_a_small_first_bond():
    """Outputs of rank 4 across the first output core's legs (o1 o2, 16 values): a first bond of 4
    loses nothing there, and spending the saved parameters on the input core's bond wins."""
    g = torch.Generator().manual_seed(2)
    A = torch.randn(16, 4, dtype=torch.float64, generator=g)         # (o1 o2) -> rank 4 of 16
    G = torch.randn(4, 3 * 24, dtype=torch.float64, generator=g)     # rank 4 -> (o3, inputs)
    W = (A @ G).reshape(48, 24) + 1e-3 * torch.randn(48, 24, dtype=torch.float64, generator=g)
    _, C = _data(seed=3)
    best = split_bonds(W, C, target_params=W.numel() // 2, **LEGS)
    uniform = best.candidates[0]
    assert best.label == "f=0.25" and best.caps == {"b1": 4, "b2": 12} and uniform.caps["b1"] > 4
    assert best.data_error < 0.01 < uniform.data_error


@pytest.mark.parametrize("seed", [0, 4])
def test_generic_weight_gets_a_lower_data_error_than_the_uniform_caps(seed):
    """A random weight: the uniform caps leave part of the budget unused or spend it where it
    buys less; the chosen split is strictly better on the data."""
    W, C = _data(seed=seed)
    best = split_bonds(W, C, target_params=W.numel() // 2, **LEGS)
    assert best.label != "uniform" and best.caps != best.candidates[0].caps
    assert best.data_error < best.candidates[0].data_error - 0.01


def test_not_applicable_returns_none_and_bad_input_is_refused():
    W, C = _data()
    chain = dict(in_dims=(4, 6), out_dims=(4, 4, 3))  # the builder's chain: inputs on several cores
    assert split_bonds(W, C, target_params=500, **chain) is None
    two_cores = dict(in_dims=(4, 6), out_dims=(48,), in_cores=(1, 1), out_cores=(0,))  # one bond: nothing to split
    assert split_bonds(W, C, target_params=500, **two_cores) is None
    with pytest.raises(DecompositionError, match="target_params must be a positive integer; got 0"):
        split_bonds(W, C, target_params=0, **LEGS)
    with pytest.raises(DecompositionError, match="2-D weight"):
        split_bonds(W.reshape(-1), C, target_params=500, **LEGS)


def test_apply_plan_data_split_never_worse_than_uniform_on_the_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 48), torch.nn.ReLU(), torch.nn.Linear(48, 24))
    g = torch.Generator().manual_seed(5)
    batches = [torch.randn(256, 24, generator=g) @ torch.randn(24, 24, generator=g) for _ in range(2)]
    plan = make_plan(model, [Rule(r"^0$", "mpo", {"ratio": 2.0}, in_dims=(4, 6), out_dims=(4, 4, 3)),
                             Rule(r"^2$", "mpo", {"ratio": 2.0}, in_dims=(4, 4, 3), out_dims=(4, 6))])
    data = apply_plan(model, plan, calibration=batches, device="cpu")
    uniform = apply_plan(model, plan, calibration=batches, device="cpu", bond_split="uniform")
    assert set(BOND_SPLITS) == {"data", "uniform"}
    assert len(data.layers) == len(uniform.layers) == 2
    for d, u in zip(data.layers, uniform.layers):
        assert input_tensors(d.network) == [d.network.tensor_names[-1]]  # inputs-last: the split applies
        assert d.params_after <= d.params_before // 2 and u.params_after <= u.params_before // 2
        assert d.data_error <= u.data_error + 1e-12
    assert sum(d.data_error for d in data.layers) < sum(u.data_error for u in uniform.layers)
    with pytest.raises(TnvizError, match="bond_split must be one of"):
        apply_plan(model, plan, calibration=batches, device="cpu", bond_split="even")


def test_shared_grams_give_each_ranks_spectrum_of_its_own_unfolding():
    """The last bond's spectra read from shared Gram matrices (prefix sums where the second
    unfolding is tall, a leading block where it is wide) equal those of each rank's own matrix."""
    from tnviz.decompose.randomized import exact_svd
    from tnviz.decompose.split import _last_squares

    g = torch.Generator().manual_seed(5)
    shapes = [(4, 4), (3,), (4, 6)]  # first unfolding 16 x 72; the second (3r) x 24: wide below r = 8
    A = torch.randn(16, 72, dtype=torch.float64, generator=g)
    first = exact_svd(A)
    U, S, Vh, SVh = first
    R = SVh if SVh is not None else S[:, None] * Vh
    ranks = [2, 5, 7, 8, 11, 16]
    got = _last_squares(first, shapes, ranks + [5])
    assert sorted(got) == ranks
    for r in ranks:
        C = R[:r].reshape(r * 3, 24)
        want = torch.linalg.svdvals(C) ** 2
        assert got[r].shape == want.shape
        assert torch.allclose(got[r], want, rtol=1e-10, atol=1e-10 * float(want[0])), r
