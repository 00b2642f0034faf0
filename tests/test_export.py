"""Exports (tnviz.export): JSON, the opt_einsum snippet (run, checked against the dense
matrix), the PyTorch snippet (run when tnviz.nn exists).  The diagram exports are in test_render.py."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import tnviz
from tnviz.errors import InvalidNetworkError
from tnviz.export import EXPORTS, einsum_snippet, export, export_filename, torch_snippet
from tnviz.testing import small_template_networks

SMALL = small_template_networks()
IDS = [name for name, _ in SMALL]


@pytest.mark.parametrize("name,net", SMALL, ids=IDS)
def test_json_export_loads_back(name, net):
    assert tnviz.load_network(export(net, "json")) == net


@pytest.mark.parametrize("name,net", SMALL, ids=IDS)
def test_einsum_snippet_runs_and_equals_the_dense_layer(name, net):
    batch = 3
    code = einsum_snippet(net, batch=batch)
    ns: dict = {}
    exec(compile(code, f"<einsum snippet {name}>", "exec"), ns)
    y, x, tensors = ns["y"], ns["x"], ns["tensors"]
    assert y.shape == (batch, net.out_features)
    weight = tnviz.to_dense(net, dict(zip(net.tensor_names, tensors)))
    expected = x @ weight.T
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("optimize", ["greedy", "left-to-right", "auto"])
def test_einsum_snippet_carries_the_cost_path(optimize):
    net = tnviz.mpo([2, 3, 2], [3, 2, 2], ranks=[3, 4])
    code = einsum_snippet(net, batch=16, optimize=optimize)
    c = tnviz.cost(net, batch=16, optimize=optimize)
    ns: dict = {}
    exec(code, ns)
    assert [tuple(p) for p in ns["path"]] == [tuple(p) for p in c.path]
    assert f"{c.flops:,} FLOPs at batch 16" in code
    assert ns["equation"] == net.layer_equation()


def test_paths_differ_between_optimizers_so_the_path_check_can_fail():
    net = tnviz.mpo([2, 3, 2], [3, 2, 2], ranks=[3, 4])
    assert tnviz.cost(net, 16, "left-to-right").path != tnviz.cost(net, 16, "greedy").path


@pytest.mark.parametrize("name,net", SMALL[:3], ids=IDS[:3])
def test_torch_snippet_runs(name, net):
    if importlib.util.find_spec("tnviz.nn") is None:
        pytest.skip("tnviz.nn (TNLinear) is not in this checkout yet; the snippet builds on it")
    torch = pytest.importorskip("torch")
    code = torch_snippet(net, batch=2)
    ns: dict = {}
    exec(compile(code, f"<torch snippet {name}>", "exec"), ns)
    y = ns["y"]
    assert isinstance(y, torch.Tensor) and tuple(y.shape) == (2, net.out_features)
    assert torch.isfinite(y).all() and y.abs().max() > 0
    assert tnviz.load_network(ns["spec"]) == net
    layer, x = ns["layer"], ns["x"]
    with torch.no_grad():  # the layer is the network: y = x W^T + b with W its dense matrix
        expected = x @ layer.to_dense().T + (layer.bias if layer.bias is not None else 0)
    torch.testing.assert_close(y.detach(), expected, rtol=1e-4, atol=1e-5)


def test_torch_snippet_embeds_the_spec_exactly():
    net = tnviz.build_template("CP conv kernel (Fig. 3 v)")
    code = torch_snippet(net)
    spec_src = code.split("spec = ", 1)[1].split("\n\n", 1)[0]
    assert tnviz.load_network(eval(spec_src)) == net  # noqa: S307 - our own generated literal
    assert "from tnviz.nn import TNLinear" in code and "TNLinear(tnviz.load_network(spec))" in code


def test_registry_and_errors():
    # the diagrams need a drawing: they are exported by tnviz.render.exports (test_render.py)
    assert set(EXPORTS) == {"json", "einsum", "torch"}
    net = tnviz.mpo([2, 2], [2, 2], ranks=2)
    with pytest.raises(InvalidNetworkError, match=r"unknown export format 'pdf'.*'json'"):
        export(net, "pdf")
    with pytest.raises(InvalidNetworkError, match=r"unknown export format 'svg'.*tnviz.render.exports"):
        export(net, "svg")
    assert export_filename(net.with_name("MPO 4x4 / v2"), "json") == "MPO_4x4___v2.json"
    assert export_filename(net.with_name(""), "torch") == "network_torch.py"
