"""method='auto' with the neuron order as a candidate dimension (tnviz.model.auto_order): on a
feed-forward pair whose weights are Kronecker products with shuffled hidden neurons, the searched
order wins, both weights are re-ordered consistently, and the folder round-trips."""
from __future__ import annotations

import json
import math

import pytest
import torch

import tnviz
from tnviz.model.apply import apply_plan
from tnviz.model.folder import load_compressed
from tnviz.model.plan import Rule, make_plan
from tests.model_cases import FFN

pytestmark = pytest.mark.one_torch_thread

RULES = [Rule(r"proj$", "auto", {"ratio": 1.7})]


def _shuffled_kronecker_ffn(seed=0):
    """W_in = kron(A, B) (64x16: an exact MPO over the hidden legs (16, 4)), W_out = kron(D, E),
    the hidden neurons of both shuffled by one permutation; and calibration inputs."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    model = FFN()
    shuffle = torch.randperm(64, generator=g)
    with torch.no_grad():
        model.mlp.up_proj.weight.copy_(torch.kron(r(16, 4), r(4, 4))[shuffle])
        model.mlp.down_proj.weight.copy_(torch.kron(r(4, 16), r(4, 4))[:, shuffle])
    return model.eval(), [r(400, 16)]


def _data_error(W, approx, X):
    """||(W - W~) X^T|| / ||W X^T|| on the inputs themselves (not tnviz's covariance)."""
    W, X = W.detach(), X.detach()
    return float(torch.linalg.norm((W - approx) @ X.T) / torch.linalg.norm(W @ X.T))


@pytest.fixture(scope="module")
def searched():
    model, X = _shuffled_kronecker_ffn()
    return model, X, apply_plan(model, make_plan(model, RULES), calibration=X, device="cpu")


def test_auto_picks_the_searched_order_where_the_stored_one_hides_the_structure(searched):
    model, X, result = searched
    (perm,) = result.permutations
    assert perm.pair == "mlp" and perm.tensors == {"mlp.up_proj.weight": 0, "mlp.up_proj.bias": 0,
                                                   "mlp.down_proj.weight": 1}
    index = torch.as_tensor(perm.perm)
    hidden = torch.relu(X[0] @ model.mlp.up_proj.weight.T + model.mlp.up_proj.bias)
    references = {"mlp.up_proj": (model.mlp.up_proj.weight[index], X[0]),  # the permuted dense weights
                  "mlp.down_proj": (model.mlp.down_proj.weight[:, index], hidden[:, index])}
    modules = dict(result.model.named_modules())
    for layer in result.layers:
        search = layer.search
        assert search["order"] == "searched" and search["chosen"]["order"] == "searched"
        assert search["runner_up"]["order"] == "searched" and "searched order" in search["chosen"]["label"]
        stored = [c["error"] for c in search["candidates"] if c["order"] == "stored" and c["error"] is not None]
        found = [c["error"] for c in search["candidates"] if c["order"] == "searched" and c["error"] is not None]
        assert len(stored) >= 8 and len(found) >= 8
        assert min(stored) > 0.2  # every network in the stored order loses a fifth or more (measured 0.23-0.77)
        W, inputs = references[layer.name]
        dense = modules[layer.name].to_dense().detach()
        assert _data_error(W, dense, inputs) < 1e-6  # measured on the dense reference, not by tnviz
        assert search["chosen"]["error"] < 1e-6
    assert perm.extra["auto"]["searched"] < 1e-6 < 0.2 < perm.extra["auto"]["stored"]


def test_the_compressed_model_is_the_dense_reference_of_the_permuted_decomposition(searched):
    model, X, result = searched
    (perm,) = result.permutations
    index = torch.as_tensor(perm.perm)
    modules = dict(result.model.named_modules())
    reference = FFN()  # the original re-ordered by hand, its weights replaced by the networks' dense matrices
    with torch.no_grad():
        reference.mlp.up_proj.weight.copy_(modules["mlp.up_proj"].to_dense())
        reference.mlp.up_proj.bias.copy_(model.mlp.up_proj.bias[index])
        reference.mlp.down_proj.weight.copy_(modules["mlp.down_proj"].to_dense())
        reference.mlp.down_proj.bias.copy_(model.mlp.down_proj.bias)
    x = X[0][:32]
    with torch.no_grad():
        out, ref, original = result.model(x), reference(x), model(x)
    assert torch.allclose(out, ref, atol=1e-10, rtol=0)
    assert torch.allclose(out, original, atol=1e-6, rtol=0)  # exact networks in the searched order


def test_the_folder_stores_the_order_and_its_reader_applies_it(tmp_path):
    model, X = _shuffled_kronecker_ffn()
    result = tnviz.compress(model, tmp_path / "out", rules=RULES, calibration=X, device="cpu")
    doc = json.loads((tmp_path / "out" / "tnviz.json").read_text())
    (record,) = doc["permutations"]
    assert record["perm"] == list(result.applied.permutations[0].perm)
    x = X[0][:16]
    loaded = load_compressed(tmp_path / "out", into=_shuffled_kronecker_ffn()[0])
    with torch.no_grad():
        assert torch.allclose(loaded(x), result.model(x), atol=1e-10, rtol=0)
        assert torch.allclose(loaded(x), model(x), atol=1e-6, rtol=0)
    report = result.report()
    assert all(entry["search"]["order"] == "searched" for entry in report["layers"])


def test_a_pair_whose_order_does_not_help_keeps_the_stored_one():
    """Random weights: the searched order lowers nothing by much; whichever order is adopted, the
    pair's summed best error in it is the lower one, and every weight's winner is of that order."""
    torch.manual_seed(3)
    model = FFN().eval()
    X = [torch.randn(300, 16, dtype=torch.float64)]
    result = apply_plan(model, make_plan(model, RULES), calibration=X, device="cpu")
    best = {}
    for layer in result.layers:
        s = layer.search
        assert s["chosen"]["order"] == s["order"]
        for order in ("stored", "searched"):
            errors = [c["error"] for c in s["candidates"] if c["order"] == order and c["error"] is not None
                      and c["params"] <= s["budget"]]
            best[order] = best.get(order, 0.0) + (min(errors) if errors else math.inf)
    adopted = result.layers[0].search["order"]
    assert adopted == ("searched" if best["searched"] < best["stored"] * (1 - 1e-9) else "stored")
    assert bool(result.permutations) == (adopted == "searched")


def test_the_chart_marks_the_order(searched):
    from tnviz.render.charts import search_chart

    _, _, result = searched
    spec = search_chart(result.layers[0].search).to_plotly_json()
    symbols = {(t["name"], s) for t in spec["data"] if isinstance(t.get("marker", {}).get("symbol"), list)
               for s in t["marker"]["symbol"]}
    assert any(s.endswith("-open") for _, s in symbols) and any(not s.endswith("-open") for _, s in symbols)
    assert {"stored neuron order", "searched neuron order"} <= {t["name"] for t in spec["data"]}
