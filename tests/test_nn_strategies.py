"""The strategy registry and the decision which strategy a layer runs (tnviz.nn.strategies):
``register_strategy``, ``make_plan`` for every member alike, ``estimates`` / ``choose``, and
``decide``, whose answer is the one the layer itself runs.  No timing is asserted."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path

import pytest
import torch

import tnviz
from tnviz.contract import DEFAULT_BUDGET_ELEMENTS
from tnviz.errors import BudgetError
from tnviz.nn import TNLinear
from tnviz.nn import autotune as A
from tnviz.nn import strategies as S
from tnviz.nn.factorized import FACTORIZED
from tnviz.nn.plan import StrategyError, TorchStrategy

ROOT = Path(__file__).resolve().parents[1]

MPO = tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=8)
LARGE_RING = tnviz.tensor_ring([4, 8, 32], [4, 8, 32], ranks=2)  # 2^20 weight elements, no fast path


# ------------------------------------------------------------------ registry
@dataclass(frozen=True)
class _CheapPlan:
    """A plan that claims to cost nothing and runs the factorized plan."""

    inner: object
    largest: int = 1

    def estimate(self, cached: bool = False) -> float:
        return 0.0

    def flops(self, step: bool = False) -> int:
        return self.inner.flops(step)

    def describe(self) -> str:
        return "cheap"

    def __call__(self, x2d, ctx):
        return self.inner(x2d, ctx)


class _Cheap(TorchStrategy):
    name = "cheap"
    description = "the factorized plan, modelled as free"

    def supports(self, net) -> bool:
        return True

    def plan(self, net, batch, cached=False):
        return _CheapPlan(FACTORIZED.plan(net, batch, cached))


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry for a test to add to."""
    monkeypatch.setattr(S, "STRATEGIES", dict(S.STRATEGIES))
    return S.STRATEGIES


def test_a_strategy_joins_by_a_call_and_every_caller_uses_it(registry):
    net = tnviz.mpo([4, 4], [4, 4], ranks=2)
    assert "cheap" not in registry
    cheap = S.register_strategy(_Cheap())
    assert S.register_strategy(cheap) is cheap  # the same object again: no-op
    assert list(registry)[-1] == "cheap" and S.check_name("cheap") == "cheap"
    assert S.estimates(net, 5)["cheap"] == 0.0
    assert S.choose(net, 5) == "cheap" and S.decide(net, 5, cached=False).strategy == "cheap"
    assert S.make_plan("cheap", net, 5).describe() == "cheap"
    layer = TNLinear(net, dtype=torch.float64)
    x = torch.randn(5, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x), x @ layer.to_dense().T + layer.bias)
    assert layer.last_strategy == "cheap"


def test_register_strategy_refuses_auto_and_a_taken_name(registry):
    class Auto(_Cheap):
        name = "auto"

    class Chain(_Cheap):
        name = "chain"

    for strategy in (Auto(), Chain()):
        with pytest.raises(StrategyError, match="a name of its own"):
            S.register_strategy(strategy)
    assert registry["chain"].description.startswith("MPO sweep")


def test_make_plan_takes_every_strategy_alike_and_refuses_what_is_no_strategy():
    net = tnviz.mpo([4, 4], [4, 4], ranks=2)
    for name, strategy in S.STRATEGIES.items():
        if not strategy.supports(net):
            continue
        for cached in (False, True):
            plan = S.make_plan(name, net, 3, cached)
            assert plan == strategy.plan(net, 3, cached)
            assert plan.largest > 0 and plan.estimate(cached) > 0 and plan.describe()
            assert plan.flops() > 0 and plan.flops(step=True) > plan.flops()
    with pytest.raises(StrategyError, match="'auto' chooses one"):
        S.make_plan("auto", net, 3)
    with pytest.raises(StrategyError, match="choose one of"):
        S.make_plan("fastest", net, 3)
    with pytest.raises(StrategyError, match="does not fit"):
        S.make_plan("ring", net, 3)


def test_every_strategy_says_where_it_runs_and_how_it_is_chosen():
    for name, strategy in S.STRATEGIES.items():
        assert S.measured_only(name) == strategy.measured_only
        if not strategy.measured_only:  # plain torch: everywhere, by the cost model
            assert strategy.available("cpu") and strategy.available(torch.device("cpu"))
    assert [n for n, s in S.STRATEGIES.items() if s.measured_only] == ["fused"]
    assert "fused" not in S.estimates(MPO, 8)


# ------------------------------------------------------------------ decide
def test_decision_is_the_cost_models_choice_with_the_table_it_chose_from():
    for cached in (False, True):
        d = S.decide(MPO, 1024, cached=cached)
        assert d.strategy == S.choose(MPO, 1024, cached, DEFAULT_BUDGET_ELEMENTS) == "chain"
        assert d.estimates == S.estimates(MPO, 1024, cached)
        assert d.estimates[d.strategy] == min(d.estimates.values())
        assert not d.measured and "lowest modelled cost of 3 strategies at batch 1024" in d.reason
    assert "in inference" in S.decide(MPO, 8, cached=True).reason
    assert "in training" in S.decide(MPO, 8, cached=False).reason
    with pytest.raises(FrozenInstanceError):
        d.strategy = "rebuilt"


def test_decision_says_when_the_budget_ruled_out_the_cheapest():
    net = tnviz.mpo([8, 8], [8, 8], ranks=64)  # full rank: rebuilding is cheapest in inference
    d = S.decide(net, 64, cached=True, budget=None)
    cheapest = d.strategy
    largest = S.make_plan(cheapest, net, 64, True).largest
    fits = S.decide(net, 64, cached=True, budget=largest - 1)
    assert fits.strategy != cheapest and fits.estimates == d.estimates
    assert f"{cheapest!r} costs less but needs {largest:,}" in fits.reason
    with pytest.raises(BudgetError, match="limited to 10 elements"):
        S.decide(net, 64, cached=True, budget=10)


def test_decision_is_measured_for_large_layers_without_a_fast_path_in_inference_only():
    ring = S.decide(LARGE_RING, 64, cached=True, device="cpu")
    assert ring.measured and ring.reason.startswith("timed at the first call on cpu")
    assert "without a fast path" in ring.reason and ring.strategy in ring.estimates
    assert not S.decide(LARGE_RING, 64, cached=False).measured  # training: the cost model
    assert not S.decide(tnviz.tensor_ring([4, 4], [4, 4], ranks=2), 64, cached=True).measured  # small
    assert not S.decide(tnviz.mpo([32] * 3, [32] * 3, ranks=2), 64, cached=True).measured  # 'chain' fits


def test_decision_is_measured_where_a_device_kernel_can_run(monkeypatch):
    from tnviz.nn.fused import FUSED

    net = tnviz.mpo([4, 4], [4, 4], ranks=2)
    monkeypatch.setattr(FUSED, "supports", lambda net: True)
    monkeypatch.setattr(FUSED, "available", lambda device: str(device).startswith("cuda"))
    d = S.decide(net, 8, cached=True, device="cuda")
    assert d.measured and "'fused' can run on cuda" in d.reason and "fused" not in d.estimates
    assert not S.decide(net, 8, cached=True, device="cpu").measured
    assert not S.decide(net, 8, cached=False, device="cuda").measured


@pytest.mark.parametrize("net", [MPO, tnviz.tensor_ring([4, 4, 4], [4, 4, 4], ranks=3),
                                 tnviz.tucker([8, 8], [8, 8], ranks=4), tnviz.cp([4, 4], [4, 4], rank=8),
                                 LARGE_RING], ids=lambda n: n.name)
@pytest.mark.parametrize("batch", [1, 64])
def test_the_layer_runs_what_decide_says(net, batch):
    """One answer: the strategy a default layer runs is the decision's, in both modes; where the
    decision says ``measured``, the layer times candidates instead (and only then)."""
    A.clear_autotune()
    layer = TNLinear(net, budget=DEFAULT_BUDGET_ELEMENTS)
    x = torch.randn(batch, net.in_features)
    for cached in (False, True):
        layer.train(not cached)
        d = S.decide(net, batch, cached=cached, device="cpu")
        with torch.set_grad_enabled(not cached):
            layer(x)
            assert layer.choose_strategy(batch) == d.strategy  # without a device: never measured
        chosen = layer.last_strategy
        if d.measured:
            assert chosen in d.estimates and any(k[0] == net for k in A._TUNED)
        else:
            assert chosen == d.strategy
    assert any(A._TUNED) == (net is LARGE_RING)
    A.clear_autotune()


def test_the_registry_and_the_decision_import_without_torch():
    """The CLI's ``cost`` command asks which strategy a layer runs; that must not load torch."""
    code = ("import sys\n"
            "import tnviz\n"
            "from tnviz.nn.strategies import decide\n"
            "from tnviz.nn import STRATEGIES\n"
            "d = decide(tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=8), 1024, cached=True)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print(d.strategy, len(STRATEGIES))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["chain", "6"]
