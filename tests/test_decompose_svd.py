"""Plain truncated SVD (tnviz.decompose.svd): spectra and discarded weight against LAPACK."""
from __future__ import annotations

import math

import pytest
import torch

from tnviz.decompose import decompose


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def gaussian(out, inp, seed=0, dtype=torch.float64):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed), dtype=dtype)


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
