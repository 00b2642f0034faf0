"""TNLinear against the dense reference: outputs, every strategy, gradients, caching, state_dict."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tnviz
from tnviz.errors import BudgetError, InvalidNetworkError
from tests.nn_cases import F64, LAYER_NETWORKS as NETWORKS, strategies_for
from tnviz.nn import STRATEGIES, StrategyError, TNLinear, choose
from tnviz.nn.linear import MAX_PARAMS

def dense_reference(net, seed=0):
    """Random float64 tensors, the nn.Linear with the same matrix (from tnviz.to_dense, numpy)."""
    tensors = tnviz.random_tensors(net, seed=seed)
    W = tnviz.to_dense(net, tensors)
    lin = torch.nn.Linear(net.in_features, net.out_features, dtype=F64)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
        lin.bias.copy_(torch.linspace(-1, 1, net.out_features, dtype=F64))
    return tensors, lin


@pytest.mark.parametrize("name", list(NETWORKS))
def test_equals_nn_linear_for_every_strategy(name):
    net = NETWORKS[name]
    tensors, lin = dense_reference(net)
    layer = TNLinear.from_tensors(net, tensors, lin.bias.detach())
    for batch_shape in [(1,), (7,), (2, 3)]:
        x = torch.randn(*batch_shape, net.in_features, dtype=F64, generator=torch.Generator().manual_seed(1))
        expected = lin(x)
        for strategy in ["auto", *strategies_for(net)]:
            layer.strategy = strategy
            y = layer(x)
            assert y.shape == expected.shape
            torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
            assert layer.last_strategy in STRATEGIES
            if strategy != "auto":
                assert layer.last_strategy == strategy


@pytest.mark.parametrize("name", list(NETWORKS))
def test_gradients_equal_those_of_the_dense_layer(name):
    net = NETWORKS[name]
    tensors, lin = dense_reference(net, seed=3)
    layer = TNLinear.from_tensors(net, tensors, lin.bias.detach())
    x0 = torch.randn(5, net.in_features, dtype=F64, generator=torch.Generator().manual_seed(2))
    g = torch.randn(5, net.out_features, dtype=F64, generator=torch.Generator().manual_seed(4))
    # reference: autograd through tnviz.to_dense on torch leaves
    leaves = {n: torch.tensor(a, requires_grad=True) for n, a in tensors.items()}
    bias = lin.bias.detach().clone().requires_grad_(True)
    x_ref = x0.clone().requires_grad_(True)
    ((x_ref @ tnviz.to_dense(net, leaves).T + bias) * g).sum().backward()
    for strategy in strategies_for(net):
        layer.zero_grad()
        layer.strategy = strategy
        x = x0.clone().requires_grad_(True)
        (layer(x) * g).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(layer.bias.grad, bias.grad)
        for n, p in layer.named_network_tensors().items():
            assert p.grad is not None and p.grad.abs().max() > 0
            torch.testing.assert_close(p.grad, leaves[n].grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["mpo", "tensor ring", "tucker", "cp", "generic"])
def test_the_bias_added_in_place_under_autograd_keeps_every_use_of_the_output_exact(name):
    """The bias goes into the plan's own output (``_AddBias``), not a second tensor: in-place ops
    after the layer, a second backward (``retain_graph``) and double backward must all still hold."""
    net = NETWORKS[name]
    tensors, lin = dense_reference(net, seed=5)
    layer = TNLinear.from_tensors(net, tensors, lin.bias.detach())
    x0 = torch.randn(2, 3, net.in_features, dtype=F64, generator=torch.Generator().manual_seed(6))
    g = torch.randn(2, 3, net.out_features, dtype=F64, generator=torch.Generator().manual_seed(7))
    for strategy in strategies_for(net):
        layer.strategy = strategy
        lin.zero_grad()
        layer.zero_grad()
        x, x_ref = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
        y, y_ref = layer(x), lin(x_ref)
        torch.testing.assert_close(y, y_ref)
        if strategy == "ring":  # its results are fresh and contiguous
            assert "_AddBiasBackward" in _history(y)
        if strategy in ("chain", "modes"):  # in place, or inside a last step that is one GEMM (addmm)
            h = _history(y)
            assert ("_AddBiasBackward" in h) != ("AddmmBackward0" in h) and "AddBackward0" not in h
        if strategy == "rebuilt":  # the bias inside the one GEMM (addmm), as nn.Linear adds it
            assert "AddmmBackward0" in _history(y) and "_AddBiasBackward" not in _history(y)
        torch.relu_(y), torch.relu_(y_ref)  # in place on the layer's output
        (y * g).sum().backward(retain_graph=True)
        (y_ref * g).sum().backward(retain_graph=True)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(layer.bias.grad, lin.bias.grad)
        (y * g).sum().backward()  # the retained graph runs again
        torch.testing.assert_close(layer.bias.grad, 2 * lin.bias.grad)
        # double backward through the in-place add (and the plan) in x and the bias
        b = layer.bias.detach().clone().requires_grad_(True)
        xs = x0[0, :2].clone().requires_grad_(True)
        assert torch.autograd.gradgradcheck(lambda xx, bb: _with_bias(layer, xx, bb), (xs, b))


def _history(y, depth=4):
    """The names of the first ``depth`` backward nodes behind ``y`` (first inputs only)."""
    names, fn = [], y.grad_fn
    while fn is not None and len(names) < depth:
        names.append(type(fn).__name__)
        fn = fn.next_functions[0][0] if fn.next_functions else None
    return names


def _with_bias(layer, x, b):
    """``layer(x)`` with ``b`` as its bias, differentiable in ``b``."""
    saved = layer.bias
    try:
        del layer.bias
        layer.bias = b
        return layer(x)
    finally:
        del layer.bias
        layer.bias = saved


@pytest.mark.parametrize("strategy", ["rebuilt", "chain"])
def test_a_weight_cached_under_inference_mode_is_not_saved_for_a_later_backward(strategy):
    """Eval mode with frozen tensors caches weights; one made under ``torch.inference_mode`` cannot
    be saved for backward, so a later call that needs the input's gradient makes its own."""
    net = NETWORKS["mpo"]
    tensors, lin = dense_reference(net)
    layer = TNLinear.from_tensors(net, tensors, lin.bias.detach(), strategy=strategy).eval()
    layer.requires_grad_(False)
    x0 = torch.randn(3, net.in_features, dtype=F64)
    with torch.inference_mode():
        torch.testing.assert_close(layer(x0), lin(x0))
    x = x0.clone().requires_grad_(True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, lin.weight.detach().sum(0).expand_as(x))
    with torch.inference_mode():  # and inference goes on
        torch.testing.assert_close(layer(x0), lin(x0))


def test_to_dense_and_to_linear():
    net = NETWORKS["mpo"]
    tensors, lin = dense_reference(net)
    layer = TNLinear.from_tensors(net, tensors, lin.bias.detach())
    torch.testing.assert_close(layer.to_dense(), lin.weight.detach())
    back = layer.to_linear()
    x = torch.randn(3, net.in_features, dtype=F64)
    torch.testing.assert_close(back(x), lin(x))


@pytest.mark.parametrize("method,options", [
    ("mpo", {"in_dims": [3, 4], "out_dims": [2, 5]}),
    ("tr", {"in_dims": [3, 4], "out_dims": [2, 5]}),
    ("tucker", {"in_dims": [3, 4], "out_dims": [2, 5]}),
    ("svd", {}),
])
def test_from_linear_at_full_rank_equals_the_linear(method, options):
    pytest.importorskip("tnviz.decompose")
    torch.manual_seed(0)
    lin = torch.nn.Linear(12, 10, dtype=F64)
    layer = TNLinear.from_linear(lin, method, **options)
    assert layer.decomposition_error < 1e-12
    x = torch.randn(4, 12, dtype=F64)
    for strategy in strategies_for(layer.network):
        layer.strategy = strategy
        torch.testing.assert_close(layer(x), lin(x), rtol=1e-10, atol=1e-10)


def test_from_linear_truncated_reports_its_error():
    pytest.importorskip("tnviz.decompose")
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 64)
    layer = TNLinear.from_linear(lin, "mpo", in_dims=[4, 4, 4], out_dims=[4, 4, 4], max_rank=2)
    W = lin.weight.detach()
    err = float(torch.linalg.norm(layer.to_dense().detach() - W) / torch.linalg.norm(W))
    assert 0.05 < layer.decomposition_error
    assert abs(err - layer.decomposition_error) < 1e-4
    assert layer.params < 64 * 64 / 4


def test_state_dict_round_trip():
    net = NETWORKS["tensor ring"]
    torch.manual_seed(0)
    a, b = TNLinear(net, dtype=F64), TNLinear(net, dtype=F64)
    x = torch.randn(3, net.in_features, dtype=F64)
    assert not torch.allclose(a(x), b(x))  # different random inits: the load below matters
    sd = a.state_dict()
    assert set(sd) == {f"tensors.{n}" for n in net.tensor_names} | {"bias"}
    b.load_state_dict(sd)
    torch.testing.assert_close(a(x), b(x))


def test_parameter_keys_survive_awkward_tensor_names():
    net = tnviz.from_einsum("ia,aj->ij", {"i": 3, "j": 4, "a": 2}, inputs="i", names=["layer.0", "update"])
    layer = TNLinear(net, dtype=F64)
    assert len(list(layer.parameters())) == 3
    assert set(layer.named_network_tensors()) == {"layer.0", "update"}
    x = torch.randn(2, 3, dtype=F64)
    torch.testing.assert_close(layer(x), x @ layer.to_dense().T + layer.bias)


def test_eval_cache_is_reused_and_invalidated_by_parameter_changes():
    net = NETWORKS["mpo"]
    layer = TNLinear(net, dtype=F64, strategy="rebuilt").eval()
    x = torch.randn(4, net.in_features, dtype=F64)
    with torch.no_grad():
        y1 = layer(x)
        w_cached = layer._cache[("rebuilt",)][1]
        layer(x)
        assert layer._cache[("rebuilt",)][1] is w_cached  # reused, not rebuilt
        first = next(iter(layer.tensors.values()))
        first.mul_(2.0)  # in place: bumps the version counter
        y2 = layer(x)
    assert not torch.allclose(y1, y2)
    torch.testing.assert_close(y2, x @ layer.to_dense().detach().T + layer.bias.detach())
    # load_state_dict copies in place too
    other = TNLinear(net, dtype=F64)
    with torch.no_grad():
        layer.load_state_dict(other.state_dict())
        torch.testing.assert_close(layer(x), other(x))
    # training mode never caches (gradients must flow)
    layer.train()
    layer(x).sum().backward()
    assert all(p.grad is not None for p in layer.tensors.values())
    assert layer._cache == {}


def test_plans_are_made_once_per_shape():
    net = NETWORKS["generic"]
    layer = TNLinear(net, dtype=F64, strategy="factorized")
    x = torch.randn(6, net.in_features, dtype=F64)
    layer(x)
    plan = layer.plan(6, "factorized", x.dtype, x.device)
    layer(x)
    assert layer.plan(6, "factorized", x.dtype, x.device) is plan
    assert plan.expression is plan.expression  # the opt_einsum expression is cached as well
    layer(torch.randn(2, 3, net.in_features, dtype=F64))  # batch 6 again: same plan
    assert len([k for k in layer._plans if k[0] == "factorized"]) == 1
    layer(torch.randn(2, 4, net.in_features, dtype=F64))
    assert len([k for k in layer._plans if k[0] == "factorized"]) == 2


def test_auto_choice_follows_the_cost_model():
    net = tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=4)
    # shapes only: no 4096x4096 weight is ever built here
    assert choose(net, 1) != "rebuilt"
    dense_like = tnviz.mpo([8, 8], [8, 8], ranks=64)  # full rank: factors cost more than the matrix
    assert choose(dense_like, 4096, cached=True) in ("rebuilt", "chain")
    layer = TNLinear(tnviz.mpo([4, 4], [4, 4], ranks=2))
    layer(torch.randn(3, 16))
    assert "last=" in repr(layer)


def test_repr_names_the_network_ranks_params_compression_strategy():
    layer = TNLinear(tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=4, name="MPO 4096x4096"))
    text = repr(layer)
    for part in ("MPO 4096x4096", "(8, 8, 8, 8)", "b1=4", "params=2,560", "6.55e+03x smaller", "strategy='auto'"):
        assert part in text, (part, text)


def test_bad_input_is_refused_with_a_clear_message():
    layer = TNLinear(NETWORKS["mpo"])
    with pytest.raises(InvalidNetworkError, match="in_features=30"):
        layer(torch.randn(2, 31))
    with pytest.raises(StrategyError, match="choose one of"):
        TNLinear(NETWORKS["mpo"], strategy="fastest")
    with pytest.raises(StrategyError, match="does not fit"):
        TNLinear(NETWORKS["tucker"], strategy="chain")(torch.randn(2, 15))
    with pytest.raises(BudgetError, match="limited to 10 elements"):
        TNLinear(NETWORKS["mpo"], budget=10)(torch.randn(2, 30))


def test_dtype_and_empty_batch():
    layer = TNLinear(NETWORKS["cp"], dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in layer.parameters())
    y = layer(torch.randn(0, 15))
    assert y.shape == (0, 14)
    layer64 = layer.to(F64)
    x = torch.randn(2, 15, dtype=F64)
    torch.testing.assert_close(layer64(x), x @ layer64.to_dense().T + layer64.bias)


def test_init_matches_nn_linear_scale():
    torch.manual_seed(0)
    net = tnviz.mpo([8, 8, 8], [8, 8, 8], ranks=8)
    w = TNLinear(net).to_dense().detach()
    expected = (1.0 / (3 * net.in_features)) ** 0.5
    assert 0.5 * expected < float(w.std()) < 2.0 * expected


def test_numpy_tensors_round_trip_through_from_tensors():
    net = NETWORKS["mpo unequal legs"]
    tensors = tnviz.random_tensors(net, seed=5)
    layer = TNLinear.from_tensors(net, tensors)
    assert layer.bias is None
    np.testing.assert_allclose(layer.to_dense().detach().numpy(), tnviz.to_dense(net, tensors), rtol=1e-12)


# ------------------------------------------------------------------ parameter guard (issue 15)
HUGE = {
    "bond 10^9": tnviz.mpo([4, 4], [4, 4], ranks=10**9),
    "leg 10^9": tnviz.mpo([10**9, 2], [2, 2], ranks=2),
    "40 output legs of 2 (the bias)": tnviz.cp([2], [2] * 40, rank=2),
}


@pytest.mark.parametrize("name", list(HUGE))
def test_a_network_too_large_to_hold_is_refused_before_any_allocation(name, monkeypatch):
    net = HUGE[name]

    def no_allocation(*args, **kwargs):
        raise AssertionError("allocated before the size check")

    monkeypatch.setattr(torch, "empty", no_allocation)
    with pytest.raises(BudgetError) as err:
        TNLinear(net)
    text = str(err.value)
    assert MAX_PARAMS == 1 << 30
    assert "at most 1,073,741,824 parameter elements (max_params=None lifts the limit)" in text
    assert repr(net.name) in text and "GiB in float32" in text
    biggest = max(net.sizes.values())
    assert f"={biggest:,}" in text  # the sizes, as the network file gives them
    if net.params > MAX_PARAMS:  # the tensors alone (from_tensors without a bias has none)
        with pytest.raises(BudgetError, match="in float64"):
            TNLinear.from_tensors(net, {}, dtype=F64)  # the same guard, before any tensor is read
    with pytest.raises(BudgetError):  # from the network file's dict
        TNLinear(net.to_dict())


def test_the_parameter_limit_counts_the_bias_and_can_be_lifted_or_lowered():
    net = tnviz.mpo([4, 4], [4, 4], ranks=3)  # 96 tensor elements, 16 of bias
    assert net.params == 96
    with pytest.raises(BudgetError, match="at most 100 parameter elements.*needs 112"):
        TNLinear(net, max_params=100)
    assert sum(p.numel() for p in TNLinear(net, bias=False, max_params=100).parameters()) == 96
    assert sum(p.numel() for p in TNLinear(net, max_params=None).parameters()) == 112
    many = tnviz.cp([2] * 14, [2] * 14, rank=1)  # a few parameters, 16,384 bias elements
    with pytest.raises(BudgetError, match=r"\.\.\. \(29 indices\)"):  # long size lists are cut short
        TNLinear(many, max_params=1000)


def test_the_weight_cache_holds_no_view_of_a_parameter():
    """A cached one-core half is its core reshaped; kept as a view, it made a deep copy of the
    layer fail after an in-place update of the core with grad mode on (a cancelled heal's copy):
    the cache keeps copies, and the copy's outputs equal the layer's."""
    import copy

    from tnviz.decompose.legs import inputs_last_cores

    from tnviz.nn.chain_strategy import CoresFirstPlan
    from tnviz.nn.strategies import make_plan

    def tensors_in(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (tuple, list)):
            for v in value:
                yield from tensors_in(v)

    ins, outs = inputs_last_cores((32, 48), (16, 24))
    cores_first = tnviz.mpo([4, 4, 2, 2], [16, 16, 16], ranks=[2, 2, 32], in_cores=(3, 3, 3, 3), out_cores=(0, 1, 2))
    assert isinstance(make_plan("chain", cores_first, 64, cached=True), CoresFirstPlan)  # caches a tuple of cores
    for net in (tnviz.mpo([32, 48], [16, 24], ranks=40, in_cores=ins, out_cores=outs), cores_first):
        layer = TNLinear(net).eval()
        x = torch.randn(64, layer.network.in_features)
        with torch.no_grad():
            layer(x)
        for _, value in layer._cache.values():
            for t in tensors_in(value):
                assert t._base is None
        core = next(iter(layer.parameters()))
        core.data.mul_(0.5)  # an in-place update with grad mode on
        twin = copy.deepcopy(layer)
        with torch.no_grad():
            torch.testing.assert_close(twin(x), layer(x))
