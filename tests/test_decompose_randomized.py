"""Randomized and exact SVDs (tnviz.decompose.randomized): accuracy against LAPACK, the energy
rule of randomized="auto", seeding, the short-side paths."""
from __future__ import annotations

import pytest
import torch

from tnviz.decompose import decompose
from tnviz.decompose.randomized import randomized_svd


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def gen(seed):
    return torch.Generator().manual_seed(seed)


def decaying(m, n, seed, rate=0.05):
    g = gen(seed)
    U, _ = torch.linalg.qr(torch.randn(m, min(m, n), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, min(m, n), generator=g, dtype=torch.float64))
    s = torch.exp(-rate * torch.arange(min(m, n), dtype=torch.float64)) + 1e-3
    return (U * s) @ V.T


def tt_decaying(seed):
    """A 256x256 weight whose TT unfolding (legs (16,16)->(16,16)) has a decaying spectrum."""
    M = decaying(256, 256, seed=seed)
    T = M.reshape(16, 16, 16, 16).permute(1, 3, 0, 2)   # unfolding axes (i1,o1 | i2,o2) -> (o1,o2,i1,i2)
    return T.reshape(256, 256).contiguous()


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


# ---------------------------------------------------------------- the energy rule of randomized="auto"
def with_spectrum(n, s, seed):
    """An ``n x n`` matrix with singular values ``s`` in a random orthogonal basis."""
    g = gen(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (U * s) @ V.T


def spectrum(kind, n):
    k = torch.arange(n, dtype=torch.float64)
    return {"exp/300": torch.exp(-k / 300), "exp/100": torch.exp(-k / 100), "pow0.3": (k + 1) ** -0.3,
            "pow0.5": (k + 1) ** -0.5}[kind]


def captured(res) -> float:
    return 1.0 - res.rel_error ** 2


ENERGY_CASES = [(512, "exp/300", 16), (512, "exp/100", 32), (768, "pow0.3", 32), (1024, "exp/300", 32),
                (1024, "pow0.5", 16)]


@pytest.mark.parametrize("n,kind,rank", ENERGY_CASES)
def test_auto_captures_within_two_percent_of_the_exact_energy(n, kind, rank):
    """Realistic decaying spectra: the randomized SVD "auto" picks captures at least 98% of the
    energy (1 - err^2) of the exact truncated SVD; two plain power iterations, the old default,
    do not on these (non-vacuous)."""
    s = spectrum(kind, n)
    W = with_spectrum(n, s, seed=n + rank)
    auto = decompose(W, "svd", max_rank=rank)
    exact = decompose(W, "svd", max_rank=rank, randomized=False)
    assert auto.extra["randomized"] == ["r"] and "randomized SVD on r" in auto.algorithm
    assert exact.extra["randomized"] == [] and exact.algorithm == "truncated SVD; exact SVDs"
    assert captured(exact) == pytest.approx(float((s[:rank] ** 2).sum() / (s ** 2).sum()), rel=1e-9)
    assert captured(auto) >= 0.98 * captured(exact), (captured(auto), captured(exact))
    assert captured(auto) <= captured(exact) * (1 + 1e-9)
    U, S, _ = randomized_svd(W, rank + 10, power_iters=2, seed=0)
    old = float((S[:rank] ** 2).sum() / (s ** 2).sum())
    if kind != "pow0.5":
        assert old < 0.98 * captured(exact)


def test_auto_tt_svd_keeps_the_energy_on_a_decaying_unfolding():
    """TT-SVD at bond 32 of a 1024² weight whose first unfolding (32·32 x 32·32) decays slowly."""
    n, rank = 1024, 32
    M = with_spectrum(n, spectrum("exp/300", n), seed=1)
    W = M.reshape(32, 32, 32, 32).permute(1, 3, 0, 2).reshape(n, n).contiguous()   # unfolding -> (o1,o2,i1,i2)
    legs = dict(in_dims=[32, 32], out_dims=[32, 32])
    auto = decompose(W, "mpo", max_rank=rank, **legs)
    exact = decompose(W, "mpo", max_rank=rank, randomized=False, **legs)
    assert auto.extra["randomized"] == ["b1"] and auto.extra["krylov_steps"]["b1"] >= 2
    assert "randomized SVD on b1 (b1: " in auto.algorithm and "Krylov steps" in auto.algorithm
    assert captured(auto) >= 0.98 * captured(exact)
    assert auto.rel_error <= auto.bound() * (1 + 1e-9)


def test_auto_falls_back_to_exact_when_the_energy_does_not_converge():
    """A flat spectrum: within half the short side the Krylov basis cannot pin down the top 20
    singular values to the energy target, so "auto" runs the exact SVD and says so."""
    W = torch.randn(256, 256, generator=gen(11), dtype=torch.float64)
    auto = decompose(W, "svd", max_rank=20)
    exact = decompose(W, "svd", max_rank=20, randomized=False)
    assert auto.extra["randomized"] == [] and auto.extra["randomized_fallback"] == ["r"]
    assert "fell short of the energy target" in auto.algorithm
    assert auto.rel_error == pytest.approx(exact.rel_error, abs=1e-12)
    # Forced, it keeps the randomized result (and says how many steps it took).
    forced = decompose(W, "svd", max_rank=20, randomized=True)
    assert forced.extra["randomized"] == ["r"] and "randomized_fallback" not in forced.extra
    assert forced.rel_error >= exact.rel_error - 1e-12


def test_fixed_krylov_steps_and_bad_values():
    from tnviz.errors import DecompositionError

    W = with_spectrum(512, spectrum("exp/100", 512), seed=2)
    res = decompose(W, "svd", max_rank=16, power_iters=1)
    assert res.extra["krylov_steps"] == {"r": 1}
    more = decompose(W, "svd", max_rank=16, power_iters=4)
    assert more.extra["krylov_steps"] == {"r": 4} and more.rel_error <= res.rel_error + 1e-12
    with pytest.raises(DecompositionError, match="power_iters .* non-negative integer or None; got -1"):
        decompose(W, "svd", max_rank=16, power_iters=-1)


def test_block_krylov_svd_is_a_projection_with_growing_energy():
    from tnviz.decompose.randomized import block_krylov_svd

    A = with_spectrum(400, spectrum("pow0.3", 400), seed=3)[:, :300]
    res = block_krylov_svd(A, 20, 10, seed=0)
    assert res.converged and res.gap is not None and res.gap <= 0.005
    assert all(b >= a * (1 - 1e-12) for a, b in zip(res.energies, res.energies[1:]))
    K = res.U.shape[1]
    assert K == 20 * (res.steps + 1)
    assert torch.allclose(res.U.T @ res.U, torch.eye(K, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(res.SVh, res.U.T @ A, atol=1e-10)                    # S·Vh = U^T A exactly
    assert torch.allclose(res.S[:, None] * res.Vh, res.SVh, atol=1e-10)
    s = torch.linalg.svdvals(A)
    assert float((res.S[:10] ** 2).sum()) >= (1 - 0.005) * float((s[:10] ** 2).sum())
    assert bool((res.S[:10] <= s[:10] * (1 + 1e-10)).all())                    # Ritz values are lower bounds
