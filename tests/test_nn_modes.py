"""The ``modes`` strategy (tnviz.nn.modes: Tucker, CP) against the dense reference (forward and
gradients, float64, odd sizes, batch 1), its plan's GEMMs and FLOPs, and the cost model's use of it."""
from __future__ import annotations

import pytest

import tnviz
from tests.nn_cases import MODES_NETWORKS, check_against_dense, templates
from tnviz.nn import STRATEGIES
from tnviz.nn.modes import plan_modes
from tnviz.nn.strategies import choose


def test_modes_supports_tucker_and_cp_only():
    assert "modes" in STRATEGIES
    for name in ("tucker odd", "cp odd"):
        assert STRATEGIES["modes"].supports(MODES_NETWORKS[name])
    assert not STRATEGIES["modes"].supports(tnviz.mpo([2, 3], [3, 2], ranks=2))
    assert not STRATEGIES["modes"].supports(tnviz.tensor_ring([2, 2, 2], [2, 2, 2], ranks=2))
    names = {net.name for net in templates() if STRATEGIES["modes"].supports(net)}
    assert any("Tucker" in n for n in names) and any("CP" in n for n in names)



@pytest.mark.parametrize("name", list(MODES_NETWORKS))
def test_modes_forward_and_gradients_equal_the_dense_reference(name):
    check_against_dense(MODES_NETWORKS[name], "modes", seed=11)


def test_modes_plan_is_a_sequence_of_gemms_with_the_counted_flops():
    net = tnviz.tucker([8, 8, 8, 8], [8, 8, 8, 8], ranks=4)
    plan = plan_modes(net, 64)
    assert plan.describe().split(" | ")[4] == "G"  # four input factors, the core, four output factors
    assert len(plan.steps) == 9
    # every step's flops: 2 * M * k * n * r, and they add up to the plan's
    assert plan.flops() == sum(2 * s.seg.M * s.seg.k * s.seg.n * s.seg.r for s in plan.steps)
    cp = plan_modes(tnviz.cp([8, 8, 8, 8], [8, 8, 8, 8], rank=16), 64)
    assert [s.seg.mode for s in cp.steps] == ["gemm", "gemm"]
    assert cp.flops() == 2 * 64 * 16 * (4096 + 4096)


def test_auto_uses_modes_for_large_tucker_and_cp_batches():
    assert choose(tnviz.tucker([8] * 4, [8] * 4, ranks=4), 1024) == "modes"
    assert choose(tnviz.cp([8] * 4, [8] * 4, rank=64), 1024) == "modes"

