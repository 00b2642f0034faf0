"""AppTest of the Designer's Draw section with canvas edits injected as the component state
(what the browser's setStateValue sends): edits update the network, a bad edit shows its
message and keeps the last valid network, templates redraw the canvas, stale edits are ignored."""
from __future__ import annotations

import copy
import html
import json

import tnviz
from tnviz.canvas import canvas_to_network, network_to_canvas
from tnviz_app.components.formatting import human
from tnviz.render.exports import EXPORTS
from tests.app.conftest import current_network, diagram_spec, open_build_tab

KEY = "designer.canvas"


def canvas_data(at) -> dict:
    """The data the page sent to the canvas component in the last run."""
    comps = at.get("bidi_component")
    assert len(comps) == 1, "the Designer shows one canvas"
    proto = comps[0].proto
    text = proto.json or proto.mixed.json
    data = json.loads(text)
    assert isinstance(data["drawing"], str), "the drawing goes as JSON text (no pandas import to scan a dict)"
    return {**data, "drawing": json.loads(data["drawing"])}


def inject(at, drawing: dict, seq: str) -> None:
    """Send one canvas edit, as the frontend does, and rerun."""
    revision = at.session_state[f"{KEY}.revision"]
    at.session_state[KEY] = {"drawing": {"revision": revision, "seq": seq, "drawing": drawing}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def live_params(at) -> str:
    return [m for m in at.metric if m.label == "Parameters"][-1].value


def live_flops(at) -> tuple[str, str]:
    m = [m for m in at.metric if m.label.startswith("Forward FLOPs")][-1]
    return m.label, m.value


def live_flops_help(at) -> str:
    return [m for m in at.metric if m.label.startswith("Forward FLOPs")][-1].help


def test_canvas_shows_the_current_network(open_page):
    at = open_page()
    net = current_network(at)
    data = canvas_data(at)
    assert canvas_to_network(data["drawing"]) == net
    assert data["error"] is None and data["revision"]
    assert live_params(at) == f"{net.params:,}"
    batch = at.selectbox(key=f"{KEY}.batch").value
    c = tnviz.cost(net, batch)
    assert live_flops(at) == ("Forward FLOPs (best path)", human(c.flops))
    assert f"{c.flops:,} at batch {batch:,}" in live_flops_help(at)
    # the layer's einsum beside the canvas, as wrapping inline code (a code block cut long ones off)
    assert any(f">{html.escape(net.layer_equation())}</code>" in m.value for m in at.markdown)


def test_an_edit_updates_the_network_numbers_and_diagram(open_page):
    at = open_page()
    before = current_network(at)
    drawing = network_to_canvas(before)
    drawing["sizes"]["b2"] = 9
    drawing["tensors"][0]["x"] = -3.5
    inject(at, drawing, "e1")
    after = current_network(at)
    assert after != before
    assert after.sizes["b2"] == 9 and after.layout["A"] == (-3.5, 0.0)
    # the drawing is no longer the example it started from: its name says so
    assert after == canvas_to_network(drawing).with_name(f"{before.name} (edited)")
    assert at.session_state["tnviz.network_source"] == "canvas"
    assert "b2=9" in diagram_spec(at), "the Designer's diagram shows the edited network"
    assert live_params(at) == f"{after.params:,}" != f"{before.params:,}"
    batch = at.selectbox(key=f"{KEY}.batch").value
    assert live_flops(at)[1] == human(tnviz.cost(after, batch).flops)
    assert f"{tnviz.cost(after, batch).flops:,} at batch" in live_flops_help(at)
    assert canvas_data(at)["error"] is None


def test_a_bad_edit_shows_its_message_and_keeps_the_last_valid_network(open_page):
    at = open_page()
    drawing = network_to_canvas(current_network(at))
    drawing["sizes"]["b1"] = 5
    inject(at, drawing, "good")
    valid = current_network(at)
    assert valid.sizes["b1"] == 5

    bad = copy.deepcopy(drawing)
    bad["outputs"].remove("o2")  # a dangling leg that is neither input nor output
    bad["sizes"]["b3"] = 2  # and another change that must NOT reach the network
    inject(at, bad, "bad")
    message = "every open index must be declared as an input or an output; 'o2' on tensor 'B' is neither"
    assert current_network(at) == valid, "the last valid network stays"
    assert canvas_data(at)["error"] == message, "the canvas gets the message to show"
    assert canvas_data(at)["drawing"] == bad, "the canvas keeps the user's drawing, not the valid network"
    assert any(message in e.value for e in at.error), "the message is on the page too"
    assert live_params(at) == f"{valid.params:,}"

    # the same (stale) state again changes nothing; a fixed drawing clears the error
    at.run()
    assert current_network(at) == valid and canvas_data(at)["error"] == message
    fixed = copy.deepcopy(bad)
    fixed["outputs"].insert(1, "o2")
    inject(at, fixed, "fixed")
    assert canvas_data(at)["error"] is None and not at.error
    assert current_network(at) == canvas_to_network(fixed).with_name(valid.name) and current_network(at).sizes["b3"] == 2


def test_a_template_opens_on_the_canvas_and_stale_edits_are_ignored(open_page):
    at = open_page()
    old_revision = at.session_state[f"{KEY}.revision"]
    old_drawing = network_to_canvas(current_network(at))
    at.selectbox(key="designer.template").set_value("CP").run()
    net = current_network(at)
    assert net == tnviz.build_template("CP")
    data = canvas_data(at)
    assert data["revision"] != old_revision
    assert canvas_to_network(data["drawing"]) == net and net.hyperedges == ("r",)

    # an edit made on the old drawing (sent before the template arrived) must not undo it
    old_drawing["sizes"]["b1"] = 2
    at.session_state[KEY] = {"drawing": {"revision": old_revision, "seq": "late", "drawing": old_drawing}}
    at.run()
    assert current_network(at) == net


def test_drawing_from_an_empty_canvas(open_page):
    at = open_page()
    empty = {"format": "tnviz.canvas", "version": 1, "name": "", "tensors": [], "sizes": {}, "inputs": [], "outputs": []}
    before = current_network(at)
    inject(at, empty, "clear")
    assert canvas_data(at)["error"] == "a network needs at least one tensor; got an empty network"
    assert current_network(at) == before
    one = copy.deepcopy(empty)
    one["tensors"].append({"id": "t1", "name": "W", "x": 0, "y": 0, "legs": [{"id": "l1", "index": "i1"}, {"id": "l2", "index": "o1"}]})
    one["sizes"] = {"i1": 6, "o1": 5}
    one["inputs"], one["outputs"] = ["i1"], ["o1"]
    inject(at, one, "one tensor")
    net = current_network(at)
    assert (net.in_features, net.out_features, net.params) == (6, 5, 30)
    assert live_params(at) == "30"


def _warnings(at) -> list[str]:
    return [w.value for w in at.warning]


def test_warnings_beside_the_canvas(open_page):
    at = open_page()
    assert not _warnings(at)
    drawing = network_to_canvas(current_network(at))
    drawing["sizes"]["b1"] = 100  # A's side has only i1*o1 = 64 dimensions
    inject(at, drawing, "wasted rank")
    expected = tnviz.cost(current_network(at)).warnings
    assert expected and any("'b1' has size 100 but at most 64 is useful" in w for w in _warnings(at))

    # one huge matrix: at batch 16384 the output alone is 16384 * 32768 elements (> 2**28)
    huge = {"format": "tnviz.canvas", "version": 1, "name": "huge",
            "tensors": [{"id": "t", "name": "W", "x": 0, "y": 0,
                         "legs": [{"id": "a", "index": "i1"}, {"id": "b", "index": "o1"}]}],
            "sizes": {"i1": 1024, "o1": 32768}, "inputs": ["i1"], "outputs": ["o1"]}
    inject(at, huge, "huge")
    assert not any("intermediates are limited" in w for w in _warnings(at)), "batch 1024 fits"
    at.selectbox(key=f"{KEY}.batch").set_value(16384).run()
    assert any("intermediates are limited to 268,435,456 elements; the forward pass at batch 16384 makes one of 536,870,912"
               in w for w in _warnings(at)), _warnings(at)


def test_one_export_button_per_format(open_page):
    at = open_page()
    buttons = [b for b in at.get("download_button") if b.proto.id and "designer.canvas.export" in b.proto.id]
    labels = [b.proto.label for b in buttons]
    assert labels == [spec.label for spec in EXPORTS.values()]


# ---------------------------------------------------------------------- issue 13 item 9: no stale state
def _sidebar(at) -> str:
    return " ".join(e.value for e in [*at.sidebar.markdown, *at.sidebar.caption])  # nested too


def test_the_sidebar_shows_the_canvas_edit_of_the_same_run(open_page):
    # the sidebar (drawn before the page) lagged one canvas edit behind
    at = open_page()
    drawing = network_to_canvas(current_network(at))
    drawing["sizes"]["b2"] = 40
    inject(at, drawing, "wide")
    after = current_network(at)
    assert live_params(at) == f"{after.params:,}"
    assert f"{after.params:,} params" in _sidebar(at)


def test_an_old_error_goes_once_a_canvas_edit_succeeds(open_page):
    at = open_page()
    open_build_tab(at, "Einsum")
    at.text_input(key="designer.eq").set_value("ab,bc")
    next(b for b in at.button if b.label == "Build from einsum").click().run()
    assert at.error and any("Kept the previous network" in c.value for c in at.caption)
    drawing = network_to_canvas(current_network(at))
    drawing["sizes"]["b1"] = 3
    inject(at, drawing, "after the error")
    assert not at.error
    assert not any("Kept the previous network" in c.value for c in at.caption)


def test_a_drawn_network_is_marked_edited_and_keeps_a_name_the_user_gave(open_page):
    at = open_page()
    drawing = network_to_canvas(current_network(at))
    drawing["tensors"][0]["x"] = -4.0  # a move only: still the example
    inject(at, drawing, "move")
    assert current_network(at).name == "MPO 4096x4096"
    drawing["sizes"]["b1"] = 3
    inject(at, drawing, "resize")
    net = current_network(at)
    assert net.name == "MPO 4096x4096 (edited)" and at.subheader[0].value == net.name
    assert at.text_input(key="designer.name").value == net.name
    assert any("`MPO_4096x4096__edited.*`" in c.value for c in at.caption)  # the export files' names
    revision = at.session_state[f"{KEY}.revision"]
    at.text_input(key="designer.name").set_value("Wide MPO").run()
    assert current_network(at).name == "Wide MPO"
    assert at.session_state[f"{KEY}.revision"] == revision, "a rename keeps the drawing (no reset)"
    drawing["sizes"]["b2"] = 5
    inject(at, drawing, "another")
    assert current_network(at).name == "Wide MPO" and current_network(at).sizes["b2"] == 5
