"""CUDA-graph replay of small-batch inference (tnviz.nn.graphs): the eager fallback and the
re-capture rule here; capture and replay on CUDA under the ``gpu`` marker (benchmarks/gpu_check.sh),
skipped visibly elsewhere."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import tnviz
from tnviz.nn import TNLinear
from tnviz.nn.graphs import MAX_BATCH, GraphedModule, _cached_tensors, graphed

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: run benchmarks/gpu_check.sh on a CUDA machine")
NET = tnviz.mpo([4, 4, 4], [4, 4, 4], ranks=3)


# ---------------------------------------------------------------------- CPU: eager fallback
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("grad", [False, True])
def test_on_cpu_every_call_runs_eagerly(training, grad):
    layer = TNLinear(NET, dtype=torch.float64).train(training)
    wrapped = graphed(layer)
    x = torch.randn(5, NET.in_features, dtype=torch.float64)
    assert not wrapped.replayable(x)
    with torch.set_grad_enabled(grad):
        y = wrapped(x)
    torch.testing.assert_close(y, x @ layer.to_dense().T + layer.bias, rtol=1e-12, atol=1e-12)
    assert y.requires_grad == grad
    assert (wrapped.captures, wrapped.replays) == (0, 0)


def test_wrapper_keeps_the_module_and_its_state():
    layer = TNLinear(NET)
    wrapped = GraphedModule(layer, max_batch=8, warmup=2)
    assert wrapped.module is layer and wrapped.max_batch == 8 and wrapped.warmup == 2
    assert graphed(layer).max_batch == MAX_BATCH
    assert set(wrapped.state_dict()) == {f"module.{k}" for k in layer.state_dict()}
    assert list(wrapped.parameters()) == list(layer.parameters())


def test_weights_state_changes_on_in_place_update_and_on_reassignment():
    layer = TNLinear(NET)
    wrapped = graphed(layer)
    before = wrapped._weights_state()
    assert wrapped._weights_state() == before
    with torch.no_grad():
        layer.ordered_tensors()[0].mul_(2.0)  # what optimizer.step() does
    after_update = wrapped._weights_state()
    assert after_update != before
    layer.bias = nn.Parameter(torch.zeros(NET.out_features))
    assert wrapped._weights_state() != after_update


def test_cached_weights_are_found_for_the_graph_to_hold():
    layer = TNLinear(NET, strategy="rebuilt").eval()
    assert _cached_tensors(graphed(layer)) == ()
    with torch.no_grad():
        layer(torch.randn(2, NET.in_features))
    held = _cached_tensors(graphed(nn.Sequential(layer)))
    assert len(held) == 1 and held[0].shape == (NET.out_features, NET.in_features)


# ---------------------------------------------------------------------- CUDA: capture and replay
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("strategy", ["nn.Linear", "auto", "chain", "rebuilt", "factorized"])
def test_replay_equals_eager_and_captures_once_per_shape(strategy):
    torch.manual_seed(0)
    module = nn.Linear(64, 64) if strategy == "nn.Linear" else TNLinear(NET, strategy=strategy)
    module = module.cuda().eval()
    wrapped = graphed(module)
    with torch.no_grad():
        for batch in (1, 8, 1):
            for _ in range(2):
                x = torch.randn(batch, 64, device="cuda")
                y = wrapped(x)
                torch.testing.assert_close(y, module(x), rtol=1e-5, atol=1e-6)
        first = wrapped(torch.ones(2, 3, 64, device="cuda"))  # leading axes: batch 6
        second = wrapped(torch.zeros(2, 3, 64, device="cuda"))
    assert wrapped.captures == 3 and wrapped.replays == 8
    assert not torch.equal(first, second)  # outputs are copies, not the static buffer


@pytest.mark.gpu
@needs_cuda
def test_weight_updates_in_place_and_reassigned_are_seen():
    layer = TNLinear(NET, device="cuda").eval()
    wrapped = graphed(layer)
    x = torch.randn(4, 64, device="cuda")
    with torch.no_grad():
        y0 = wrapped(x)
        wrapped(x)
        layer.ordered_tensors()[1].mul_(-3.0)  # in place, as optimizer.step()
        y1 = wrapped(x)
        assert not torch.allclose(y0, y1)
        torch.testing.assert_close(y1, x @ layer.to_dense().T + layer.bias, rtol=1e-5, atol=1e-5)
        layer.bias = nn.Parameter(torch.full((64,), 5.0, device="cuda"))  # a new tensor
        y2 = wrapped(x)
        torch.testing.assert_close(y2, x @ layer.to_dense().T + 5.0, rtol=1e-5, atol=1e-5)
    assert wrapped.captures == 3


@pytest.mark.gpu
@needs_cuda
def test_cache_cleared_by_train_eval_is_safe_to_replay():
    layer = TNLinear(NET, device="cuda", strategy="rebuilt").eval()
    wrapped = graphed(layer)
    x = torch.randn(3, 64, device="cuda")
    with torch.no_grad():
        want = wrapped(x)
        layer.train()
        layer.eval()  # TNLinear drops its rebuilt weight; the graph still reads it
        torch.empty(64 * 64 * 4, device="cuda").fill_(float("nan"))  # memory reuse would show
        torch.testing.assert_close(wrapped(x), want)
    assert wrapped.captures == 1


@pytest.mark.gpu
@needs_cuda
def test_large_batches_training_and_gradients_run_eagerly():
    layer = TNLinear(NET, device="cuda")
    wrapped = graphed(layer, max_batch=16)
    big = torch.randn(17, 64, device="cuda")
    small = torch.randn(4, 64, device="cuda")
    layer.eval()
    with torch.no_grad():
        wrapped(big)
    y = wrapped(small)  # gradients on, parameters require grad
    assert y.requires_grad
    y.sum().backward()
    assert layer.bias.grad is not None
    layer.train()
    with torch.no_grad():
        wrapped(small)
    assert (wrapped.captures, wrapped.replays) == (0, 0)


@pytest.mark.gpu
@needs_cuda
def test_fused_kernel_replays_inside_a_graph():
    pytest.importorskip("triton")
    from tnviz.nn.fused import plan_fused

    class FusedLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = TNLinear(tnviz.mpo([8, 8, 8, 8], [8, 8, 8, 8], ranks=8), device="cuda").eval()

        def forward(self, x):
            return plan_fused(self.layer.network, x.shape[0], True)(x, self.layer.call_context())

    module = FusedLayer()
    wrapped = graphed(module)
    x = torch.randn(8, 4096, device="cuda")
    with torch.no_grad():
        want = x.double() @ module.layer.to_dense().double().T
        for _ in range(2):
            y = wrapped(x)
            assert float((y.double() - want).abs().max() / want.abs().max()) < 2e-3
    assert wrapped.captures == 1 and wrapped.replays == 2
