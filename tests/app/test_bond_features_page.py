"""AppTest of the Bond features page: picking a bond changes the heatmap, the gauge move keeps the
model and sorts the statistics into invariant and gauge-dependent, the autoencoder's channels."""
from __future__ import annotations

import json

import numpy as np

from tests.app.conftest import diagram_spec

from tnviz.bonds import GAUGE_BEHAVIOUR
from tnviz.model.bonds import inspect_bond, tensorized_digits_mlp
from tnviz.model.demos import digits_split

PAGE = "views/bond_features.py"


def _charts(at) -> dict[str, dict]:
    """Plotly specs by their widget key suffix."""
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec["layout"].get("title", {}).get("text", "")
        out[title] = spec
    return out


def _array(value) -> np.ndarray:
    """A plotly JSON array: a list, or a typed array ``{"dtype", "bdata" (base64), "shape"}``."""
    if isinstance(value, dict):
        import base64

        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape).astype(float)
    return np.array(value, dtype=float)


def _heatmap(at) -> np.ndarray:
    spec = next(s for t, s in _charts(at).items() if "class x channel" in t)
    return _array(spec["data"][0]["z"])


def _metric(at, label: str):
    return next(m for m in at.metric if m.label == label)


def test_picking_a_bond_changes_the_heatmap_and_the_highlight(open_page):
    at = open_page(PAGE)
    assert at.title[0].value == "Bond features"
    assert at.selectbox(key="bonds.bond").options == ["b1", "b2", "b3"]
    assert at.selectbox(key="bonds.bond").value == "b2"
    first = _heatmap(at)
    # the page shows what the library computes for the same model and bond
    data = digits_split()
    expected = inspect_bond(tensorized_digits_mlp("fc2", max_rank=16), "fc2", "b2",
                            data.x_test.reshape(-1, 64), data.y_test)
    assert at.selectbox(key="bonds.rank").value == 16 and first.shape == (10, 16)
    overall = expected.activations.mean(0)
    assert np.allclose(first, expected.stats.class_means - overall, atol=1e-9)
    assert _metric(at, "Rank of the activations").value == str(expected.stats.rank)
    assert "b2" in diagram_spec(at)
    at.selectbox(key="bonds.bond").set_value("b1").run()
    assert not at.exception
    second = _heatmap(at)
    assert second.shape == (10, 16) and not np.allclose(first, second)
    assert "bond b1" in " ".join(c.value for c in at.caption)
    at.radio(key="bonds.values").set_value("selectivity").run()
    assert not np.allclose(_heatmap(at), second)
    at.selectbox(key="bonds.rank").set_value(4).run()
    assert _heatmap(at).shape == (10, 4)


def test_index_reduction_picks_positions_of_the_other_legs(open_page):
    at = open_page(PAGE)
    at.radio(key="bonds.values").set_value("mean activation").run()
    at.selectbox(key="bonds.reduce").set_value("index").run()
    assert not at.exception
    legs = [n.label.split(" ")[0] for n in at.number_input if n.key.startswith("bonds.at.")]
    assert legs == ["o1", "o2", "i3", "i4"]  # the state of b2 in the 4-core MPO
    data = digits_split()
    model = tensorized_digits_mlp("fc2", max_rank=16)
    x = data.x_test.reshape(-1, 64)
    at0 = inspect_bond(model, "fc2", "b2", x, data.y_test, reduce="index", at={})
    assert np.allclose(_heatmap(at), at0.stats.class_means, atol=1e-9)
    at.number_input(key="bonds.at.i3").set_value(2).run()
    moved = inspect_bond(model, "fc2", "b2", x, data.y_test, reduce="index", at={"i3": 2})
    assert np.allclose(_heatmap(at), moved.stats.class_means, atol=1e-9)
    assert not np.allclose(moved.stats.class_means, at0.stats.class_means)


def test_gauge_toggle_keeps_the_model_and_sorts_the_statistics(open_page):
    at = open_page(PAGE)
    assert not at.get("dataframe")  # no gauge move yet
    at.radio(key="bonds.gauge").set_value("invertible").run()
    assert not at.exception
    assert at.success and "the same model" in at.success[0].value
    table = at.dataframe[0].value
    assert list(table["quantity"]) == list(GAUGE_BEHAVIOUR)
    assert table["agrees"].all()
    changed = dict(zip(table["quantity"], table["measured relative change"]))
    assert changed["class-separation spectrum"] < 1e-6 and changed["class means per channel"] > 1e-3
    assert changed["covariance spectrum"] > 1e-3  # not invariant under a non-orthogonal X
    titles = list(_charts(at))
    assert any("after the gauge move" in t for t in titles)
    before = at.dataframe[0].value["measured relative change"].tolist()
    at.button[0].click().run()  # a new random X
    assert at.number_input(key="bonds.seed").value == 1
    assert at.dataframe[0].value["measured relative change"].tolist() != before
    at.radio(key="bonds.gauge").set_value("orthogonal").run()
    changed = dict(zip(at.dataframe[0].value["quantity"], at.dataframe[0].value["measured relative change"]))
    assert changed["covariance spectrum"] < 1e-6 and at.dataframe[0].value["agrees"].all()
    at.radio(key="bonds.gauge").set_value("principal").run()
    assert at.dataframe[0].value["agrees"].all() and at.button[0].disabled
    after = next(s for t, s in _charts(at).items() if "after the gauge move" in t)
    assert _array(after["data"][0]["z"]).shape == (10, 16)


def test_autoencoder_shows_decoded_channels_and_refuses_the_gauge_on_z(open_page):
    at = open_page(PAGE)
    at.selectbox(key="bonds.model").set_value("Tensorized autoencoder (bottleneck = bond z)").run()
    assert not at.exception
    assert at.selectbox(key="bonds.bond").value == "z"
    assert any("decode(one-hot code" in t for t in _charts(at))
    assert "mean image" in _metric(at, "Reconstruction MSE").delta
    assert at.info and "tanh" in at.info[0].value
    at.toggle(key="bonds.relative").set_value(True).run()
    assert any("decode(e_k) − decode(0)" in t for t in _charts(at))
    at.selectbox(key="bonds.bond").set_value("b1").run()
    at.radio(key="bonds.gauge").set_value("orthogonal").run()
    assert not at.exception and at.dataframe[0].value["agrees"].all()


def test_healing_comparison_shows_raw_and_healed_side_by_side(open_page):
    at = open_page(PAGE)
    at.selectbox(key="bonds.rank").set_value(4).run()
    at.toggle(key="bonds.compare_heal").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    data = digits_split()
    x = data.x_test.reshape(-1, 64)
    raw = inspect_bond(tensorized_digits_mlp("fc2", max_rank=4), "fc2", "b2", x, data.y_test).stats
    healed = inspect_bond(tensorized_digits_mlp("fc2", max_rank=4, heal_epochs=1), "fc2", "b2", x, data.y_test).stats
    table = next(d.value for d in at.dataframe if "raw (TT-SVD only)" in d.value.columns)
    rows = dict(zip(table["quantity"], zip(table["raw (TT-SVD only)"], table["healed (1 epoch)"])))
    assert rows["linear probe accuracy (held out)"] == (f"{raw.probe_accuracy:.1%}", f"{healed.probe_accuracy:.1%}")
    assert rows["channels for 90% variance"] == (str(raw.channels_for(0.9)), str(healed.channels_for(0.9)))
    raw_acc, healed_acc = (float(v.rstrip("%")) for v in rows["model accuracy (held out)"])
    assert healed_acc > raw_acc  # one epoch of healing helps the rank-4 MPO
    spectrum = next(s for t, s in _charts(at).items() if "raw (bars) vs healed" in t)
    assert np.allclose(_array(spectrum["data"][0]["y"]), raw.spectrum)
    assert np.allclose(_array(spectrum["data"][2]["y"]), healed.spectrum)
    change = next(s for t, s in _charts(at).items() if "change of the centred class means" in t)
    assert np.allclose(_array(change["data"][0]["z"]), healed.centred_means - raw.centred_means, atol=1e-9)
