"""Truncation rules (tnviz.decompose.truncation) through every method: rtol's guarantee, energy
per bond, target_params, per-bond max_rank."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tnviz
from tnviz.decompose import DECOMPOSITIONS, decompose

METHODS = list(DECOMPOSITIONS)
SVD_BASED = ["mpo", "tr", "tucker", "svd"]


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def dense_of(net, seed=0, dtype=torch.float64):
    """A weight with exactly the structure of ``net`` (random seeded tensors, contracted)."""
    W = tnviz.to_dense(net, tnviz.random_tensors(net, seed=seed))
    return torch.as_tensor(np.ascontiguousarray(W), dtype=dtype)


def gaussian(out, inp, seed=0, dtype=torch.float64):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(seed), dtype=dtype)


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
