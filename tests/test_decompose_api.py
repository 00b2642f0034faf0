"""The entry point ``decompose`` over the registry: every method against dense references
(no truncation is exact, error bound and monotonicity), conv kernels, dtypes, bad input."""
from __future__ import annotations

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


@pytest.mark.parametrize("method", SVD_BASED)
def test_no_truncation_is_exact(method):
    W = gaussian(24, 30, seed=8)
    res = decompose(W, method, in_dims=[5, 6], out_dims=[4, 6])
    assert res.rel_error < 1e-12
    assert res.to_weight().shape == W.shape
    for name, shape in zip(res.network.tensor_names, res.network.shapes):
        assert tuple(res.tensors[name].shape) == shape


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
