"""CP-ALS (tnviz.decompose.cp): known ranks, the error history, the MTTKRP."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tnviz
from tnviz.decompose import decompose


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def dense_of(net, seed=0, dtype=torch.float64):
    """A weight with exactly the structure of ``net`` (random seeded tensors, contracted)."""
    W = tnviz.to_dense(net, tnviz.random_tensors(net, seed=seed))
    return torch.as_tensor(np.ascontiguousarray(W), dtype=dtype)


def gaussian(out, inp, seed=0, dtype=torch.float64):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dims,rank,seed", [(([4, 4], [4, 4]), 4, 1), (([6, 5], [4, 3]), 5, 2), (([5, 6], [7]), 3, 2)])
def test_cp_als_reaches_known_rank(dims, rank, seed):
    net = tnviz.cp(dims[0], dims[1], rank)
    W = dense_of(net, seed=seed)
    res = decompose(W, "cp", in_dims=dims[0], out_dims=dims[1], max_rank=rank)
    assert res.rel_error < 1e-9
    hist = res.extra["history"]
    assert res.extra["converged"] and len(hist) == res.extra["iterations"]
    assert hist[-1] < hist[0]
    # Seeded: the same call gives the same result.
    again = decompose(W, "cp", in_dims=dims[0], out_dims=dims[1], max_rank=rank)
    assert again.extra["history"] == hist


def test_cp_history_falls_on_a_full_rank_weight():
    W = gaussian(16, 16, seed=7)
    res = decompose(W, "cp", in_dims=[4, 4], out_dims=[4, 4], max_rank=6, n_iter_max=30, tol=0.0)
    hist = res.extra["history"]
    assert len(hist) == 30 and not res.extra["converged"]
    assert all(b <= a + 1e-12 for a, b in zip(hist, hist[1:]))   # ALS never increases the error
    assert abs(hist[-1] - res.rel_error) < 1e-9                   # the history is the measured error
    assert list(res.spectra["r"]) == sorted(res.spectra["r"], reverse=True)


def test_cp_half_split_mttkrp_equals_the_direct_one():
    """CP-ALS finishes each MTTKRP from one contraction of T with the other half's factors."""
    from tnviz.decompose.cp import khatri_rao, mttkrp, partial_mttkrp

    g = torch.Generator().manual_seed(4)
    dims, R = (3, 4, 2, 5, 3), 6
    T = torch.randn(*dims, dtype=torch.float64, generator=g)
    factors = [torch.randn(d, R, dtype=torch.float64, generator=g) for d in dims]
    h = len(dims) // 2
    T_mat = T.reshape(math.prod(dims[:h]), -1)
    left = (T_mat @ khatri_rao(factors[h:])).reshape(*dims[:h], R)
    right = (T_mat.mT @ khatri_rao(factors[:h])).reshape(*dims[h:], R)
    for k in range(len(dims)):
        got = partial_mttkrp(left, factors[:h], k) if k < h else partial_mttkrp(right, factors[h:], k - h)
        assert torch.allclose(got, mttkrp(T, factors, k), atol=1e-12, rtol=0), k
