"""method='auto': the search's pick, its scores against dense reconstructions, the runner-up, refusals."""
from __future__ import annotations

import math

import pytest
import torch

from tnviz.decompose import decompose
from tnviz.errors import RankError, TnvizError
from tnviz.model.apply import Kept, apply_plan, compress_layer
from tnviz.model.plan import LayerPlan, Rule, make_plan


def _weight_and_cov(out=64, inp=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(out, inp, dtype=torch.float64, generator=g) @ torch.diag(torch.linspace(2, 0.1, inp, dtype=torch.float64))
    mix = torch.randn(inp, inp, dtype=torch.float64, generator=g) * 0.3 + torch.eye(inp, dtype=torch.float64)
    X = mix @ torch.randn(inp, 2000, dtype=torch.float64, generator=g)
    return W, X @ X.T / X.shape[1]


def _dense_data_error(W, approx, C):
    """||(W - W~) X|| / ||W X|| from the covariance, computed here, not by tnviz."""
    E = W - approx
    return math.sqrt(float(torch.trace(E @ C @ E.T)) / float(torch.trace(W @ C @ W.T)))


def _partial_traces(C, in_dims):
    """C_k = Tr_{other legs}(C) / tr(C)^((n-1)/n), by loops over the other legs' indices."""
    import itertools

    n = len(in_dims)
    T = C.reshape(*in_dims, *in_dims)
    mats = []
    for k in range(n):
        others = [j for j in range(n) if j != k]
        M = torch.zeros(in_dims[k], in_dims[k], dtype=C.dtype)
        for rest in itertools.product(*(range(in_dims[j]) for j in others)):
            index = [slice(None)] * n
            for j, v in zip(others, rest):
                index[j] = v
            M += T[tuple(index) + tuple(index)]
        mats.append(M / float(torch.trace(C)) ** ((n - 1) / n))
    return mats


def _plan(W, budget):
    return LayerPlan("fc", "Linear", tuple(W.shape), W.numel(), "auto", {"target_params": budget})


def test_pick_is_the_lowest_dense_data_error_of_the_candidates():
    W, C = _weight_and_cov(32, 24)
    budget = W.numel() // 3
    dec = compress_layer(W, _plan(W, budget), C)
    search = dec.extra["auto"]
    scored = [c for c in search["candidates"] if c["error"] is not None]
    assert len(scored) >= 5 and {"svd", "mpo", "tucker", "tr"} <= {c["method"] for c in scored}
    dense = []
    for c in scored:  # rebuild every candidate from its settings and measure it on the dense matrix
        opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in c["options"].items()}
        cov = C
        if c["scored"] == "decomposed":  # whitened by the per-leg partial traces of C, as the search does
            cov = _partial_traces(C, opts["in_dims"])
        rebuilt = decompose(W, c["method"], input_cov=cov, **opts)
        assert rebuilt.params == c["params"] and rebuilt.params <= budget
        err = _dense_data_error(W, rebuilt.to_dense(), C)
        assert err == pytest.approx(c["error"], rel=1e-4, abs=1e-8), c["label"]
        dense.append(err)
    best = scored[min(range(len(scored)), key=dense.__getitem__)]
    assert search["chosen"]["label"] == best["label"]
    assert dec.method == best["method"] and dec.params <= budget
    # the winner's own decomposition (with its method's refit) is no worse than its score
    assert _dense_data_error(W, dec.to_dense(), C) <= best["error"] + 1e-9


@pytest.mark.parametrize("aware", [True, False])
def test_auto_is_never_worse_than_the_default_method_at_equal_budget(aware):
    W, C = _weight_and_cov(seed=1)
    cov = C if aware else None
    for budget in (W.numel() // 2, W.numel() // 4):
        auto = compress_layer(W, _plan(W, budget), cov)
        assert auto.params <= budget
        for method in ("mpo", "svd"):  # the default method of a rule, and the baseline
            fixed = compress_layer(W, LayerPlan("fc", "Linear", tuple(W.shape), W.numel(), method,
                                                {"target_params": budget}), cov)
            assert not isinstance(fixed, Kept)
            if aware:
                assert auto.data_error <= fixed.data_error + 1e-9, (method, budget)
            else:
                assert auto.rel_error <= fixed.rel_error + 1e-9, (method, budget)


def test_a_kronecker_weight_gets_a_tensor_network_not_svd():
    g = torch.Generator().manual_seed(2)
    A, B = torch.randn(8, 8, dtype=torch.float64, generator=g), torch.randn(8, 8, dtype=torch.float64, generator=g)
    W = torch.kron(A, B)  # rank 64 as a matrix, an MPO of bond 1 on legs (8, 8) x (8, 8)
    dec = compress_layer(W, _plan(W, W.numel() // 8))
    search = dec.extra["auto"]
    assert search["error"] == "weight" and dec.method != "svd" and dec.rel_error < 1e-8
    assert search["runner_up"] is not None and search["runner_up"]["method"] != dec.method


def test_runner_up_is_reported_in_rows_and_report():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16))
    x = [torch.randn(300, 48)]
    result = apply_plan(model, make_plan(model, [Rule(r"^0$", "auto", {"ratio": 3})]), calibration=x, device="cpu")
    (layer,) = result.layers
    search = layer.search
    assert layer.method == search["chosen"]["method"]
    runner = search["runner_up"]
    assert runner["method"] != layer.method and runner["error"] >= search["chosen"]["error"]
    assert runner["params"] <= search["budget"]
    row = result.rows()[0]
    assert row["chosen"].startswith(search["chosen"]["label"]) and row["runner-up"].startswith(runner["label"])
    assert f"{runner['error']:.4g}" in row["runner-up"]


def test_auto_with_a_global_target_spreads_it_by_sensitivity():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(48, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
    plan = make_plan(model, [Rule(r"^[02]$", "auto")], target_ratio=3)
    assert {lp.method for lp in plan.layers} == {"auto"}
    result = apply_plan(model, plan, data_aware=False, device="cpu")
    budgets = {lp.name: lp.options["target_params"] for lp in plan.layers}
    for layer in result.layers:
        assert layer.params_after <= budgets[layer.name] == layer.search["budget"]


def test_refusals_name_the_rule_and_the_value():
    model = torch.nn.Sequential(torch.nn.Linear(16, 16))
    with pytest.raises(RankError, match=r"'\^0\$'.*max_rank=4"):
        make_plan(model, [Rule(r"^0$", "auto", {"max_rank": 4})])
    with pytest.raises(RankError, match=r"'\^0\$'.*rtol=0.1"):
        make_plan(model, [Rule(r"^0$", "auto", {"rtol": 0.1})])
    with pytest.raises(RankError, match=r"'\^0\$' fixes in_dims=\[4, 4\]"):
        make_plan(model, [Rule(r"^0$", "auto", in_dims=(4, 4))])
    with pytest.raises(TnvizError, match="got 'automatic'"):
        make_plan(model, [Rule(r"^0$", "automatic")])
    # a global target replaces the rule's truncation: no refusal
    assert make_plan(model, [Rule(r"^0$", "auto", {"max_rank": 4})], target_ratio=2).layers[0].method == "auto"


def test_cli_auto_prints_the_choice_and_refuses_a_rank(tmp_path, capsys):
    import json

    from tnviz.cli import main

    assert main(["compress", "digits-mlp", "--method", "auto", "--ratio", "4", "--layers", r"fc[12]$",
                 "-o", str(tmp_path / "a"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for layer in report["layers"]:
        assert layer["method"] == layer["search"]["chosen"]["method"] and layer["search"]["runner_up"]
    assert main(["compress", "digits-mlp", "--method", "auto", "--ratio", "4", "--layers", r"fc2$",
                 "-o", str(tmp_path / "b")]) == 0
    text = capsys.readouterr().out
    assert "auto chose" in text and "runner-up" in text
    assert main(["compress", "digits-mlp", "--method", "auto", "--max-rank", "4", "-o", str(tmp_path / "c")]) != 0
    assert "max_rank=4" in capsys.readouterr().err


def test_a_journaled_auto_layer_keeps_its_method_and_search(tmp_path):
    from tnviz.model.apply import result_of
    from tnviz.model.resume import Journal

    W, C = _weight_and_cov(32, 24)
    lp = _plan(W, W.numel() // 3)
    dec = compress_layer(W, lp, C)
    header = {"format": "test", "input": "x", "settings": "y", "layers": ["fc"]}
    Journal(tmp_path / "out", header).record("fc", dec)
    again = Journal(tmp_path / "out", header, resume=True).finished["fc"]
    fresh, resumed = result_of(lp, dec), result_of(lp, again)
    assert resumed.method == fresh.method == dec.extra["auto"]["chosen"]["method"]
    assert resumed.search == fresh.search and resumed.row()["runner-up"] == fresh.row()["runner-up"]
