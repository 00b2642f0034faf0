"""AppTest of the Stack view page: the column of layers, switching views, the gauge move, the proof."""
from __future__ import annotations

import json

import tnviz
from tnviz.stack import stack_views
from tests.app.conftest import current_network, diagram_spec, diagrams

PAGE = "views/stack_view.py"
SMALL_MPO = tnviz.mpo([4, 4, 4], [4, 4, 4], ranks=3, name="small MPO")


def _metric(at, label_start: str):
    return next(m for m in at.metric if m.label.startswith(label_start))


def test_default_view_shows_the_stack_and_its_proof(open_page):
    at = open_page(PAGE, network=SMALL_MPO)
    assert at.title[0].value == "Stack view"
    net = current_network(at)
    (expected,) = stack_views(net, views=["left-to-right"], seed=0)
    assert at.selectbox(key="stack.view").value == "left-to-right"
    assert _metric(at, "Layers").value == str(len(expected.layers))
    assert _metric(at, "max |stack product").value == f"{expected.max_abs_diff:.1e}"
    assert at.success and "equals the dense matrix" in at.success[0].value
    table = at.dataframe[0].value
    assert list(table["in"]) == [l.in_size for l in expected.layers]
    assert list(table["out"]) == [l.out_size for l in expected.layers]
    assert list(table["density"]) == [l.density for l in expected.layers]
    # the column chart, then one figure with a sparsity heatmap per layer (one chart draws faster)
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    heat = json.loads(charts[1].proto.spec)
    assert [t["type"] for t in heat["data"]] == ["heatmap"] * len(expected.layers)
    assert [t["name"] for t in heat["data"]] == [l.name for l in expected.layers]
    assert diagrams(at)


def test_switching_views_changes_the_layers_and_keeps_the_proof(open_page):
    at = open_page(PAGE, network=SMALL_MPO)
    at.selectbox(key="stack.view").set_value("grouped").run()
    (expected,) = stack_views(SMALL_MPO, views=["grouped"], seed=0)
    assert _metric(at, "Layers").value == str(len(expected.layers)) == "2"
    assert list(at.dataframe[0].value["layer"]) == ["A·B", "C"]
    assert "equals the dense matrix" in at.success[0].value
    at.selectbox(key="stack.view").set_value("shifted").run()
    assert list(at.dataframe[0].value["layer"])[:2] == ["B", "A"]


def test_gauge_move_changes_tensors_not_the_matrix(open_page):
    at = open_page(PAGE, network=SMALL_MPO)
    at.selectbox(key="stack.view").set_value("gauge").run()
    assert at.selectbox(key="stack.bond").value == "b1"
    at.selectbox(key="stack.bond").set_value("b2").run()
    changed = float(_metric(at, "Tensors changed by").value)
    assert changed > 1e-3
    assert "equals the dense matrix" in at.success[0].value
    before = _metric(at, "Tensors changed by").value
    at.button[0].click().run()  # a new random X
    assert at.number_input(key="stack.seed").value == 1
    assert _metric(at, "Tensors changed by").value != before
    assert "equals the dense matrix" in at.success[0].value


def test_selecting_a_layer_highlights_its_tensor(open_page):
    at = open_page(PAGE, network=SMALL_MPO)
    at.radio(key="stack.layer").set_value("2. B").run()
    spec = diagram_spec(at)
    assert "B" in spec
    assert "Layer **B** reads b1, i2" in " ".join(c.value for c in at.caption)


def test_the_default_network_and_a_too_large_stack(open_page):
    at = open_page(PAGE)  # the bundled 4096x4096 MPO: checked on sampled columns
    assert "seeded" in _metric(at, "max |stack product").help
    assert "equals the dense matrix" in at.success[0].value
    huge = tnviz.tucker([64, 64], [64, 64], ranks=16, name="huge Tucker")
    at = open_page(PAGE, network=huge)
    # refused from its shapes, before any random tensor is drawn (a stack layer 4,096 -> 268,435,456)
    assert at.error and "a stack" in at.error[0].value and "limited to" in at.error[0].value
