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
