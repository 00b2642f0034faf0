"""The neuron-order search (tnviz.decompose.order), checked against dense reconstructions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tnviz.contract import to_dense
from tnviz.decompose import decompose
from tnviz.decompose.order import check_permutation, search_order, tt_error, whiten
from tnviz.errors import DecompositionError


def _kron(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    factors = [torch.randn(o, i, dtype=torch.float64, generator=g) for o, i in shapes]
    W = factors[0]
    for F in factors[1:]:
        W = torch.kron(W, F)
    return W, torch.randperm(W.shape[0], generator=g)


def _tt_svd_error(M, dims, ranks):
    """Reference in numpy: the TT-SVD of the rows of ``M`` factorized as ``dims`` (the columns one
    more core), truncated at ``ranks``, contracted back densely; the relative error."""
    M = np.asarray(M, dtype=np.float64)
    C, r_prev, cores = M.reshape(-1), 1, []
    for d, r in zip(dims, ranks):
        U, S, Vh = np.linalg.svd(C.reshape(r_prev * d, -1), full_matrices=False)
        r = min(r, len(S))
        cores.append((U[:, :r], r_prev))
        C, r_prev = S[:r, None] * Vh[:r], r
    for U, before in reversed(cores):
        C = (U @ C).reshape(before, -1)
    return float(np.linalg.norm(C.reshape(M.shape) - M) / np.linalg.norm(M))


def _dense_error(W, cov, ranks):
    """The data error of decompose()'s data-aware MPO of a 48x24 weight with legs (4, 4, 3) x (4, 6),
    every input leg on the last core (the pipeline's placement), at bond caps ``ranks``."""
    dec = decompose(W, "mpo", in_dims=(4, 6), out_dims=(4, 4, 3), in_cores=(2, 2), out_cores=(0, 0, 1),
                    max_rank={"b1": ranks[0], "b2": ranks[1]}, input_cov=cov)
    D = to_dense(dec.network, dec.tensors).reshape(W.shape)
    M, Mhat = whiten(W, cov), whiten(D, cov)
    return float(np.linalg.norm((M - Mhat).numpy()) / np.linalg.norm(M.numpy()))


@pytest.mark.parametrize("shapes, ranks", [
    (((6, 3), (4, 5)), (3, 15)),                       # two factors: first unfolding rank 3 of 6
    (((4, 2), (4, 2), (4, 2)), (2, 4, 8)),             # three factors
    (((3, 2), (5, 3), (4, 2)), (2, 6, 12)),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_shuffled_kronecker_product_is_recovered(shapes, ranks, seed):
    W, shuffle = _kron(shapes, seed)
    out_dims, in_dims = tuple(o for o, _ in shapes), tuple(i for _, i in shapes)
    shuffled = W[shuffle]
    before = _tt_svd_error(shuffled, out_dims, ranks)
    found = search_order(shuffled, out_dims, ranks, in_dims=in_dims, seed=seed)
    after = _tt_svd_error(shuffled[list(found.perm)], out_dims, ranks)
    assert before > 0.2                  # the stored order hides the structure
    assert after < 1e-6                  # the order found exposes it: exact at the true ranks
    assert found.error_before == pytest.approx(before, abs=1e-9)
    assert found.error_after == pytest.approx(after, abs=1e-7)  # scored from Gram eigenvalues: ~sqrt(eps) absolute
    assert sorted(found.perm) == list(range(W.shape[0]))


def test_tt_error_is_the_data_error_of_the_inputs_last_mpo():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(48, 24, dtype=torch.float64, generator=g)
    X = torch.randn(24, 24, dtype=torch.float64, generator=g) @ torch.randn(24, 300, dtype=torch.float64, generator=g)
    C = X @ X.T / 300
    ranks = (5, 10)  # cores [o1 o2], [o3], [i1 i2]: the rows are factorized as (16, 3)
    M = whiten(W, C)
    assert tt_error(M, (16, 3), ranks) == pytest.approx(_dense_error(W, C, ranks), rel=1e-6)
    perm = torch.randperm(48, generator=g)
    assert tt_error(M[perm], (16, 3), ranks) == pytest.approx(_dense_error(W[perm], C, ranks), rel=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_never_worse_than_the_stored_order(seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(32, 12, dtype=torch.float64, generator=g)
    C = torch.eye(12, dtype=torch.float64) + 0.3
    found = search_order(W, (8, 4), (3, 12), input_cov=C, in_dims=(3, 4), seed=seed, restarts=1)
    M = whiten(W, C)
    assert found.error_after <= found.error_before + 1e-12
    assert found.error_after == pytest.approx(tt_error(M[list(found.perm)], (8, 4), (3, 12)), rel=1e-9)
    assert found.error_before == pytest.approx(tt_error(M, (8, 4), (3, 12)), rel=1e-12)


def test_structure_already_in_stored_order_keeps_identity():
    W, _ = _kron(((4, 2), (6, 3)), 0)            # exact in the stored order: nothing to gain
    found = search_order(W, (4, 6), (2, 6), in_dims=(2, 3))
    assert found.identity and found.start == "identity" and found.error_after < 1e-7


def test_deterministic_for_a_seed():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(24, 10, dtype=torch.float64, generator=g)
    a = search_order(W, (6, 4), (3, 10), seed=7, restarts=2)
    b = search_order(W, (6, 4), (3, 10), seed=7, restarts=2)
    assert a.perm == b.perm and a.error_after == b.error_after


def test_bad_input_named():
    W = torch.randn(24, 10, dtype=torch.float64)
    with pytest.raises(DecompositionError, match="product is the index size 24"):
        search_order(W, (5, 4), (3, 10))
    with pytest.raises(DecompositionError, match="one positive rank per bond"):
        search_order(W, (6, 4), (3,))
    with pytest.raises(DecompositionError, match="2-D weight"):
        search_order(torch.randn(2, 3, 4), (2,), (1,))
    assert check_permutation([2, 0, 1], 3) == (2, 0, 1)
    with pytest.raises(DecompositionError, match="each of the 4 indices once; got 3 entries"):
        check_permutation([0, 1, 2], 4)
    with pytest.raises(DecompositionError, match="0..2 exactly once; 1 is repeated"):
        check_permutation([0, 1, 1], 3)
    with pytest.raises(DecompositionError, match="0..2 exactly once; 7 is out of range"):
        check_permutation([0, 7, 1], 3)
    assert math.isfinite(tt_error(W, (6, 4), (3, 10)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_noisy_shuffled_kronecker_product_is_recovered_to_the_noise(seed):
    W, shuffle = _kron(((4, 2), (4, 2), (4, 2)), seed)
    g = torch.Generator().manual_seed(100 + seed)
    noise = torch.randn(W.shape, dtype=torch.float64, generator=g)
    W = W + 1e-3 * noise * (W.norm() / noise.norm())   # 0.1% relative noise
    found = search_order(W[shuffle], (4, 4, 4), (2, 4, 8), in_dims=(2, 2, 2), seed=seed)
    assert found.error_before > 0.3 and found.error_after < 2e-3
    assert found.error_after == pytest.approx(_tt_svd_error(W[shuffle][list(found.perm)], (4, 4, 4), (2, 4, 8)), abs=1e-7)
