"""The result (tnviz.decompose.result): bond entropies, whether it compresses, what ran."""
from __future__ import annotations

import math

import pytest
import torch

from tnviz.decompose import DECOMPOSITIONS, decompose


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def gaussian(out, inp, seed=0, dtype=torch.float64):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_bond_entropies():
    flat = decompose(torch.eye(16, dtype=torch.float64), "svd")
    assert flat.entropies["r"] == pytest.approx(math.log(16))
    rank_one = torch.outer(torch.arange(1.0, 9.0, dtype=torch.float64), torch.ones(8, dtype=torch.float64))
    assert decompose(rank_one, "svd").entropies["r"] == pytest.approx(0.0, abs=1e-12)
    res = decompose(gaussian(16, 16, seed=18), "mpo", in_dims=[4, 4], out_dims=[4, 4], max_rank=3)
    assert set(res.entropies) == {"b1"} and 0 < res.entropies["b1"] < math.log(16)


def test_a_result_says_plainly_when_it_does_not_compress():
    """The reviewer's case: a loose rtol on a flat-spectrum 384x384 weight keeps (nearly) every
    rank, and the MPO holds 152,848 numbers for a 147,456-number matrix.  decompose still returns
    it (the model pipeline keeps such layers dense); the result says so."""
    W = torch.randn(384, 384, generator=torch.Generator().manual_seed(0), dtype=torch.float64) / 20
    res = decompose(W, "mpo", rtol=0.1)
    assert res.params == 152_848 and res.dense_params == 147_456
    assert not res.compresses and res.compression < 1
    assert res.extra["note"] == "does not compress: the network has 152,848 parameters, the dense weight 147,456"
    assert res.summary()["compresses"] is False
    small = decompose(W, "mpo", max_rank=8)
    assert small.compresses and "note" not in small.extra and small.summary()["compresses"] is True


@pytest.mark.parametrize("method", list(DECOMPOSITIONS))
def test_every_result_states_its_algorithm(method):
    W = gaussian(16, 16, seed=3)
    res = decompose(W, method, in_dims=[4, 4], out_dims=[4, 4], max_rank=3)
    expected = {"mpo": "TT-SVD; exact SVDs", "tr": "TR-SVD; exact SVDs", "svd": "truncated SVD; exact SVDs"}
    if method in expected:
        assert res.algorithm == expected[method]
    elif method == "tucker":
        assert res.algorithm.startswith("HOOI from HOSVD, ") and res.algorithm.endswith("; exact SVDs")
    else:
        assert res.algorithm.startswith("CP-ALS, ") and "sweeps" in res.algorithm
    assert res.summary()["algorithm"] == res.algorithm
