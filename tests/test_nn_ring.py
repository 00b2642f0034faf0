"""The ``ring`` strategy (tnviz.nn.ring: tensor rings) against the dense reference (forward and
gradients, float64, odd sizes, batch 1), every segmentation, and the cost model's use of it."""
from __future__ import annotations

import pytest
import torch

import tnviz
from tests.nn_cases import F64, RING_NETWORKS, check_against_dense, reference
from tnviz.nn import STRATEGIES, TNLinear
from tnviz.nn.ring import RingPlan, plan_ring, ring_cores, ring_segment
from tnviz.nn.strategies import choose


def test_ring_supports_tensor_rings_only():
    assert all(STRATEGIES["ring"].supports(net) for net in RING_NETWORKS.values())
    assert any(name.startswith("template") for name in RING_NETWORKS)
    for net in (tnviz.mpo([2, 3], [3, 2], ranks=2), tnviz.tucker([3, 4], [2, 2], ranks=2),
                tnviz.cp([3, 4], [2, 2], rank=2)):
        assert not STRATEGIES["ring"].supports(net)
    # legs out of row-major order around the ring cannot be swept without permutes
    ring = tnviz.tensor_ring([2, 3, 4], [3, 2, 2], ranks=2)
    swapped = tnviz.TensorNetwork.build(ring.tensors, ring.sizes, ("i2", "i1", "i3"), ring.outputs)
    assert ring_cores(swapped) is None
    # the sweep starts after the closing bond, wherever the builder put it
    cores = ring_cores(ring)
    assert [c.name for c in cores] == ["A", "B", "C"] and cores[0].left == cores[-1].right == "b3"


@pytest.mark.parametrize("name", list(RING_NETWORKS))
def test_ring_forward_and_gradients_equal_the_dense_reference(name):
    check_against_dense(RING_NETWORKS[name], "ring", seed=13)


@pytest.mark.parametrize("cuts", [(1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)])
def test_every_ring_segmentation_is_exact(cuts):
    """The planner picks one segmentation; each of them (incl. the transpose that middle segments
    with outputs need) must compute the same matrix."""
    net = tnviz.tensor_ring([3, 2, 4, 2], [2, 3, 2, 3], ranks=[2, 3, 2, 3])
    tensors, _ = reference(net, seed=4)
    layer = TNLinear.from_tensors(net, tensors).eval()
    cores = ring_cores(net)
    bounds = [0, *cuts, len(cores)]
    batch = 5
    plan = RingPlan(net, batch, cores, tuple(ring_segment(net, cores, a, b - 1, batch)
                                             for a, b in zip(bounds, bounds[1:])), True)
    assert plan.flops() == sum(2 * s.M * s.k * s.n * s.r for s in plan.segments)
    x = torch.randn(batch, net.in_features, dtype=F64)
    W = torch.from_numpy(tnviz.to_dense(net, tensors))
    with torch.no_grad():
        torch.testing.assert_close(plan(x, layer.call_context()), x @ W.T, rtol=1e-12, atol=1e-12)


def test_ring_plan_has_two_segments_at_least_and_auto_uses_it_where_it_pays():
    net = tnviz.tensor_ring([8, 8, 8, 8], [8, 8, 8, 8], ranks=4)
    plan = plan_ring(net, 64)
    assert len(plan.segments) >= 2  # one segment would be the rebuilt weight
    assert plan.describe().startswith("cut at b4: ")
    # the ring bond multiplies the work: R x the MPO sweep with the same bonds and segments
    assert plan.flops() < 2 * 64 * net.in_features * net.out_features
    assert choose(net, 1) == "ring" and choose(net, 64) == "ring"
