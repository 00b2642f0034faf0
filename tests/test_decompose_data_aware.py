"""Data-aware decompositions, randomized SVDs and trade-off sweeps, against dense references."""
from __future__ import annotations

import math

import pytest
import torch

from tnviz.decompose import DECOMPOSITIONS, decompose, pareto_front, tradeoff
from tnviz.decompose.randomized import randomized_svd
from tnviz.errors import DecompositionError

METHODS = list(DECOMPOSITIONS)
IN_DIMS, OUT_DIMS = [4, 4, 4], [4, 3, 4]


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def weight():
    return torch.randn(48, 64, generator=gen(0), dtype=torch.float64)


@pytest.fixture(scope="module")
def samples():
    """Seeded anisotropic inputs (not a Kronecker product): decaying scales in a random basis."""
    g = gen(1)
    Q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    scales = 0.8 ** torch.arange(64, dtype=torch.float64)
    return (torch.randn(3000, 64, generator=g, dtype=torch.float64) * scales) @ Q.T


@pytest.fixture(scope="module")
def kron_factors():
    g = gen(2)
    out = []
    for d in IN_DIMS:
        A = torch.randn(d, d, generator=g, dtype=torch.float64) * (0.3 ** torch.arange(d, dtype=torch.float64))
        out.append(A @ A.T + 1e-3 * torch.eye(d, dtype=torch.float64))
    return out


def kron_all(factors):
    C = factors[0]
    for f in factors[1:]:
        C = torch.kron(C, f)
    return C


def data_err(W, approx, C):
    E = W - approx
    return math.sqrt(float((E @ C * E).sum()) / float((W @ C * W).sum()))


def rank_kw(method):
    return {"max_rank": 6 if method == "cp" else 3, "in_dims": IN_DIMS, "out_dims": OUT_DIMS}


# ---------------------------------------------------------------- data-aware
@pytest.mark.parametrize("method", METHODS)
def test_data_aware_full_covariance_lowers_the_error_on_the_inputs(method, weight, samples):
    C = samples.T @ samples / samples.shape[0]
    plain = decompose(weight, method, **rank_kw(method))
    aware = decompose(weight, method, input_cov=C, **rank_kw(method))
    plain_on_data = data_err(weight, plain.to_dense(), C)
    assert plain.data_error is None
    assert aware.data_error <= plain_on_data + 1e-12, (aware.data_error, plain_on_data)   # never worse
    if method != "tr":   # this covariance is far from Kronecker; TR keeps the plain start here
        assert aware.data_error < plain_on_data
    # The reported data error is the error on the actual samples, ||(W - W~) X|| / ||W X||.
    on_samples = float(torch.linalg.norm(samples @ (weight - aware.to_dense()).T) / torch.linalg.norm(samples @ weight.T))
    assert abs(aware.data_error - on_samples) < 1e-9
    assert aware.rel_error == pytest.approx(float(torch.linalg.norm(weight - aware.to_dense()) / torch.linalg.norm(weight)))
    if method == "svd":   # one tensor holds the inputs: L^-1 absorbed exactly, nothing to refit
        assert "absorbed exactly" in aware.extra["data_aware"]
        assert aware.data_error < 0.95 * plain_on_data
        return
    assert "Kronecker approximation" in aware.extra["data_aware"] and "refit" not in aware.extra
    if method == "tr":
        assert "plain decomposition, which is kept" in aware.extra["data_aware"]
    # The least-squares refit on the full covariance lowers the data error further.
    refit = decompose(weight, method, input_cov=C, refit_sweeps=2, refit_iters=25, **rank_kw(method))
    hist = refit.extra["refit"]
    assert all(b <= a + 1e-12 for a, b in zip(hist, hist[1:])) and hist[-1] < hist[0]
    assert refit.data_error < aware.data_error
    assert refit.data_error < 0.95 * plain_on_data
    assert refit.rel_error < 3 * plain.rel_error      # the ridge keeps the weight near the original


@pytest.mark.parametrize("method", METHODS)
def test_data_aware_kronecker_factors_lower_the_error(method, weight, kron_factors):
    C = kron_all(kron_factors)
    plain = decompose(weight, method, **rank_kw(method))
    aware = decompose(weight, method, input_cov=kron_factors, **rank_kw(method))
    assert aware.data_error < 0.95 * data_err(weight, plain.to_dense(), C)
    assert aware.data_error == pytest.approx(data_err(weight, aware.to_dense(), C), rel=1e-9)
    assert "refit" not in aware.extra
    # No extra tensor: the inverse factors are absorbed into the existing cores.
    assert aware.network == plain.network


@pytest.mark.parametrize("method", ["mpo", "tr", "tucker", "svd"])
def test_data_aware_absorption_is_exact_at_full_rank(method, weight, kron_factors, samples):
    res = decompose(weight, method, in_dims=IN_DIMS, out_dims=OUT_DIMS, input_cov=kron_factors)
    assert res.rel_error < 1e-9 and res.data_error < 1e-9
    if method == "svd":
        full = decompose(weight, "svd", input_cov=samples.T @ samples / 3000)
        assert full.rel_error < 1e-9


@pytest.mark.parametrize("method", ["mpo", "tucker"])
def test_data_aware_bound_holds_in_the_whitened_norm(method, weight, kron_factors):
    res = decompose(weight, method, in_dims=IN_DIMS, out_dims=OUT_DIMS, input_cov=kron_factors, max_rank=2,
                    cov_eps=0.0)
    assert res.data_error > 1e-3
    assert res.data_error <= res.bound() * (1 + 1e-9)


def test_data_aware_bad_covariances(weight):
    kw = {"in_dims": IN_DIMS, "out_dims": OUT_DIMS, "max_rank": 2}
    with pytest.raises(DecompositionError, match=r"input_cov must be a 64x64 matrix; got shape \[8, 8\]"):
        decompose(weight, "mpo", input_cov=torch.eye(8, dtype=torch.float64), **kw)
    with pytest.raises(DecompositionError, match="one factor per input leg"):
        decompose(weight, "mpo", input_cov=[torch.eye(4)] * 2, **kw)
    with pytest.raises(DecompositionError, match="positive diagonal"):
        decompose(weight, "mpo", input_cov=-torch.eye(64, dtype=torch.float64), **kw)
    with pytest.raises(DecompositionError, match="positive semi-definite"):
        bad = torch.eye(64, dtype=torch.float64)
        bad[0, 0] = -5.0
        decompose(weight, "mpo", input_cov=bad, **kw)


# ---------------------------------------------------------------- randomized
def decaying(m, n, seed, rate=0.05):
    g = gen(seed)
    U, _ = torch.linalg.qr(torch.randn(m, min(m, n), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, min(m, n), generator=g, dtype=torch.float64))
    s = torch.exp(-rate * torch.arange(min(m, n), dtype=torch.float64)) + 1e-3
    return (U * s) @ V.T


def test_randomized_svd_factors():
    A = decaying(300, 200, seed=3)
    U, S, Vh = randomized_svd(A, 20, seed=0)
    assert U.shape == (300, 20) and Vh.shape == (20, 200)
    assert torch.allclose(U.T @ U, torch.eye(20, dtype=torch.float64), atol=1e-10)
    s = torch.linalg.svdvals(A)
    assert torch.allclose(S[:10], s[:10], rtol=1e-3)
    err = torch.linalg.norm(A - (U * S) @ Vh) / torch.linalg.norm(A)
    best = torch.sqrt((s[20:] ** 2).sum()) / torch.linalg.norm(A)
    assert best <= err <= 1.05 * best


def test_randomized_svd_method_within_five_percent():
    W = decaying(400, 320, seed=4)
    auto = decompose(W, "svd", max_rank=24)
    exact = decompose(W, "svd", max_rank=24, randomized=False)
    assert auto.extra["randomized"] == ["r"] and exact.extra["randomized"] == []
    assert exact.rel_error <= auto.rel_error <= 1.05 * exact.rel_error
    # The spectrum is partial (leading cap + oversample values), the discarded weight exact.
    assert auto.spectra["r"].numel() == 24 + 10
    assert auto.discarded["r"] == pytest.approx(auto.rel_error, rel=1e-9)
    # Near full rank "auto" stays exact.
    assert decompose(W, "svd", max_rank=200).extra["randomized"] == []


def tt_decaying(seed):
    """A 256x256 weight whose TT unfolding (legs (16,16)->(16,16)) has a decaying spectrum."""
    M = decaying(256, 256, seed=seed)
    T = M.reshape(16, 16, 16, 16).permute(1, 3, 0, 2)   # unfolding axes (i1,o1 | i2,o2) -> (o1,o2,i1,i2)
    return T.reshape(256, 256).contiguous()


@pytest.mark.parametrize("method", ["mpo", "tr", "tucker"])
def test_randomized_tensor_methods_within_five_percent(method):
    W = tt_decaying(seed=5)
    legs = dict(in_dims=[16, 16], out_dims=[16, 16])
    rank = 12 if method != "tucker" else 6
    fast = decompose(W, method, max_rank=rank, randomized=True, **legs)
    exact = decompose(W, method, max_rank=rank, randomized=False, **legs)
    assert fast.extra["randomized"] and not exact.extra["randomized"]
    assert fast.rel_error <= 1.05 * exact.rel_error, (fast.rel_error, exact.rel_error)
    assert fast.rel_error <= fast.bound() * (1 + 1e-9)
    if method == "mpo":
        assert decompose(W, method, max_rank=rank, **legs).extra["randomized"] == ["b1"]   # auto


def test_randomized_rtol_keeps_its_guarantee():
    W = decaying(300, 300, seed=6)
    res = decompose(W, "svd", rtol=0.2, randomized=True)
    exact = decompose(W, "svd", rtol=0.2, randomized=False)
    assert res.extra["randomized"] == ["r"]
    assert res.rel_error <= 0.2 and res.ranks == exact.ranks


def test_randomized_is_seeded():
    W = decaying(300, 260, seed=7)
    a = decompose(W, "svd", max_rank=8, randomized=True, seed=3)
    b = decompose(W, "svd", max_rank=8, randomized=True, seed=3)
    assert torch.equal(a.tensors["U"], b.tensors["U"])


# ---------------------------------------------------------------- trade-off
def test_tradeoff_points_match_direct_decompositions(weight):
    ranks = [1, 2, 4, 8]
    pts = tradeoff(weight, methods=("svd", "tucker", "mpo", "tr", "cp"), ranks={"svd": ranks, "tucker": [1, 2, 3],
                   "mpo": ranks, "tr": [1, 2, 3], "cp": [2, 4]}, in_dims=IN_DIMS, out_dims=OUT_DIMS, n_iter_max=20)
    by = {(p.method, p.rank): p for p in pts}
    assert {m for m, _ in by} == set(METHODS)
    for r in ranks:   # svd: truncations of one SVD equal fresh truncated SVDs
        d = decompose(weight, "svd", max_rank=r)
        assert by[("svd", r)].rel_error == pytest.approx(d.rel_error, rel=1e-9)
        assert by[("svd", r)].params == d.params
    for r in [1, 2, 3]:   # tucker: corners of one HOSVD equal fresh HOSVDs
        d = decompose(weight, "tucker", in_dims=IN_DIMS, out_dims=OUT_DIMS, max_rank=r)
        assert by[("tucker", r)].rel_error == pytest.approx(d.rel_error, rel=1e-9)
        tr = decompose(weight, "tr", in_dims=IN_DIMS, out_dims=OUT_DIMS, max_rank=r)
        assert by[("tr", r)].rel_error == pytest.approx(tr.rel_error, rel=1e-9)
    for r in ranks:   # mpo: TT-rounding of the top-rank TT-SVD; same ranks, error within the TT-SVD bound
        d = decompose(weight, "mpo", in_dims=IN_DIMS, out_dims=OUT_DIMS, max_rank=r)
        p = by[("mpo", r)]
        assert p.ranks == d.ranks and p.params == d.params
        assert p.rel_error <= 1.05 * d.rel_error
    errs = [by[("mpo", r)].rel_error for r in ranks]
    assert all(b <= a + 1e-12 for a, b in zip(errs, errs[1:])) and errs[-1] < errs[0]


def test_tradeoff_with_covariance_reports_data_error(weight, kron_factors):
    seen = []
    pts = tradeoff(weight, methods=("svd", "mpo"), ranks=[2, 4], input_cov=kron_factors,
                   in_dims=IN_DIMS, out_dims=OUT_DIMS, progress=lambda f, msg: seen.append((f, msg)))
    assert seen == [(0.5, "svd done"), (1.0, "mpo done")]
    for p in pts:
        d = decompose(weight, p.method, in_dims=IN_DIMS, out_dims=OUT_DIMS, max_rank=p.rank, input_cov=kron_factors)
        assert p.data_error is not None and p.error == p.data_error
        if p.method == "svd":
            assert p.data_error == pytest.approx(d.data_error, rel=1e-9)


def test_pareto_front_is_the_non_dominated_set(weight):
    pts = tradeoff(weight, methods=("svd", "mpo", "tucker"), ranks=[1, 2, 3, 4, 8], in_dims=IN_DIMS, out_dims=OUT_DIMS)
    front = pareto_front(pts)
    assert front and [p.params for p in front] == sorted(p.params for p in front)
    def dominated(p):
        return any((q.params, q.error) != (p.params, p.error) and q.params <= p.params and q.error <= p.error
                   for q in pts)

    # One point per non-dominated (params, error) pair (exact duplicates, e.g. two ranks capped at
    # the same leg sizes, appear once).
    assert sorted({(p.params, p.error) for p in pts if not dominated(p)}) == [(p.params, p.error) for p in front]
    assert len(front) < len(pts)
    with pytest.raises(DecompositionError, match="pareto_front ranks points by"):
        pareto_front(pts, by="speed")
    with pytest.raises(DecompositionError, match="unknown decomposition method 'pca'"):
        tradeoff(weight, methods=("pca",))


@pytest.mark.parametrize("shape,deficient", [((6, 40), False), ((6, 40), True), ((40, 6), False), ((12, 12), False)])
def test_exact_svd_of_rectangular_matrices_matches_lapack(shape, deficient):
    from tnviz.decompose.randomized import exact_svd

    A = torch.randn(*shape, generator=gen(8), dtype=torch.float64)
    if deficient:   # rank 3 of 6: CholeskyQR2 must hand over to Householder
        A = torch.randn(shape[0], 3, generator=gen(9), dtype=torch.float64) @ A[:3]
    U, S, Vh, SVh = exact_svd(A)
    k = min(shape)
    if SVh is not None:
        assert torch.allclose(SVh, S[:, None] * Vh, atol=1e-12)
    assert U.shape == (shape[0], k) and Vh.shape == (k, shape[1])
    assert torch.allclose(S, torch.linalg.svdvals(A), rtol=1e-12, atol=1e-12 * float(S[0]))
    assert torch.allclose((U * S) @ Vh, A, atol=1e-12)
    assert torch.allclose(U.T @ U, torch.eye(k, dtype=torch.float64), atol=1e-12)
    kept = 3 if deficient else k      # right vectors of zero singular values are arbitrary
    assert torch.allclose(Vh[:kept] @ Vh[:kept].T, torch.eye(kept, dtype=torch.float64), atol=1e-10)


def test_forced_randomized_covers_a_short_side_exactly():
    # First TT unfolding 8 x 1024: the sketch would span the whole short side, so the Gram path
    # is used; keeping every vector must reconstruct exactly, and a known TT rank is recovered.
    import tnviz
    import numpy as np

    W = torch.randn(8, 1024, generator=gen(9), dtype=torch.float64)
    res = decompose(W, "mpo", in_dims=[4, 256], out_dims=[2, 4], randomized=True)
    assert res.extra["randomized"] == ["b1"] and res.rel_error < 1e-12
    net = tnviz.mpo([4, 256], [2, 4], ranks=3)
    K = torch.as_tensor(np.ascontiguousarray(tnviz.to_dense(net, tnviz.random_tensors(net, seed=3))))
    known = decompose(K, "mpo", in_dims=[4, 256], out_dims=[2, 4], max_rank=3, randomized=True)
    assert known.rel_error < 1e-9 and known.ranks == {"b1": 3}
    exact = torch.linalg.svdvals(K.reshape(2, 4, 4, 256).permute(2, 0, 3, 1).reshape(8, 1024))
    got = known.spectra["b1"]
    assert torch.allclose(got[:3], exact[:3], rtol=1e-10)
    # Documented limit of the Gram path: values below ~sqrt(eps)·s_max are only that small.
    assert float(got[3:].max()) < 1e-6 * float(exact[0]) and float(exact[3:].max()) < 1e-12
