"""CUDA checks (marker ``gpu``): run by benchmarks/gpu_check.sh on a CUDA machine, skipped visibly
elsewhere.  Every strategy and conv layer on the GPU against a float64 CPU reference."""
from __future__ import annotations

import pytest
import torch

import tnviz
from tnviz.nn import STRATEGIES, TNLinear, from_conv

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: run benchmarks/gpu_check.sh on a CUDA machine"),
]

# every supported strategy runs below, so the Tucker / CP networks cover the 'modes' fast path
NETWORKS = [
    tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=8),
    tnviz.mpo([3, 5], [2, 3, 2], ranks=3),
    tnviz.tensor_ring([4, 4, 4], [4, 4, 4], ranks=4),
    tnviz.tucker([16, 16], [16, 16], ranks=4),
    tnviz.cp([16, 16], [16, 16], rank=8),
]
TOL = {torch.float32: 2e-3, torch.bfloat16: 4e-2}


def reference(layer: TNLinear, x: torch.Tensor) -> torch.Tensor:
    w = layer.to_dense().detach().double().cpu()
    return x.double().cpu() @ w.T + layer.bias.detach().double().cpu()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("net", NETWORKS, ids=lambda n: n.name)
def test_every_strategy_on_cuda_matches_the_dense_reference(net, dtype):
    device = torch.device("cuda")
    torch.manual_seed(0)
    layer = TNLinear(net, device=device, dtype=dtype)
    assert all(p.device.type == "cuda" and p.dtype == dtype for p in layer.parameters())
    for batch in (1, 7, 256):
        x = torch.randn(batch, net.in_features, device=device, dtype=dtype)
        ref = reference(layer, x)
        scale = float(ref.abs().max())
        for strategy in ["auto", *[s for s in STRATEGIES if STRATEGIES[s].supports(net)]]:
            layer.strategy = strategy
            for mode in ("train", "eval"):
                layer.train(mode == "train")
                with torch.no_grad():
                    y = layer(x)
                assert y.device.type == "cuda" and y.dtype == dtype
                err = float((y.double().cpu() - ref).abs().max()) / scale
                assert err < TOL[dtype], (strategy, mode, batch, err)


@pytest.mark.parametrize("net", NETWORKS, ids=lambda n: n.name)
def test_gradients_on_cuda_match_cpu_float64(net):
    torch.manual_seed(1)
    cpu = TNLinear(net, dtype=torch.float64)
    gpu = TNLinear(net, device="cuda", dtype=torch.float32)
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(33, net.in_features, dtype=torch.float64)
    g = torch.randn(33, net.out_features, dtype=torch.float64)
    (cpu(x) * g).sum().backward()
    for strategy in [s for s in STRATEGIES if STRATEGIES[s].supports(net)]:
        gpu.zero_grad()
        gpu.strategy = strategy
        (gpu(x.float().cuda()) * g.float().cuda()).sum().backward()
        for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
            rel = float((p_gpu.grad.double().cpu() - p_cpu.grad).norm() / p_cpu.grad.norm())
            assert rel < 1e-3, (strategy, name, rel)


def test_eval_cache_on_cuda_is_invalidated_by_in_place_updates():
    layer = TNLinear(tnviz.mpo([8, 8], [8, 8], ranks=4), device="cuda", strategy="rebuilt").eval()
    x = torch.randn(4, 64, device="cuda")
    with torch.no_grad():
        y1 = layer(x)
        next(iter(layer.tensors.values())).mul_(3.0)
        y2 = layer(x)
        assert not torch.allclose(y1, y2)
        torch.testing.assert_close(y2, x @ layer.to_dense().T + layer.bias, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", ["tucker2", "tucker", "mpo"])
def test_conv_layers_on_cuda_equal_conv2d(method):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1).cuda()
    layer = from_conv(conv, method)
    x = torch.randn(2, 8, 16, 16, device="cuda")
    with torch.no_grad():
        ref = conv.double()(x.double())
        out = layer(x).double()
    assert float((out - ref).abs().max() / ref.abs().max()) < 2e-3


def test_from_linear_on_cuda():
    pytest.importorskip("tnviz.decompose")
    lin = torch.nn.Linear(64, 48).cuda()
    layer = TNLinear.from_linear(lin, "mpo", in_dims=[8, 8], out_dims=[6, 8])
    assert next(layer.parameters()).device.type == "cuda"
    x = torch.randn(5, 64, device="cuda")
    torch.testing.assert_close(layer(x), lin(x), rtol=1e-3, atol=1e-4)


def test_autotune_and_measure_on_cuda():
    from tnviz.nn import autotune as A
    from tnviz.nn import measure as M

    A.clear_autotune()
    net = tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=4)
    layer = TNLinear(net, device="cuda", autotune=True).eval()
    x = torch.randn(64, net.in_features, device="cuda")
    with torch.no_grad():
        y = layer(x)
    assert layer.last_strategy in STRATEGIES
    assert any(k[0] == net and k[3].startswith("cuda") for k in A._TUNED)
    ref = reference(layer, x)
    assert float((y.double().cpu() - ref).abs().max() / ref.abs().max()) < 2e-3
    rows = M.measure(tnviz.cp([16, 16], [16, 16], rank=8), batch=32, device="cuda", repeats=2, mode="step")
    assert {"nn.Linear", "TNLinear auto", "TNLinear modes"} <= {r["method"] for r in rows}
    assert all(r["ms"] > 0 for r in rows)
    A.clear_autotune()
