"""The measured choice (tnviz.nn.autotune): ``autotune=True`` picks a supported strategy once per
batch bucket and stays exact; the default layer measures only where :func:`decide` says so (large
layers without a fast path, device kernels) and only in inference.  No timing is asserted."""
from __future__ import annotations

import pytest
import torch

import tnviz
from tests.nn_cases import F64, reference
from tnviz.nn import STRATEGIES, TNLinear
from tnviz.nn import autotune as A


def test_autotune_picks_a_supported_strategy_once_and_stays_exact():
    A.clear_autotune()
    net = tnviz.mpo([4, 3, 5], [2, 3, 4], ranks=3)
    tensors, _ = reference(net, seed=2)
    layer = TNLinear.from_tensors(net, tensors, autotune=True).eval()
    x = torch.randn(6, net.in_features, dtype=F64)
    with torch.no_grad():
        y = layer(x)
    W = torch.from_numpy(tnviz.to_dense(net, tensors))
    torch.testing.assert_close(y, x @ W.T, rtol=1e-12, atol=1e-12)
    keys = [k for k in A._TUNED if k[0] == net]
    assert len(keys) == 1 and keys[0][1] == A.batch_bucket(6) == 8
    assert layer.last_strategy == A._TUNED[keys[0]]
    assert STRATEGIES[layer.last_strategy].supports(net)
    # the same bucket reuses the choice (no new entry); another bucket measures again
    with torch.no_grad():
        layer(x[:5])
        layer(torch.randn(40, net.in_features, dtype=F64))
    assert len([k for k in A._TUNED if k[0] == net]) == 2
    A.clear_autotune()
    assert not A._TUNED


def test_autotune_in_training_leaves_grads_alone_and_matches_dense_gradients():
    A.clear_autotune()
    net = tnviz.tucker([3, 4], [5, 2], ranks=2)
    tensors, leaves = reference(net, seed=5)
    layer = TNLinear.from_tensors(net, tensors, autotune=True)
    assert all(p.grad is None for p in layer.parameters())
    x = torch.randn(3, net.in_features, dtype=F64)
    g = torch.randn(3, net.out_features, dtype=F64)
    (layer(x) * g).sum().backward()
    ((x @ tnviz.to_dense(net, leaves).T) * g).sum().backward()
    for n, p in layer.named_network_tensors().items():
        torch.testing.assert_close(p.grad, leaves[n].grad, rtol=1e-10, atol=1e-12)
    assert any(k[0] == net and k[5] for k in A._TUNED)  # tuned with gradients on
    A.clear_autotune()


def test_default_autotunes_only_large_layers_without_a_fast_path_in_inference():
    from tnviz.nn.strategies import AUTOTUNE_MIN_ELEMENTS

    A.clear_autotune()
    generic = tnviz.from_einsum("xab,ayc,bczd,dw->xyzw", {"x": 32, "y": 32, "z": 32, "w": 32, "a": 2, "b": 2,
                                                          "c": 2, "d": 2}, inputs="xz")
    assert generic.in_features * generic.out_features >= AUTOTUNE_MIN_ELEMENTS
    chain = tnviz.mpo([4, 8, 32], [4, 8, 32], ranks=2)
    ring = tnviz.tensor_ring([4, 8, 32], [4, 8, 32], ranks=2)
    small_generic = tnviz.from_einsum("xab,ayc,bczd,dw->xyzw", {"x": 3, "y": 2, "z": 5, "w": 3, "a": 2, "b": 3,
                                                                "c": 2, "d": 4}, inputs="xz")
    x = torch.randn(2, 1024)
    for net in (generic, chain, ring, small_generic):
        layer = TNLinear(net)
        assert layer.autotune is None
        layer.train()
        layer(x[:, :net.in_features]).sum().backward()  # training: never measured by default
        layer.eval()
        with torch.no_grad():
            y = layer(x[:, :net.in_features])
        torch.testing.assert_close(y, x[:, :net.in_features] @ layer.to_dense().T + layer.bias, rtol=1e-4, atol=1e-5)
    tuned = {k[0] for k in A._TUNED}
    assert tuned == {generic, ring}  # the MPO has 'chain'; the small network is below the threshold
    off = TNLinear(generic, autotune=False).eval()
    A.clear_autotune()
    with torch.no_grad():
        off(x)
    assert not A._TUNED


def test_batch_bucket():
    assert [A.batch_bucket(b) for b in (1, 2, 3, 64, 65, 1000)] == [1, 2, 4, 64, 128, 1024]



def test_a_device_kernel_is_chosen_by_measurement_only(monkeypatch):
    """``fused`` never comes from the cost model; where it can run, the default layer measures it
    against the chain (here faked as available on CPU: its plan then runs the chain itself)."""
    from tnviz.nn.fused import FUSED
    from tnviz.nn.strategies import decide, estimates, measured_only

    net = tnviz.mpo([4, 3], [2, 5], ranks=3)
    assert measured_only("fused") and "fused" not in estimates(net, 8)
    A.clear_autotune()
    plain = TNLinear(net).eval()
    with torch.no_grad():
        plain(torch.randn(8, net.in_features))
    assert not A._TUNED  # small MPO, no kernel: the cost model decides
    if not FUSED.supports(net):
        pytest.skip("triton not importable: the fused strategy supports nothing")
    monkeypatch.setattr(FUSED, "available", lambda device: True)
    layer = TNLinear(net).eval()
    x = torch.randn(8, net.in_features)
    with torch.no_grad():
        y = layer(x)
    torch.testing.assert_close(y, x @ layer.to_dense().T + layer.bias)
    (key,) = [k for k in A._TUNED_TIMES if k[0] == net]
    assert {"chain", "fused"} <= set(A._TUNED_TIMES[key])
    assert decide(net, 8, cached=True, device="cpu").measured  # what the layer asked (one answer)
    assert not decide(net, 8, cached=False, device="cpu").measured  # never in training
    A.clear_autotune()
