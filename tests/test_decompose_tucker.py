"""Tucker (tnviz.decompose.tucker): exact recovery, HOOI against HOSVD and TensorLy, per-mode
ranks for a parameter budget and for rtol."""
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


def test_tucker_recovers_known_multilinear_ranks():
    net = tnviz.tucker([6, 5], [4, 7], ranks=[2, 3, 4, 2])   # ranks in order outputs, inputs
    W = dense_of(net, seed=5)
    res = decompose(W, "tucker", in_dims=[6, 5], out_dims=[4, 7], max_rank=[2, 3, 4, 2])
    assert res.rel_error < 1e-9 and res.ranks == {"r1": 2, "r2": 3, "r3": 4, "r4": 2}
    hooi = decompose(W, "tucker", in_dims=[6, 5], out_dims=[4, 7], max_rank=[2, 3, 4, 2], hooi_iters=2)
    assert hooi.rel_error < 1e-9 and len(hooi.extra["hooi_history"]) == 2
