"""Tensor ring (tnviz.decompose.tr): exact recovery of known ring ranks."""
from __future__ import annotations

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
