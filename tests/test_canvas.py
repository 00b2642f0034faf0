"""Canvas state <-> network conversion (tnviz.canvas): both directions, every template,
hyperedges, layout kept, and bad drawings rejected by the network's own rules."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tnviz
from tnviz.canvas import CANVAS_FORMAT, auto_layout, canvas_to_network, network_to_canvas
from tnviz.errors import InvalidNetworkError
from tnviz.testing import random_network_params, template_networks

NETWORKS = template_networks()
IDS = [name for name, _ in NETWORKS]


@pytest.mark.parametrize("name,net", NETWORKS, ids=IDS)
def test_every_template_round_trips_with_its_layout(name, net):
    assert net.layout, "templates come with positions; the test needs them to be non-trivial"
    state = network_to_canvas(net)
    # the state is plain JSON (it travels to the browser and back)
    state = json.loads(json.dumps(state))
    back = canvas_to_network(state)
    assert back == net
    assert back.layout == net.layout
    assert back.to_json() == net.to_json()


@pytest.mark.parametrize("name,net", NETWORKS, ids=IDS)
def test_canvas_state_mirrors_the_network(name, net):
    state = network_to_canvas(net)
    assert state["format"] == CANVAS_FORMAT
    assert [t["name"] for t in state["tensors"]] == list(net.tensor_names)
    assert [[leg["index"] for leg in t["legs"]] for t in state["tensors"]] == [list(t.indices) for t in net.tensors]
    assert state["inputs"] == list(net.inputs) and state["outputs"] == list(net.outputs)
    assert state["sizes"] == net.sizes
    for t in state["tensors"]:
        assert (t["x"], t["y"]) == net.layout[t["name"]]
    ids = [t["id"] for t in state["tensors"]] + [leg["id"] for t in state["tensors"] for leg in t["legs"]]
    assert len(ids) == len(set(ids)), "tensor and leg ids must be unique (they are React Flow handles)"


def test_hyperedge_is_one_index_on_many_legs():
    net = tnviz.cp([4, 4], [4, 4], 5)
    state = network_to_canvas(net)
    legs_on_r = [leg for t in state["tensors"] for leg in t["legs"] if leg["index"] == "r"]
    assert len(legs_on_r) == 4
    back = canvas_to_network(state)
    assert back.hyperedges == ("r",) and back == net


def test_joining_a_leg_to_a_bond_makes_a_hyperedge():
    # What the canvas does when a leg is dropped on an existing bond: the leg takes its index.
    net = tnviz.mpo([2, 2, 2], [2, 2, 2], ranks=3)
    state = network_to_canvas(net)
    c = state["tensors"][2]
    c["legs"].append({"id": "new", "index": "b1"})
    back = canvas_to_network(state)
    assert back.hyperedges == ("b1",)
    assert back.tensors_on("b1") == ("A", "B", "C")
    assert back != net


def test_layout_follows_the_drawing_positions():
    net = tnviz.mpo([2, 2], [2, 2], ranks=2)
    state = network_to_canvas(net)
    state["tensors"][1]["x"], state["tensors"][1]["y"] = 3.125, -1.5
    back = canvas_to_network(state)
    assert back.layout["B"] == (3.125, -1.5)
    assert back.layout["A"] == net.layout["A"]
    assert back != net and back.with_layout(net.layout) == net


def test_network_without_layout_gets_positions_and_keeps_them():
    net = tnviz.TensorNetwork.build(
        [("A", ["i1", "b"]), ("B", ["b", "o1"])], {"i1": 3, "o1": 5, "b": 2}, ["i1"], ["o1"], "plain"
    )
    assert net.layout == {}
    state = network_to_canvas(net)
    positions = [(t["x"], t["y"]) for t in state["tensors"]]
    assert len(set(positions)) == 2, "each tensor needs its own place on the canvas"
    back = canvas_to_network(state)
    assert back == net.with_layout(auto_layout(net))
    assert canvas_to_network(network_to_canvas(back)) == back


def test_partial_layout_keeps_given_positions():
    net = tnviz.TensorNetwork.build(
        [("A", ["i1", "b"]), ("B", ["b", "o1"])], {"i1": 3, "o1": 5, "b": 2}, ["i1"], ["o1"], layout={"A": (7.5, 1.0)}
    )
    layout = auto_layout(net)
    assert layout["A"] == (7.5, 1.0) and layout["B"] != (7.5, 1.0)


def test_drawing_made_by_the_mouse_converts():
    # A state as the browser sends it: generated ids, a leftover size of a deleted leg.
    state = {
        "format": "tnviz.canvas", "version": 1, "name": "drawn",
        "tensors": [
            {"id": "tx1", "name": "A", "x": 0, "y": 0, "legs": [{"id": "l1", "index": "i1"}, {"id": "l2", "index": "o1"}, {"id": "l3", "index": "b1"}]},
            {"id": "tx2", "name": "B", "x": 2, "y": 0, "legs": [{"id": "l4", "index": "b1"}, {"id": "l5", "index": "i2"}, {"id": "l6", "index": "o2"}]},
        ],
        "sizes": {"i1": 4, "o1": 4, "b1": 3, "i2": 5, "o2": 2, "k9": 7},
        "inputs": ["i2", "i1"], "outputs": ["o1", "o2"],
    }
    net = canvas_to_network(state)
    assert net.inputs == ("i2", "i1"), "the order of the inputs is the order the user set"
    assert net.in_features == 20 and net.out_features == 8
    assert net.bonds == ("b1",)
    assert "k9" not in net.sizes
    assert net.params == 4 * 4 * 3 + 3 * 5 * 2
    assert net.layout == {"A": (0, 0), "B": (2, 0)}


def _valid_state():
    return network_to_canvas(tnviz.mpo([2, 2], [2, 2], ranks=2))


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda s: s["outputs"].remove("o1"), "'o1'"),  # dangling leg neither input nor output
        (lambda s: s["sizes"].__setitem__("b1", 0), "'b1' has size 0"),
        (lambda s: s["sizes"].__setitem__("b1", "x"), "'b1' has size 'x'"),
        (lambda s: s["sizes"].pop("i1"), "'i1'"),
        (lambda s: s["tensors"][1].__setitem__("name", "A"), "'A' is used twice"),
        (lambda s: s["tensors"][0].__setitem__("name", ""), "tensor names must be non-empty"),
        (lambda s: s["tensors"][0]["legs"].append({"id": "z", "index": "i1"}), "'i1' is listed twice"),
        (lambda s: s.__setitem__("tensors", []), "at least one tensor"),
        (lambda s: s["inputs"].append("b1"), "'b1' is used by 2 tensors"),
    ],
)
def test_bad_drawings_fail_with_the_loader_message(mutate, needle):
    state = _valid_state()
    canvas_to_network(state)  # valid before the edit
    bad = copy.deepcopy(state)
    mutate(bad)
    with pytest.raises(InvalidNetworkError, match=needle.replace("(", r"\(")):
        canvas_to_network(bad)
    assert canvas_to_network(state) == tnviz.mpo([2, 2], [2, 2], ranks=2), "the input state is not modified"


@pytest.mark.parametrize("state", [None, [], "x", {"tensors": {}}, {"tensors": [1]}, {"tensors": [], "sizes": []},
                                   {"format": "other"}, {"tensors": [{"name": "A", "legs": []}], "inputs": "i1"}])
def test_malformed_states_raise_invalid_network(state):
    with pytest.raises(InvalidNetworkError):
        canvas_to_network(state)


@settings(max_examples=60, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12))
def test_fuzzed_states_never_crash(state):
    try:
        canvas_to_network(state)
    except InvalidNetworkError:
        pass


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_template_networks_round_trip(seed):
    for name, params in random_network_params(seed):
        net = tnviz.build_template(name, **params)
        assert canvas_to_network(json.loads(json.dumps(network_to_canvas(net)))) == net, name


def test_canvas_module_does_not_import_streamlit():
    code = "import sys, tnviz.canvas, tnviz.export; assert 'streamlit' not in sys.modules; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


FRONTEND = Path(__file__).resolve().parents[1] / "tnviz_app" / "components" / "canvas" / "frontend"


def test_frontend_edit_rules_with_node():
    """The canvas's pure edits (frontend/src/model.js) under node's own test runner."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the browser tests still drive these edits")
    done = subprocess.run([node, "--test", "test/"], cwd=FRONTEND, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    counts = dict(re.findall(r"^# (tests|pass|fail) (\d+)$", done.stdout, re.M))
    assert counts["fail"] == "0" and int(counts["pass"]) == int(counts["tests"]) >= 5, done.stdout[-2000:]


def test_committed_bundle_is_an_es_module_with_a_default_export():
    bundle = (FRONTEND.parent / "static" / "canvas.js").read_text(encoding="utf-8")
    assert len(bundle) > 100_000, "React Flow and React are bundled in (nothing is fetched at run time)"
    assert re.search(r"export\s*\{\s*\w+ as default\s*\}", bundle), "Streamlit calls the module's default export"
    assert 'import("http' not in bundle and "from\"http" not in bundle, "no module is loaded from the network"


def test_a_network_without_positions_gets_the_diagrams_layout():
    from tnviz.canvas import AUTO_SPACING
    from tnviz.render.scene import auto_layout as diagram_layout

    # a square with one diagonal: a row would run bonds a (A-D) and e (A-C) through B and C
    net = tnviz.from_einsum("iabe,jbc,kcde,lda->ijkl", 2, inputs="ij").with_layout(None)
    pos = auto_layout(net)
    assert pos == {n: (round(x * AUTO_SPACING, 4), round(y * AUTO_SPACING, 4))
                   for n, (x, y) in diagram_layout(net).items()}
    assert len({y for _, y in pos.values()}) > 1  # not a row
    state = network_to_canvas(net)
    assert {t["name"]: (t["x"], t["y"]) for t in state["tensors"]} == pos
    # a partial layout keeps its positions; the rest go in a row below
    partial = net.with_layout({"A": (0.0, 0.0)})
    placed = auto_layout(partial)
    assert placed["A"] == (0.0, 0.0) and all(placed[n][1] < 0 for n in "BCD")
