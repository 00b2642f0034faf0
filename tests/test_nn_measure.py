"""``tnviz.nn.measure``: the timed rows of every supported strategy against nn.Linear, the FLOPs
each one counts (forward and a training step, against torch's own FLOP counter), its refusals, and
the Costs page's measured panel.  No timing is asserted anywhere."""
from __future__ import annotations

import math

import pytest
import torch

import tnviz
from tests.nn_cases import F64
from tnviz.cost import training_step_flops
from tnviz.errors import TnvizError
from tnviz.nn import STRATEGIES, TNLinear
from tnviz.nn import measure as M
from tnviz.nn.modes import plan_modes


@pytest.mark.parametrize("mode", M.MODES)
def test_measure_times_every_supported_strategy_against_dense(mode):
    net = tnviz.cp([4, 3], [2, 5], rank=3)
    rows = M.measure(net, batch=5, repeats=1, mode=mode, dtype=F64)
    methods = [r["method"] for r in rows]
    assert methods[:2] == ["nn.Linear", "TNLinear auto"]
    assert set(methods[2:]) == {f"TNLinear {s}" for s, st in STRATEGIES.items() if st.supports(net)}
    for r in rows:
        assert r["ms"] > 0 and math.isfinite(r["speedup_vs_dense"])
    dense = rows[0]
    step = mode == "step"  # a training step: nn.Linear's forward and weight gradient (no input gradient)
    assert dense["flops"] == (2 if step else 1) * 2 * 5 * 12 * 10 and dense["speedup_vs_dense"] == 1.0
    auto = rows[1]
    assert auto["note"] == f"chose {auto['strategy']}" and auto["strategy"] in STRATEGIES
    modes = next(r for r in rows if r["method"] == "TNLinear modes")
    plan = plan_modes(net, 5, mode == "eval")
    if step:  # per step a weight and a state gradient as costly as the step, but no input gradient;
        # the Khatri-Rao merges (forward, and a gradient per factor pair) three times over
        first, second = plan.steps
        assert modes["flops"] == plan.flops() + second.seg.flops + plan.flops() + 3 * (first.seg.merge_flops
                                                                                  + second.seg.merge_flops)
        by_method = {r["method"]: r for r in rows}
        assert by_method["TNLinear factorized"]["flops"] == training_step_flops(net, 5, input_grad=False)[0]
        c = tnviz.cost(net, batch=5)
        assert by_method["TNLinear rebuilt"]["flops"] == 2 * c.dense_flops + 3 * c.reconstruct_flops
    else:
        assert modes["flops"] == plan.flops()
    assert all(r["flops_drop"] == dense["flops"] / r["flops"] for r in rows[1:])


STEP_FLOP_CASES = {
    "mpo chain": (tnviz.mpo([2, 3, 5], [3, 2, 3], ranks=[4, 5]), "chain", 7),
    "mpo 2 cores chain": (tnviz.mpo([4, 4], [4, 4], ranks=3), "chain", 5),
    "ring": (tnviz.tensor_ring([2, 3, 2], [3, 2, 2], ranks=2), "ring", 6),
    "tucker modes": (tnviz.tucker([3, 5], [2, 7], ranks=[2, 3, 4, 2]), "modes", 5),
    "mpo factorized": (tnviz.mpo([2, 3, 5], [3, 2, 3], ranks=[4, 5]), "factorized", 7),
    "mpo rebuilt": (tnviz.mpo([2, 3, 5], [3, 2, 3], ranks=[4, 5]), "rebuilt", 7),
    "ring rebuilt": (tnviz.tensor_ring([2, 3, 2], [3, 2, 2], ranks=2), "rebuilt", 6),
}


@pytest.mark.parametrize("case", list(STEP_FLOP_CASES))
def test_step_flops_equal_the_flops_a_training_step_runs(case, monkeypatch):
    """``strategy_flops(step=True)`` against torch's own FLOP counter over a real forward and
    backward (input without gradient).  The counter does not see in-place ``baddbmm_``, so the
    rebuild runs its one-GEMM layout here (the same FLOPs as the CPU loop)."""
    from torch.utils.flop_counter import FlopCounterMode

    from tnviz.nn import workspace

    monkeypatch.setattr(workspace, "halves_product_ok", lambda *a: False)
    net, strategy, batch = STEP_FLOP_CASES[case]
    layer = TNLinear(net, strategy=strategy, bias=False, dtype=F64)
    x = torch.randn(batch, net.in_features, dtype=F64)
    with FlopCounterMode(display=False) as counter:
        layer(x).backward(torch.randn(batch, net.out_features, dtype=F64))
    assert counter.get_total_flops() == M.strategy_flops(net, strategy, batch, cached=False, step=True)
    with FlopCounterMode(display=False) as counter:
        torch.nn.Linear(net.in_features, net.out_features, bias=False, dtype=F64)(x).backward(
            torch.randn(batch, net.out_features, dtype=F64))
    assert counter.get_total_flops() == 2 * 2 * batch * net.in_features * net.out_features  # nn.Linear's 2 matmuls



def test_measure_refuses_bad_arguments():
    net = tnviz.mpo([2, 2], [2, 2], ranks=2)
    with pytest.raises(TnvizError, match="measure mode must be one of"):
        M.measure(net, 4, mode="fast")
    with pytest.raises(TnvizError, match="at least 1"):
        M.measure(net, 0)


def test_measure_skips_strategies_over_the_budget():
    net = tnviz.mpo([4, 4], [4, 4], ranks=2)
    rows = M.measure(net, batch=2, repeats=1, budget=200)
    skipped = [r for r in rows if r["note"].startswith("skipped")]
    assert any(r["method"] == "TNLinear rebuilt" for r in skipped)  # 256 elements > 200


def test_costs_page_measures_on_click():
    from streamlit.testing.v1 import AppTest

    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    page = next(p for p in (root / "tnviz_app/views/costs.py", root / "tnviz_app/pages/costs.py") if p.exists())
    at = AppTest.from_file(str(page), default_timeout=120)
    at.run()
    assert not at.exception
    at.number_input(key="costs.batch").set_value(4).run()
    assert any("Press **Measure**" in c.value for c in at.caption)
    next(b for b in at.button if b.key == "costs.measure.run").click().run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert list(table["method"])[:2] == ["nn.Linear", "TNLinear auto"]
    assert any("`auto` chose" in c.value for c in at.caption)
    assert not any("For a training step" in c.value for c in at.caption)
    # a training step: counted FLOPs of forward and backward, said so under the table
    at.radio(key="costs.measure.mode").set_value("training step (forward + backward)").run()
    assert any("Press **Measure**" in c.value for c in at.caption)  # another measurement: not shown stale
    next(b for b in at.button if b.key == "costs.measure.run").click().run()
    assert not at.exception
    step = at.dataframe[-1].value
    dense_step = next(v for m, v in zip(step["method"], step["counted FLOPs"]) if m == "nn.Linear")
    dense_eval = next(v for m, v in zip(table["method"], table["counted FLOPs"]) if m == "nn.Linear")
    assert dense_step != dense_eval
    assert any("For a training step" in c.value and "2 matmuls" in c.value for c in at.caption)
