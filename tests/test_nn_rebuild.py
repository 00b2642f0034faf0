"""The ``rebuilt`` strategy (tnviz.nn.rebuild): the two-halves rebuild of chains and rings against
the dense matrix and its gradients, in both layouts."""
from __future__ import annotations

import pytest
import torch

import tnviz
from tests.nn_cases import F64, HALVES_NETWORKS, reference
from tnviz.nn import workspace
from tnviz.nn.rebuild import dense_weight, rebuild_expression, rebuild_halves


@pytest.mark.parametrize("loop", [True, False], ids=["loop product", "one GEMM"])
@pytest.mark.parametrize("name", list(HALVES_NETWORKS))
def test_two_halves_rebuild_equals_the_dense_matrix_and_its_gradients(name, loop, monkeypatch):
    """``rebuilt`` rebuilds chains and rings as two merged halves: on CPU by a batched GEMM per
    left output written in W's layout (``loop``), elsewhere by one GEMM and a blocked permute or
    a GEMM per output pair in place.  The matrix and the gradients (under no_grad too) equal
    opt_einsum's contraction of the whole network."""
    if not loop:
        monkeypatch.setattr(workspace, "halves_product_ok", lambda *a: False)
    net = HALVES_NETWORKS[name]
    assert rebuild_halves(net) is not None
    tensors, leaves = reference(net, seed=21)
    ordered = [leaves[n] for n in net.tensor_names]
    W = dense_weight(net, ordered)
    assert (W.grad_fn is not None and "HalvesProduct" in type(W.grad_fn).__name__) == loop
    torch.testing.assert_close(W, torch.from_numpy(tnviz.to_dense(net, tensors)), rtol=1e-12, atol=1e-12)
    G = torch.randn(W.shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    grads = torch.autograd.grad(W, ordered, G)
    reference_w = rebuild_expression(net)(*ordered, backend="torch").reshape(W.shape)
    for got, want in zip(grads, torch.autograd.grad(reference_w, ordered, G)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    with torch.no_grad():  # the eval cache's build
        torch.testing.assert_close(dense_weight(net, ordered), reference_w.detach(), rtol=1e-12, atol=1e-12)
    assert rebuild_halves(tnviz.tucker([3, 4], [2, 2], ranks=2)) is None
    assert rebuild_halves(tnviz.mpo([7], [5], ranks=[])) is None


def test_the_halves_checks_cover_both_rebuild_layouts():
    """Few bonds between the halves: a GEMM per output pair written in place; many: one GEMM and
    a permute.  The networks above take both."""
    small_k = [(h.K * (h.I + h.J) < h.I * h.J) for h in map(rebuild_halves, HALVES_NETWORKS.values())]
    assert any(small_k) and not all(small_k)

