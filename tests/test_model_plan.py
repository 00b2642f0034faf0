"""The layer table, the rules, the one truncation value, and plans with a global target."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from tnviz.errors import RankError, TnvizError
from tnviz.model.plan import (METHODS, TRUNCATIONS, Rule, check_truncation, layer_table, make_plan,
                              truncation_from)
from tnviz.model.subject import demo_subject

pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


@pytest.fixture(scope="module")
def mlp():
    return demo_subject("digits-mlp", "cpu")


def test_methods_are_the_decomposition_registry():
    from tnviz.decompose import DECOMPOSITIONS

    assert METHODS == (*DECOMPOSITIONS, "auto")  # auto: the search over them (tnviz.model.auto)
    assert set(TRUNCATIONS) == {"ratio", "max_rank", "rtol", "energy"}


def test_plan_with_global_target(mlp):
    plan = make_plan(mlp.model, [Rule(".*", "mpo")], target_ratio=4.0, device="cpu")
    assert plan.allocation is not None and plan.allocation.total_after <= plan.allocation.total_before / 4
    assert all("target_params" in p.options for p in plan.layers)
    assert plan.settings()["target"] == {"ratio": 4.0}
    same = make_plan(mlp, [Rule(".*", "mpo")], target={"ratio": 4.0}, device="cpu")  # a subject works too
    assert [(p.name, dict(p.options)) for p in same] == [(p.name, dict(p.options)) for p in plan]


def test_bad_plans_are_refused(mlp):
    with pytest.raises(RankError, match="method must be one of"):
        make_plan(mlp.model, [Rule(".*", "nope")])
    with pytest.raises(TnvizError, match="valid regular expression"):
        make_plan(mlp.model, [Rule("(", "mpo")])
    with pytest.raises(TnvizError, match="select at least one layer"):
        make_plan(mlp.model, [Rule("nothing", "mpo")])
    with pytest.raises(RankError, match="ratio must be a number above 1"):
        make_plan(mlp.model, [Rule(".*", "mpo", {"ratio": 0.5})])
    with pytest.raises(RankError, match="one global target"):
        make_plan(mlp.model, target_ratio=2.0, error_budget=0.3)


def test_one_truncation_value_from_the_faces():
    assert truncation_from(ratio=2.0) == {"ratio": 2.0}
    assert truncation_from(max_rank=8) == {"max_rank": 8}
    assert truncation_from(target_ratio=4.0) == {"target": {"ratio": 4.0}}
    assert truncation_from(error_budget=0.2) == {"target": {"error": 0.2}}
    assert truncation_from(required=False) == {}
    with pytest.raises(RankError, match="exactly one of"):
        truncation_from(max_rank=2, ratio=3.0)
    with pytest.raises(RankError, match="exactly one of"):
        truncation_from()
    for bad, message in (({"rtol": 2.0}, "between 0 and 1"), ({"energy": 0.0}, "between 0 and 1"),
                         ({"max_rank": 0}, "positive integer"), ({"ratio": 1}, "above 1"),
                         ({"rank": 3}, "must be one of"), ({}, "exactly one truncation")):
        with pytest.raises(RankError, match=message):
            check_truncation(bad)
    # one spelling in the recorded settings: a ratio of 8 and of 8.0 are the same settings
    assert Rule(".*", "mpo", {"ratio": 8}).to_dict() == Rule(".*", "mpo", {"ratio": 8.0}).to_dict()


def test_layer_table_kinds_and_weight_names():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(64, 16), nn.Linear(16, 4), nn.Conv2d(2, 4, 3), nn.Linear(1, 4))
    table = layer_table(model)
    assert [(i.name, i.kind, i.weight_name) for i in table] == [
        ("0", "Embedding", "0.weight"), ("1", "Linear", "1.weight"), ("2", "Conv", "2.weight")]  # 1-input Linear: no
