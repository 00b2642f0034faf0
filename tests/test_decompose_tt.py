"""MPO / tensor train (tnviz.decompose.tt): exact recovery of known TT ranks and leg placement."""
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
