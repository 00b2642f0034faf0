"""Data-aware decompositions (tnviz.decompose.data_aware) against dense references."""
from __future__ import annotations

import math

import pytest
import torch

from tnviz.decompose import DECOMPOSITIONS, decompose
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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method,options", [("svd", {"max_rank": 5}), ("svd", {"max_rank": 47}),
                                            ("mpo", {"in_dims": [64], "out_dims": [4, 12], "max_rank": 4}),
                                            ("tucker", {"in_dims": [64], "out_dims": [48], "max_rank": 5})])
def test_full_covariance_data_error_from_the_whitened_residual_equals_the_quadratic_form(method, options, dtype,
                                                                                         weight):
    """With every input leg on one tensor the data error is read from ||W·L - D|| (no (out, in)·(in, in)
    products): the same number as tr(E C E^T) / tr(W C W^T) on the unregularised covariance, also
    for a rank-deficient covariance, where the Cholesky factor's regularisation δ·I is what it corrects."""
    g = gen(7)
    X = torch.randn(40, 64, generator=g, dtype=torch.float64) * (0.7 ** torch.arange(64, dtype=torch.float64))
    C = X.T @ X / 40  # rank 40 of 64
    res = decompose(weight.to(dtype), method, input_cov=C.to(dtype), **options)
    assert "absorbed exactly" in res.extra["data_aware"]
    ref = data_err(weight.to(dtype).double(), res.to_dense().double(), C)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert res.data_error == pytest.approx(ref, rel=tol, abs=tol)


@pytest.mark.parametrize("rows,n", [(7, 300), (300, 7), (33, 1025)])
def test_times_lower_equals_the_full_product(rows, n):
    """M·L by column blocks that skip L's zero upper triangle: the product of the full matrices."""
    from tnviz.decompose.data_aware import times_lower

    g = gen(11)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    L = torch.linalg.cholesky(A @ A.T + n * torch.eye(n, dtype=torch.float64))
    M = torch.randn(rows, n, generator=g, dtype=torch.float64)
    ref = M @ L
    assert float((times_lower(M, L) - ref).abs().max()) <= 1e-13 * float(ref.abs().max())
