"""Decompositions against dense references: exact recovery of known ranks, error bounds,
truncation rules, conv kernels, bad input.  Data-aware, randomized and trade-off tests live in
test_decompose_data.py."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tnviz
from tnviz.decompose import DECOMPOSITIONS, Decomposition, decompose
from tnviz.errors import DecompositionError, RankError, TnvizError

METHODS = list(DECOMPOSITIONS)
SVD_BASED = ["mpo", "tr", "tucker", "svd"]


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def dense_of(net, seed=0, dtype=torch.float64):
    """A weight with exactly the structure of ``net`` (random seeded tensors, contracted)."""
    W = tnviz.to_dense(net, tnviz.random_tensors(net, seed=seed))
    return torch.as_tensor(np.ascontiguousarray(W), dtype=dtype)


def gaussian(out, inp, seed=0, dtype=torch.float64):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_registry_keys_are_the_contract():
    assert METHODS == ["mpo", "tr", "tucker", "cp", "svd"]
    W = gaussian(12, 8)
    res = DECOMPOSITIONS["svd"](W, max_rank=3)
    assert isinstance(res, Decomposition) and res.method == "svd" and res.ranks == {"r": 3}


# ---------------------------------------------------------------- exact recovery of known ranks
def test_mpo_recovers_known_tt_ranks_unequal_legs():
    net = tnviz.mpo([4, 3, 5], [2, 2, 2, 3], ranks=[3, 4, 2])
    W = dense_of(net, seed=1)
    exact = decompose(W, "mpo", in_dims=[4, 3, 5], out_dims=[2, 2, 2, 3], max_rank=[3, 4, 2])
    assert exact.rel_error < 1e-9
    assert exact.ranks == {"b1": 3, "b2": 4, "b3": 2}
    # A tiny rtol finds the true ranks by itself.
    found = decompose(W, "mpo", in_dims=[4, 3, 5], out_dims=[2, 2, 2, 3], rtol=1e-10)
    assert found.ranks == {"b1": 3, "b2": 4, "b3": 2} and found.rel_error < 1e-9
    # The network is the builder's: same structure, same index names.
    assert found.network.tensors == net.tensors
    assert torch.allclose(found.to_dense(), W, atol=1e-9 * float(W.norm()))


def test_mpo_leg_placement_in_cores_out_cores():
    # Inputs on the first core, outputs on the second: a rank-3 matrix factorization.
    net = tnviz.mpo([4, 6], [3, 5], ranks=3, in_cores=[0, 0], out_cores=[1, 1])
    W = dense_of(net, seed=2)
    res = decompose(W, "mpo", in_dims=[4, 6], out_dims=[3, 5], in_cores=[0, 0], out_cores=[1, 1], max_rank=3)
    assert res.network.tensors == net.tensors
    assert res.rel_error < 1e-9
    # The default placement (one input and one output leg per core) cannot hold it at rank 3.
    other = decompose(W, "mpo", in_dims=[4, 6], out_dims=[3, 5], max_rank=3)
    assert other.network.tensors != net.tensors and other.rel_error > 1e-3


def test_tr_recovers_known_ring_ranks():
    net = tnviz.tensor_ring([4, 5], [3, 4], ranks=[3, 2])   # b1 = 3, closing bond b2 = 2
    W = dense_of(net, seed=3)
    res = decompose(W, "tr", in_dims=[4, 5], out_dims=[3, 4], max_rank=[3, 2])
    assert res.rel_error < 1e-9
    assert res.ranks == {"b1": 3, "b2": 2}
    # Three cores: TR-SVD recovers the tensor exactly and finds the generating first split
    # r0·r1 = 2·2; the inner bond may need more than the generating rank (the SVD basis mixes
    # r0 and r1, a known property of TR-SVD), but never more than r0·r1·r2.
    net3 = tnviz.tensor_ring([3, 4, 5], [2, 3, 2], ranks=2)
    W3 = dense_of(net3, seed=4)
    res3 = decompose(W3, "tr", in_dims=[3, 4, 5], out_dims=[2, 3, 2], rtol=1e-10)
    assert res3.rel_error < 1e-9
    assert res3.extra["ring_split"] == (2, 2) and res3.ranks["b1"] == 2 and res3.ranks["b3"] == 2
    assert res3.ranks["b2"] <= 8


def test_tucker_recovers_known_multilinear_ranks():
    net = tnviz.tucker([6, 5], [4, 7], ranks=[2, 3, 4, 2])   # ranks in order outputs, inputs
    W = dense_of(net, seed=5)
    res = decompose(W, "tucker", in_dims=[6, 5], out_dims=[4, 7], max_rank=[2, 3, 4, 2])
    assert res.rel_error < 1e-9 and res.ranks == {"r1": 2, "r2": 3, "r3": 4, "r4": 2}
    hooi = decompose(W, "tucker", in_dims=[6, 5], out_dims=[4, 7], max_rank=[2, 3, 4, 2], hooi_iters=2)
    assert hooi.rel_error < 1e-9 and len(hooi.extra["hooi_history"]) == 2


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


@pytest.mark.parametrize("method", SVD_BASED)
def test_no_truncation_is_exact(method):
    W = gaussian(24, 30, seed=8)
    res = decompose(W, method, in_dims=[5, 6], out_dims=[4, 6])
    assert res.rel_error < 1e-12
    assert res.to_weight().shape == W.shape
    for name, shape in zip(res.network.tensor_names, res.network.shapes):
        assert tuple(res.tensors[name].shape) == shape


# ---------------------------------------------------------------- spectra, bounds, monotonicity
def test_spectra_are_before_truncation_and_discarded_matches():
    W = gaussian(40, 30, seed=9)
    res = decompose(W, "svd", max_rank=5)
    s = torch.linalg.svdvals(W)
    assert res.spectra["r"].dtype == torch.float64 and res.spectra["r"].device.type == "cpu"
    assert torch.allclose(res.spectra["r"], s, rtol=1e-10)
    expect = math.sqrt(float((s[5:] ** 2).sum())) / float(W.norm())
    assert abs(res.discarded["r"] - expect) < 1e-12
    assert abs(res.rel_error - expect) < 1e-10          # Eckart-Young: the SVD error is exactly the tail
    mpo = decompose(W, "mpo", in_dims=[5, 6], out_dims=[5, 8], max_rank=3)
    assert set(mpo.spectra) == set(mpo.ranks) == {"b1"}
    assert mpo.spectra["b1"].numel() == min(5 * 5, 6 * 8)   # the full first unfolding spectrum


@pytest.mark.parametrize("method", SVD_BASED)
def test_error_never_above_discarded_bound(method):
    W = gaussian(36, 48, seed=10)
    ranks = [1, 2, 3] if method == "tucker" else [1, 2, 3, 5, 8]   # Tucker legs are at most 4
    for rank in ranks:
        res = decompose(W, method, in_dims=[4, 3, 4], out_dims=[3, 3, 4], max_rank=rank)
        assert res.rel_error > 1e-3                        # non-vacuous: something was cut
        assert res.rel_error <= res.bound() * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize("method", SVD_BASED)
def test_error_non_increasing_as_rank_grows(method):
    W = gaussian(36, 48, seed=11)
    errors = [decompose(W, method, in_dims=[4, 3, 4], out_dims=[3, 3, 4], max_rank=r).rel_error
              for r in (1, 2, 3, 4, 6, 9, 12, 16)]
    assert errors[0] > errors[-1]
    assert all(b <= a + 1e-10 for a, b in zip(errors, errors[1:])), errors


# ---------------------------------------------------------------- truncation rules
@pytest.mark.parametrize("method", SVD_BASED)
@pytest.mark.parametrize("rtol", [0.05, 0.3, 0.6])
def test_rtol_guarantee(method, rtol):
    # Low-rank structure plus noise, so that the thresholds actually cut.
    legs = dict(in_dims=[4, 4, 4], out_dims=[4, 3, 4])
    build = {"mpo": tnviz.mpo, "tr": tnviz.tensor_ring}.get(method, tnviz.tucker)
    structured = dense_of(build([4, 4, 4], [4, 3, 4], ranks=2), seed=12)
    W = structured + 0.02 * gaussian(48, 64, seed=12) * float(structured.norm()) / math.sqrt(48 * 64)
    res = decompose(W, method, rtol=rtol, **legs)
    full = decompose(W, method, **legs)
    assert res.rel_error <= rtol
    assert res.params < full.params


@pytest.mark.parametrize("method", ["mpo", "tucker", "svd"])
def test_energy_keeps_the_fraction_on_every_bond(method):
    W = gaussian(32, 32, seed=13)
    res = decompose(W, method, in_dims=[4, 8], out_dims=[8, 4], energy=0.8)
    for bond, r in res.ranks.items():
        s2 = res.spectra[bond] ** 2
        kept = float(s2[:r].sum() / s2.sum())
        assert kept >= 0.8
        assert r == 1 or float(s2[: r - 1].sum() / s2.sum()) < 0.8   # smallest such rank


@pytest.mark.parametrize("method", METHODS)
def test_target_params_gives_the_largest_fitting_rank(method):
    W = gaussian(64, 64, seed=14)
    target = 1500
    kw = dict(in_dims=[4, 4, 4], out_dims=[4, 4, 4])
    if method == "cp":
        kw["n_iter_max"] = 5
    res = decompose(W, method, target_params=target, **kw)
    assert res.params <= target
    r = res.extra["uniform_rank"]
    bigger = decompose(W, method, max_rank=r + 1, **kw)
    assert bigger.params > target


def test_per_bond_max_rank_as_dict_and_list():
    W = gaussian(64, 64, seed=15)
    a = decompose(W, "mpo", in_dims=[4, 4, 4], out_dims=[4, 4, 4], max_rank={"b1": 2})
    assert a.ranks == {"b1": 2, "b2": 16}
    b = decompose(W, "mpo", in_dims=[4, 4, 4], out_dims=[4, 4, 4], max_rank=[2, 5])
    assert b.ranks == {"b1": 2, "b2": 5}


# ---------------------------------------------------------------- conv kernels, dtypes
@pytest.mark.parametrize("method", METHODS)
def test_conv_kernels(method):
    net = tnviz.conv_tucker(8, 4, 3, ranks=[3, 2, 2, 2])
    K = dense_of(net, seed=16).reshape(8, 4, 3, 3)
    kw = {"max_rank": 4} if method == "cp" else {}
    res = decompose(K, method, **kw)
    assert res.to_weight().shape == (8, 4, 3, 3)
    assert set(res.network.inputs) == {"cin", "kh", "kw"} and res.network.outputs == ("cout",)
    if method == "tucker":
        assert res.network.tensors == tnviz.conv_tucker(8, 4, 3, ranks=[8, 4, 3, 3]).tensors
    if method == "cp":
        assert res.network.tensors == tnviz.conv_cp(8, 4, 3, rank=4).tensors
        assert res.rel_error < 0.9
    else:
        assert res.rel_error < 1e-9
        assert torch.allclose(res.to_weight(), K, atol=1e-9)
    # Truncated Tucker at the true ranks recovers it exactly.
    if method == "tucker":
        t = decompose(K, "tucker", max_rank=[3, 2, 2, 2])
        assert t.rel_error < 1e-9 and t.params < K.numel()


@pytest.mark.parametrize("method", METHODS)
def test_float32_stays_float32(method):
    W = gaussian(16, 16, seed=17, dtype=torch.float32)
    res = decompose(W, method, in_dims=[4, 4], out_dims=[4, 4], max_rank=4)
    assert all(t.dtype == torch.float32 for t in res.tensors.values())
    assert 0 < res.rel_error < 1


def test_half_precision_is_upcast():
    W = gaussian(16, 16, seed=17, dtype=torch.float32).to(torch.bfloat16)
    res = decompose(W, "svd", max_rank=4)
    assert res.extra["upcast_from"] == "torch.bfloat16"
    assert res.tensors["U"].dtype == torch.float32


# ---------------------------------------------------------------- bad input
def test_unknown_method_lists_the_registry():
    with pytest.raises(DecompositionError, match=r"choose one of \['mpo', 'tr', 'tucker', 'cp', 'svd'\]"):
        decompose(gaussian(4, 4), "hosvd")


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"max_rank": 2, "rtol": 0.1}, RankError, "at most one truncation"),
        ({"max_rank": 0}, RankError, "max_rank must be a positive integer; got 0"),
        ({"max_rank": [2, 0]}, RankError, "positive integer; got 0"),
        ({"max_rank": [2, 2, 2]}, RankError, "one value per bond"),
        ({"max_rank": {"b9": 2}}, RankError, "bonds of the network"),
        ({"rtol": 1.5}, RankError, "rtol is a relative error"),
        ({"energy": 0.0}, RankError, "energy is a kept fraction"),
        ({"target_params": 3}, RankError, "at least rank 1"),
        ({"in_dims": [3, 5]}, DecompositionError, "in_dims must multiply to in_features=16"),
        ({"randomized": "yes"}, DecompositionError, "randomized must be"),
        ({"hooi_iters": 2}, DecompositionError, "unknown option 'hooi_iters'"),
        ({"in_cores": [0, 0], "out_cores": [0, 5]}, DecompositionError, "core positions"),
    ],
)
def test_bad_arguments_give_clear_errors(kwargs, error, match):
    W = gaussian(16, 16)
    base = {"in_dims": [4, 4], "out_dims": [4, 4]}
    with pytest.raises(error, match=match):
        decompose(W, "mpo", **{**base, **kwargs})


def test_bad_weights():
    with pytest.raises(DecompositionError, match=r"2-D .* got shape \[5\]"):
        decompose(torch.ones(5), "svd")
    with pytest.raises(DecompositionError, match="floating-point"):
        decompose(torch.ones(4, 4, dtype=torch.int64), "svd")
    with pytest.raises(DecompositionError, match="torch.Tensor"):
        decompose(np.ones((4, 4)), "svd")
    with pytest.raises(DecompositionError, match="NaN or inf"):
        decompose(torch.full((4, 4), float("nan")), "svd")
    with pytest.raises(RankError, match="CP needs its rank"):
        decompose(gaussian(4, 4), "cp")
    with pytest.raises(DecompositionError, match="in_cores/out_cores"):
        decompose(gaussian(16, 16), "tucker", in_cores=[0, 1])
    # Every error is a TnvizError (one except clause in the CLI and app).
    assert issubclass(DecompositionError, TnvizError) and issubclass(RankError, TnvizError)


def test_import_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, tnviz.decompose; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bond_entropies():
    flat = decompose(torch.eye(16, dtype=torch.float64), "svd")
    assert flat.entropies["r"] == pytest.approx(math.log(16))
    rank_one = torch.outer(torch.arange(1.0, 9.0, dtype=torch.float64), torch.ones(8, dtype=torch.float64))
    assert decompose(rank_one, "svd").entropies["r"] == pytest.approx(0.0, abs=1e-12)
    res = decompose(gaussian(16, 16, seed=18), "mpo", in_dims=[4, 4], out_dims=[4, 4], max_rank=3)
    assert set(res.entropies) == {"b1"} and 0 < res.entropies["b1"] < math.log(16)


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
