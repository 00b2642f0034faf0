"""Tucker (tnviz.decompose.tucker): exact recovery, HOOI against HOSVD and TensorLy, per-mode
ranks for a parameter budget and for rtol."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tnviz
from tnviz.decompose import decompose
from tnviz.decompose.tucker import tucker_params


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def dense_of(net, seed=0, dtype=torch.float64):
    """A weight with exactly the structure of ``net`` (random seeded tensors, contracted)."""
    W = tnviz.to_dense(net, tnviz.random_tensors(net, seed=seed))
    return torch.as_tensor(np.ascontiguousarray(W), dtype=dtype)


def test_tucker_recovers_known_multilinear_ranks():
    net = tnviz.tucker([6, 5], [4, 7], ranks=[2, 3, 4, 2])   # ranks in order outputs, inputs
    W = dense_of(net, seed=5)
    res = decompose(W, "tucker", in_dims=[6, 5], out_dims=[4, 7], max_rank=[2, 3, 4, 2])
    assert res.rel_error < 1e-9 and res.ranks == {"r1": 2, "r2": 3, "r3": 4, "r4": 2}
    hooi = decompose(W, "tucker", in_dims=[6, 5], out_dims=[4, 7], max_rank=[2, 3, 4, 2], hooi_iters=2)
    assert hooi.rel_error < 1e-9 and len(hooi.extra["hooi_history"]) == 2


def gaussian(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def decaying(m, n, seed, rate=0.05):
    """A weight whose singular values decay exponentially, in a random orthogonal basis."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, min(m, n), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, min(m, n), generator=g, dtype=torch.float64))
    s = torch.exp(-rate * torch.arange(min(m, n), dtype=torch.float64)) + 1e-3
    return (U * s) @ V.T


#: (weight, legs, ranks): truncated cases, random and decaying weights and a conv kernel.
CASES = [
    ("gauss", (64, 48), dict(in_dims=[8, 6], out_dims=[8, 8]), 2),
    ("gauss", (64, 48), dict(in_dims=[8, 6], out_dims=[8, 8]), 3),
    ("gauss", (64, 48), dict(in_dims=[8, 6], out_dims=[8, 8]), 4),
    ("gauss", (48, 64), dict(in_dims=[4, 4, 4], out_dims=[4, 3, 4]), 2),
    ("gauss", (48, 64), dict(in_dims=[4, 4, 4], out_dims=[4, 3, 4]), [3, 2, 3, 2, 3, 3]),
    ("decay", (96, 128), dict(in_dims=[8, 4, 4], out_dims=[4, 6, 4]), 2),
    ("decay", (96, 128), dict(in_dims=[8, 4, 4], out_dims=[4, 6, 4]), 3),
    ("decay", (96, 128), dict(in_dims=[8, 4, 4], out_dims=[4, 6, 4]), [4, 3, 2, 5, 3, 3]),
    ("gauss", (16, 8, 3, 3), {}, [6, 4, 2, 2]),
    ("gauss", (16, 8, 3, 3), {}, [4, 6, 3, 1]),
]


def case_weight(k):
    kind, shape, legs, rank = CASES[k]
    W = gaussian(shape, seed=k) if kind == "gauss" else decaying(*shape, seed=k)
    return W, legs, rank


def hosvd_by_hand(W, dims, ranks):
    """Truncated HOSVD from torch.linalg.svd of each unfolding: the reference for hooi_iters=0."""
    T = W.reshape(dims)
    factors = [torch.linalg.svd(T.movedim(k, 0).reshape(d, -1), full_matrices=False)[0][:, :r]
               for k, (d, r) in enumerate(zip(dims, ranks))]
    G = T
    for k, U in enumerate(factors):
        G = torch.movedim(torch.tensordot(U.T, G, dims=([1], [k])), 0, k)
    approx = G
    for k, U in enumerate(factors):
        approx = torch.movedim(torch.tensordot(U, approx, dims=([1], [k])), 0, k)
    return float(torch.linalg.norm(approx - T) / torch.linalg.norm(T))


@pytest.mark.parametrize("k", range(len(CASES)))
def test_hooi_default_is_never_less_accurate_than_hosvd(k):
    W, legs, rank = case_weight(k)
    default = decompose(W, "tucker", max_rank=rank, **legs)
    hosvd = decompose(W, "tucker", max_rank=rank, hooi_iters=0, **legs)
    assert default.ranks == hosvd.ranks
    # hooi_iters=0 is the plain truncated HOSVD, as computed by hand.
    dims = [default.network.sizes[i] for i in default.network.outputs + default.network.inputs]
    assert hosvd.rel_error == pytest.approx(hosvd_by_hand(W, dims, list(hosvd.ranks.values())), abs=1e-12)
    assert hosvd.algorithm.startswith("HOSVD") and "hooi_history" not in hosvd.extra
    # The default runs HOOI sweeps from it: never worse, and better here by a visible margin.
    assert default.algorithm.startswith("HOOI from HOSVD")
    assert default.rel_error <= hosvd.rel_error + 1e-12
    assert default.rel_error < hosvd.rel_error - 1e-3, (default.rel_error, hosvd.rel_error)
    assert default.rel_error <= default.bound() * (1 + 1e-9)


def test_hooi_stopping_rule():
    from tnviz.decompose.tucker import HOOI_MAX_ITERS, HOOI_MIN_ITERS, HOOI_TOL

    W, legs, rank = case_weight(1)
    res = decompose(W, "tucker", max_rank=rank, **legs)
    hist = res.extra["hooi_history"]
    assert res.extra["hooi_converged"] and HOOI_MIN_ITERS < len(hist) < HOOI_MAX_ITERS
    assert all(b <= a + 1e-12 for a, b in zip(hist, hist[1:]))          # never rises
    assert hist[-2] - hist[-1] < HOOI_TOL <= hist[-3] - hist[-2]       # stopped at the first small step
    assert hist[-1] == pytest.approx(res.rel_error, abs=1e-9)
    assert f"{len(hist)} sweeps (converged" in res.algorithm
    fixed = decompose(W, "tucker", max_rank=rank, hooi_iters=3, **legs)
    assert len(fixed.extra["hooi_history"]) == 3 and fixed.extra["hooi_history"] == hist[:3]
    # At least HOOI_MIN_ITERS sweeps, as TensorLy, even when the first one already gains little.
    exact_rank = decompose(dense_of(tnviz.tucker([6, 5], [4, 7], ranks=[2, 3, 4, 2]), seed=5), "tucker",
                           in_dims=[6, 5], out_dims=[4, 7], max_rank=[2, 3, 4, 2])
    assert len(exact_rank.extra["hooi_history"]) == HOOI_MIN_ITERS
    capped = decompose(W, "tucker", max_rank=rank, hooi_iters=HOOI_MAX_ITERS + 5, **legs)
    assert len(capped.extra["hooi_history"]) == HOOI_MAX_ITERS + 5 and capped.rel_error <= res.rel_error + 1e-12
    from tnviz.errors import RankError

    with pytest.raises(RankError, match="hooi_iters must be None .* got -1"):
        decompose(W, "tucker", max_rank=rank, hooi_iters=-1, **legs)


@pytest.mark.parametrize("k", range(len(CASES)))
def test_hooi_equals_tensorly(k):
    """TensorLy's default Tucker is HOOI from an SVD start; ours matches it sweep for sweep (same
    stopping rule at our tolerance) and is never less accurate than its default (tol 1e-4)."""
    tl = pytest.importorskip("tensorly", reason="tensorly is in the 'bench' extra, not 'test'")
    from tensorly.decomposition import tucker as tl_tucker

    from tnviz.decompose.tucker import HOOI_MAX_ITERS, HOOI_TOL

    W, legs, rank = case_weight(k)
    res = decompose(W, "tucker", max_rank=rank, **legs)
    dims = [res.network.sizes[i] for i in res.network.outputs + res.network.inputs]
    T = W.reshape(dims).numpy()
    ranks = list(res.ranks.values())

    def error(decomposition):
        return float(np.linalg.norm(tl.tucker_to_tensor(decomposition) - T) / np.linalg.norm(T))

    with tl.backend_context("numpy"):  # another test (TensorLy-Torch) may have left the backend on pytorch
        theirs_default = error(tl_tucker(T, rank=ranks))
        theirs_tight = error(tl_tucker(T, rank=ranks, tol=HOOI_TOL, n_iter_max=HOOI_MAX_ITERS))
    assert res.rel_error <= theirs_default + 1e-12
    assert res.rel_error == pytest.approx(theirs_tight, abs=1e-9)


@pytest.mark.parametrize("k", [0, 3, 5, 8])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_target_params_spends_the_budget_on_per_mode_ranks(k, fraction):
    W, legs, _ = case_weight(k)
    target = int(W.numel() * fraction)
    res = decompose(W, "tucker", target_params=target, **legs)
    uniform = decompose(W, "tucker", max_rank=res.extra["uniform_rank"], **legs)
    assert res.params <= target
    assert res.rel_error <= uniform.rel_error + 1e-12
    assert "per-mode" in res.extra["rank_rule"] or "uniform" in res.extra["rank_rule"]
    ranks = list(res.ranks.values())
    dims = [res.network.sizes[i] for i in res.network.outputs + res.network.inputs]
    no_step_fits = all(tucker_params(dims, ranks[:m] + [ranks[m] + 1] + ranks[m + 1:]) > target
                       for m in range(len(ranks)) if ranks[m] < dims[m])
    assert res.params >= 0.9 * target or no_step_fits, (res.params / target, res.ranks)
    assert res.params >= uniform.params


def test_target_params_beats_the_uniform_rank_where_it_leaves_budget():
    W = gaussian((64, 48), seed=0)
    legs = dict(in_dims=[8, 6], out_dims=[8, 8])
    res = decompose(W, "tucker", target_params=768, **legs)
    uniform = decompose(W, "tucker", max_rank=res.extra["uniform_rank"], **legs)
    assert uniform.params < 0.6 * 768 <= 0.9 * 768 <= res.params <= 768   # the old rule left 40% unused
    assert len(set(res.ranks.values())) > 1 and res.rel_error < uniform.rel_error - 0.01


def test_core_energy_prefix_sums_match_the_projection():
    """The greedy reads the HOSVD error of any rank tuple from prefix sums of the squared full core."""
    from tnviz.decompose.tucker import _CoreEnergy, project, unfold

    T = gaussian((4, 5, 3, 6), seed=3)
    factors = [torch.linalg.svd(unfold(T, k), full_matrices=False)[0] for k in range(4)]
    spectra = [torch.linalg.svdvals(unfold(T, k)) for k in range(4)]
    energy = _CoreEnergy(project(T, factors), spectra, float(T.norm()))
    for ranks in ([1, 1, 1, 1], [2, 3, 1, 4], [4, 5, 3, 6], [3, 2, 2, 5]):
        G = project(T, [U[:, :r] for U, r in zip(factors, ranks)])
        assert energy.kept(ranks) == pytest.approx(float(G.pow(2).sum()), rel=1e-12)
        measured = float(T.norm() ** 2 - G.pow(2).sum())
        assert energy.discarded(ranks) <= measured * (1 + 1e-9) + 1e-12
        assert energy.discarded(ranks) == pytest.approx(max(measured, 0.0), rel=1e-9, abs=1e-9)


def per_mode_threshold_ranks(res, rtol, norm):
    """The ranks of the old rtol rule: on every mode the smallest rank whose discarded tail is
    within ``rtol·||W||/sqrt(N)`` (which guarantees the total through the HOSVD bound)."""
    limit = (rtol * norm) ** 2 / len(res.spectra)
    ranks = []
    for s in res.spectra.values():
        sq = (s.double() ** 2).tolist()
        ranks.append(next(r for r in range(1, len(sq) + 1) if sum(sq[r:]) <= limit))
    return ranks


@pytest.mark.parametrize("k,rtol", [(0, 0.4), (1, 0.3), (3, 0.5), (5, 0.5), (8, 0.4), (9, 0.5)])
def test_rtol_per_mode_ranks_compress_within_the_guarantee(k, rtol):
    """The old rule (every mode within rtol/sqrt(N)) keeps networks larger than these weights;
    the greedy ranks meet rtol on the measured HOSVD error and compress."""
    W, legs, _ = case_weight(k)
    res = decompose(W, "tucker", rtol=rtol, **legs)
    assert res.rel_error <= rtol
    assert res.extra["hosvd_error"] <= rtol and res.rel_error <= res.extra["hosvd_error"] + 1e-12
    assert res.compresses and "note" not in res.extra
    old = decompose(W, "tucker", max_rank=per_mode_threshold_ranks(res, rtol, float(W.norm())), **legs)
    assert not old.compresses and old.params > res.params


def test_rtol_finds_known_ranks_and_full_rank_says_it_does_not_compress():
    net = tnviz.tucker([6, 5], [4, 7], ranks=[2, 3, 4, 2])
    W = dense_of(net, seed=5)
    found = decompose(W, "tucker", in_dims=[6, 5], out_dims=[4, 7], rtol=1e-10)
    assert found.ranks == {"r1": 2, "r2": 3, "r3": 4, "r4": 2} and found.rel_error < 1e-9
    flat = gaussian((64, 48), seed=0)
    full = decompose(flat, "tucker", in_dims=[8, 6], out_dims=[8, 8], rtol=0.1)
    assert full.rel_error <= 0.1 and not full.compresses
    assert full.params > full.dense_params and f"{full.params:,}" in full.extra["note"]


def test_data_aware_tucker_runs_hooi_on_the_whitened_weight():
    g = torch.Generator().manual_seed(2)
    factors = []
    for d in (4, 4, 4):
        A = torch.randn(d, d, generator=g, dtype=torch.float64) * (0.3 ** torch.arange(d, dtype=torch.float64))
        factors.append(A @ A.T + 1e-3 * torch.eye(d, dtype=torch.float64))
    W = gaussian((48, 64), seed=0)
    legs = dict(in_dims=[4, 4, 4], out_dims=[4, 3, 4], max_rank=2)
    hooi = decompose(W, "tucker", input_cov=factors, **legs)
    hosvd = decompose(W, "tucker", input_cov=factors, hooi_iters=0, **legs)
    assert hooi.algorithm.startswith("HOOI") and "absorbed exactly" in hooi.extra["data_aware"]
    assert hooi.data_error < hosvd.data_error - 1e-3
    assert hooi.data_error <= hooi.bound() * (1 + 1e-9)


@pytest.mark.parametrize("trunc", [("max_rank", 3), ("max_rank", [2, 4, 3, 1, 2, 3]), ("rtol", 0.5),
                                   ("target_params", 900), ("energy", 0.8)])
def test_from_factors_of_the_exact_hosvd_equals_a_fresh_decomposition(trunc):
    """What tnviz.decompose.spectra.cut needs: one exact (untruncated) Tucker, then any truncation of it
    through from_factors / truncate_exact, equal to a fresh decompose(..., randomized=False)."""
    from tnviz.decompose.legs import make_legs
    from tnviz.decompose.truncation import parse_truncation
    from tnviz.decompose.tucker import from_factors

    W = decaying(48, 64, seed=4)
    legs = dict(in_dims=[4, 4, 4], out_dims=[4, 3, 4])
    exact = decompose(W, "tucker", randomized=False, **legs)
    assert exact.rel_error < 1e-12 and exact.algorithm.startswith("HOSVD (nothing truncated")
    kind, value = trunc
    fresh = decompose(W, "tucker", randomized=False, **{kind: value}, **legs)
    L = make_legs(W.shape, legs["in_dims"], legs["out_dims"])
    t = parse_truncation(**{kind: value})
    out = from_factors(W.reshape(L.dims), L, [exact.tensors[f"U{k + 1}"] for k in range(6)],
                       [exact.spectra[f"r{k + 1}"] for k in range(6)], t, norm=float(W.norm()))
    assert out.network == fresh.network
    for name, tensor in out.tensors.items():
        assert torch.allclose(tensor, fresh.tensors[name], atol=1e-10), name
    assert {b: round(v / float(W.norm()), 12) for b, v in out.discarded.items()} == \
        {b: round(v, 12) for b, v in fresh.discarded.items()}
    # truncate_exact does the same from the Decomposition itself (legs read off its network).
    from tnviz.decompose.tucker import truncate_exact

    again = truncate_exact(exact, W, t)
    assert again.network == fresh.network
    assert all(torch.allclose(again.tensors[n], fresh.tensors[n], atol=1e-10) for n in fresh.tensors)
