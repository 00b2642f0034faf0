"""AppTest of the Designer page: templates, einsum, uploads, examples, errors that keep the network."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tnviz
from tnviz_app.components.inputs import parse_int_list, parse_letters, parse_ranks, parse_sizes
from tnviz_app.state import DEFAULT_EXAMPLE, EXAMPLES_DIR, MAX_NETWORK_UPLOAD_BYTES, list_examples, load_example
from tests.app.conftest import current_network, diagram_dots, diagram_spec, dot_of, open_build_tab

DESIGNER = "views/designer.py"


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_default_page_shows_the_bundled_example(open_page):
    at = open_page()
    assert at.title[0].value == "Designer"
    net = current_network(at)
    assert net == load_example(DEFAULT_EXAMPLE) == tnviz.build_template("MPO / tensor train")
    spec = diagram_spec(at)
    assert diagram_dots(at) == [dot_of(net)] and "<svg" in spec  # laid out by neato on the server
    assert "b1=4" in spec and "i4=8" in spec
    sidebar = " ".join(e.value for e in [*at.sidebar.markdown, *at.sidebar.caption])  # nested too
    # on a fresh server torch loads in the background (it held the first page 1.5-3 s): said, then shown
    from tnviz_app.state import device_info, known_device

    if known_device() is None:
        assert "Device:** detecting" in sidebar and "torch is loading in the background" in sidebar
    device_info()  # what the background thread does
    at.run()
    sidebar = " ".join(e.value for e in [*at.sidebar.markdown, *at.sidebar.caption])
    assert "Device:" in sidebar and ("CPU" in sidebar or "CUDA" in sidebar)
    assert "MPO 4096x4096" in sidebar
    assert not _errors(at)


def test_template_change_updates_the_diagram(open_page):
    at = open_page()
    before = diagram_spec(at)
    at.selectbox(key="designer.template").set_value("Tucker").run()
    assert not at.exception
    after = diagram_spec(at)
    assert after != before and '"t:G"' in after and "r1=4" in after
    assert current_network(at) == tnviz.build_template("Tucker")
    # the fields show the new template's defaults
    assert at.text_input(key="designer.in_dims").value == "16,16"
    at.selectbox(key="designer.template").set_value("CP").run()
    assert '"d:r"' in diagram_spec(at)  # the CP delta dot


def test_parameter_change_updates_the_diagram(open_page):
    at = open_page()
    at.text_input(key="designer.ranks").set_value("16").run()
    spec = diagram_spec(at)
    assert "b1=16" in spec and "b1=4" not in spec
    at.text_input(key="designer.in_dims").set_value("4,4,16,16").run()
    net = current_network(at)
    assert net.in_dims == (4, 4, 16, 16) and net.sizes["b1"] == 16
    assert "i3=16" in diagram_spec(at)


BAD_PARAMETERS = [
    ("designer.in_dims", "8,y,8", "positive whole numbers"),
    ("designer.in_dims", "", "at least one number"),
    ("designer.out_dims", "8,0,8", "'0'"),
    ("designer.ranks", "4,4", "needs 3 values"),
    ("designer.ranks", "-2", "positive whole numbers"),
]


def test_bad_parameter_keeps_the_network_and_says_why(open_page):
    at = open_page()
    for field, text, message in BAD_PARAMETERS:
        net, spec = current_network(at), diagram_spec(at)
        good = at.text_input(key=field).value
        at.text_input(key=field).set_value(text).run()
        assert not at.exception
        errors = _errors(at)
        assert len(errors) == 1 and message in errors[0], (field, text, errors)
        assert current_network(at) == net and diagram_spec(at) == spec
        assert any("Kept the previous network" in c.value for c in at.caption)
        at.text_input(key=field).set_value(good).run()  # a good value clears the message
        assert not _errors(at) and current_network(at) == net
    at.text_input(key="designer.ranks").set_value("2").run()
    assert current_network(at) != net and not _errors(at)


def test_upload_replaces_the_network(open_page):
    at = open_page()
    ring = (EXAMPLES_DIR / "tensor_ring_512x512.json").read_bytes()
    open_build_tab(at, "Upload JSON")
    at.file_uploader(key="designer.upload").set_value(("ring.json", ring, "application/json")).run()
    assert not at.exception and not _errors(at)
    assert current_network(at) == tnviz.load_network(ring)
    assert "b3=4" in diagram_spec(at)
    assert at.session_state["tnviz.network_source"] == "upload ring.json"


BAD_UPLOADS = [
    (b"{not json", "valid JSON"),
    (json.dumps({"format": "other", "version": 1}).encode(), "'format' field"),
    (json.dumps({"format": "tnviz.network", "version": 1, "sizes": {"i": 2, "o": 2},
                 "tensors": [{"name": "A", "indices": ["i", "o"]}], "inputs": ["i"]}).encode(),
     "every open index must be declared"),
    (b"\xff\xfe\x00", "valid JSON"),
    (b" " * (MAX_NETWORK_UPLOAD_BYTES + 1), "at most"),
]


def test_bad_upload_keeps_the_network_and_says_why(open_page):
    at = open_page()
    at.selectbox(key="designer.template").set_value("Tensor ring").run()
    net, spec = current_network(at), diagram_spec(at)
    open_build_tab(at, "Upload JSON")
    for k, (content, message) in enumerate(BAD_UPLOADS):
        at.file_uploader(key="designer.upload").set_value((f"bad{k}.json", content, "application/json")).run()
        assert not at.exception
        errors = _errors(at)
        assert len(errors) == 1 and message in errors[0] and f"bad{k}.json" in errors[0], errors
        assert current_network(at) == net and diagram_spec(at) == spec


def test_einsum_form_builds_and_rejects(open_page):
    at = open_page()
    open_build_tab(at, "Einsum")
    submit = next(b for b in at.button if b.label == "Build from einsum")
    submit.click().run()
    assert not at.exception and not _errors(at)
    net = current_network(at)
    assert net.inputs == ("i", "j", "k") and net.outputs == ("m", "n", "o") and net.bonds == ("a", "b")
    assert '"t:B"' in diagram_spec(at)
    at.text_input(key="designer.eq").set_value("ab,bc")  # inside a form: sent with the submit
    next(b for b in at.button if b.label == "Build from einsum").click().run()
    errors = _errors(at)
    assert len(errors) == 1 and "'->'" in errors[0]
    assert current_network(at) == net
    # a general network (a square with a diagonal) gets the diagram's stress layout, not a row
    at.text_input(key="designer.eq").set_value("iabe,jbc,kcde,lda->ijkl")
    at.text_input(key="designer.eq_sizes").set_value("2")
    at.text_input(key="designer.eq_inputs").set_value("ij")
    next(b for b in at.button if b.label == "Build from einsum").click().run()
    square = current_network(at)
    assert not _errors(at) and sorted(square.bonds) == ["a", "b", "c", "d", "e"]
    assert len({round(y, 3) for _, y in square.layout.values()}) > 1, square.layout
    assert set(square.layout) == set(square.tensor_names)
    at.text_input(key="designer.eq").set_value("ima,ajnb,bko->ijkmno")
    at.text_input(key="designer.eq_sizes").set_value("i=4, q=2")
    next(b for b in at.button if b.label == "Build from einsum").click().run()
    assert "every index needs a size" in _errors(at)[0] and current_network(at) == square


def test_examples_load(open_page):
    at = open_page()
    names = list_examples()
    assert len(names) >= 8 and "CP 256x256" in names
    open_build_tab(at, "Examples")
    at.selectbox(key="designer.example").set_value("CP 256x256").run()
    next(b for b in at.button if b.label == "Load example").click().run()
    assert current_network(at) == tnviz.build_template("CP")
    assert '"d:r"' in diagram_spec(at)


def test_highlight_changes_the_diagram_and_survives_a_new_network(open_page):
    at = open_page()
    plain = diagram_spec(at)
    at.multiselect(key="designer.highlight_tensors").set_value(["A", "B"])
    at.multiselect(key="designer.highlight_indices").set_value(["b1"]).run()
    spec = diagram_spec(at)
    assert spec != plain and tnviz.render.PALETTE["highlight"] in spec
    at.selectbox(key="designer.template").set_value("Tucker").run()  # no tensor A, B or b1 there
    assert not at.exception
    assert at.multiselect(key="designer.highlight_tensors").value == []


def test_state_survives_a_visit_to_another_page(open_page):
    at = open_page()
    at.selectbox(key="designer.template").set_value("Tensor ring").run()
    at.text_input(key="designer.ranks").set_value("6").run()
    net = current_network(at)
    at.switch_page("views/costs.py").run()
    assert not at.exception and at.title[0].value == "Costs"
    at.switch_page(DESIGNER).run()
    assert current_network(at) == net
    assert at.selectbox(key="designer.template").value == "Tensor ring"
    assert at.text_input(key="designer.ranks").value == "6"


def test_leg_proposals_fill_the_fields(open_page):
    at = open_page()
    at.number_input(key="designer.features_in").set_value(768)
    at.number_input(key="designer.features_out").set_value(3072).run()
    first = tnviz.propose_legs(768, 3072)[0]
    assert tuple(map(tuple, at.selectbox(key="designer.proposal").value)) == first
    next(b for b in at.button if b.label == "Use these legs").click().run()
    net = current_network(at)
    assert (net.in_features, net.out_features) == (768, 3072) and net.in_dims == first[0]


def test_bundled_examples_match_their_builders():
    """The JSON files in assets/networks are the builders' output (no drift)."""
    expected = {
        "mpo_4096x4096.json": tnviz.build_template("MPO / tensor train"),
        "mpo_fig1_3in_5out.json": tnviz.build_template("MPO 3 in / 5 out (Fig. 1)"),
        "tensor_ring_512x512.json": tnviz.build_template("Tensor ring"),
        "tucker_256x256.json": tnviz.build_template("Tucker"),
        "cp_256x256.json": tnviz.build_template("CP"),
        "tucker_conv_kernel.json": tnviz.build_template("Tucker conv kernel (Fig. 3 iv)"),
        "cp_conv_kernel.json": tnviz.build_template("CP conv kernel (Fig. 3 v)"),
    }
    files = sorted(p.name for p in EXAMPLES_DIR.glob("*.json"))
    assert set(expected) < set(files)
    for name, net in expected.items():
        assert load_example(name) == net, name
    generic = load_example("generic_2x2_grid.json")
    assert len(generic.bonds) == 5 and not generic.hyperedges and generic.in_features == 256
    with pytest.raises(tnviz.InvalidNetworkError, match="is not one of"):
        load_example("../pyproject.toml")


def test_parsers_accept_and_reject():
    assert parse_int_list("8, 8x8 8", "legs") == (8, 8, 8, 8)
    assert parse_ranks("3") == 3 and parse_ranks("3;4") == (3, 4)
    assert parse_sizes("12") == 12 and parse_sizes("i=2 a=3") == {"i": 2, "a": 3}
    assert parse_letters("i, j k", "inputs") == ["i", "j", "k"]
    for bad, match in [("8,,y", "'y'"), ("1.5", "'1.5'"), ("9" * 9, "at most"), (",".join("2" * 17), "at most 16")]:
        with pytest.raises(tnviz.InvalidNetworkError, match=match):
            parse_int_list(bad, "legs")
    for bad, match in [("i=2, i=3", "sized twice"), ("ab=2", "letter=size"), ("i=0", "'0'"), ("", "got ''")]:
        with pytest.raises(tnviz.InvalidNetworkError, match=match):
            parse_sizes(bad)
    with pytest.raises(tnviz.InvalidNetworkError, match="'1'"):
        parse_letters("i1", "inputs")


# ---------------------------------------------------------------------- issue 13 items 8 and 9
@pytest.mark.parametrize("text,named", [("4,x,4", "'x'"), ("4,,4", "empty entry"), ("4,4,", "empty entry")])
def test_leg_sizes_with_a_stray_separator_are_refused_by_name(open_page, text, named):
    # "4,x,4" and "4,,4" built a 2-leg network with no message
    at = open_page()
    net = current_network(at)
    at.text_input(key="designer.in_dims").set_value(text).run()
    errors = _errors(at)
    assert len(errors) == 1 and named in errors[0] and repr(text) in errors[0], errors
    assert current_network(at) == net


def test_a_new_upload_replaces_the_previous_files_message(open_page):
    # a .txt dropped after a bad .json left the .json's error on screen
    at = open_page()
    open_build_tab(at, "Upload JSON")
    at.file_uploader(key="designer.upload").set_value(("first.json", b"{not json", "application/json")).run()
    assert len(_errors(at)) == 1 and "first.json" in _errors(at)[0]
    at.file_uploader(key="designer.upload").set_value(("notes.txt", b"hello", "text/plain")).run()
    errors = _errors(at)
    assert len(errors) == 1 and "notes.txt" in errors[0] and "first.json" not in errors[0], errors
    at.file_uploader(key="designer.upload").set_value(None).run()  # the file removed: its message too
    assert not _errors(at)


def test_use_these_legs_builds_the_proposal_even_with_per_bond_ranks(open_page):
    # the fields were filled but the old network stayed (ranks typed per bond of the old legs)
    at = open_page()
    at.text_input(key="designer.ranks").set_value("4,6,4").run()  # one per bond of the 4-core MPO
    assert current_network(at).sizes["b2"] == 6
    at.number_input(key="designer.features_in").set_value(768)
    at.number_input(key="designer.features_out").set_value(3072).run()
    choice = at.selectbox(key="designer.proposal").value
    next(b for b in at.button if b.label == "Use these legs").click().run()
    net = current_network(at)
    assert (net.in_features, net.out_features) == (768, 3072) and net.in_dims == tuple(choice[0])
    assert set(net.sizes[b] for b in net.bonds) == {6} and at.text_input(key="designer.ranks").value == "6"
    assert any("every bond has rank 6" in c.value for c in at.caption)
    assert not _errors(at)


def test_the_name_field_renames_the_network_everywhere(open_page):
    at = open_page()
    assert at.text_input(key="designer.name").value == "MPO 4096x4096"
    at.text_input(key="designer.name").set_value("My layer").run()
    net = current_network(at)
    assert net.name == "My layer" and at.subheader[0].value == "My layer"
    assert any("`My_layer.*`" in c.value for c in at.caption)  # the export files' names
    sidebar = " ".join(e.value for e in [*at.sidebar.markdown, *at.sidebar.caption])  # nested too
    assert "My layer" in sidebar
    at.switch_page("views/costs.py").run()
    assert any("My layer" in c.value for c in at.caption)
    at.switch_page(DESIGNER).run()
    at.text_input(key="designer.name").set_value("   ").run()  # an empty name is refused, the old one kept
    assert current_network(at).name == "My layer" and any("needs at least one character" in e for e in _errors(at))


def test_closed_tabs_and_snippets_are_drawn_only_when_opened(open_page):
    """The first load sends no code block and no table (each loads megabytes of Streamlit's
    JavaScript before the canvas, issue 17); opening a tab or the Snippets draws its content."""
    from tnviz.render.exports import export

    at = open_page()
    net = current_network(at)
    assert not at.code and not at.dataframe
    # the build tabs too: Upload and Examples only when open; Template and the einsum form always
    # (a form keeps its unsubmitted text only while drawn; the Template fields are never unmounted)
    keys = {w.key for w in [*at.text_input, *at.selectbox, *at.button]}
    assert {"designer.template", "designer.eq"} <= keys and "designer.example" not in keys
    assert not at.get("file_uploader")
    at.text_input(key="designer.ranks").set_value("5").run()
    net = current_network(at)
    open_build_tab(at, "Examples")
    keys = {w.key for w in [*at.text_input, *at.selectbox]}
    assert {"designer.example", "designer.eq", "designer.template"} <= keys
    assert not at.get("file_uploader")
    open_build_tab(at, "Upload JSON")
    assert len(at.get("file_uploader")) == 1 and "designer.example" not in {w.key for w in at.selectbox}
    open_build_tab(at, "Template")  # what was entered in a tab that was closed is still there
    assert at.text_input(key="designer.ranks").value == "5" and current_network(at) == net
    at.session_state["designer.view_tab"] = "Equation"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert [c.value for c in at.code][0] == net.named_equation() and not at.dataframe
    at.session_state["designer.view_tab"] = "Tensors"
    at.run()
    table = at.dataframe[0].value
    assert list(table["tensor"]) == [t.name for t in net.tensors] and not at.code
    assert list(table["params"]) == [int(np.prod(net.shape(t))) for t in net.tensors]
    at.session_state["designer.canvas.snippets_open"] = True
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    batch = at.selectbox(key="designer.canvas.batch").value
    assert [c.value.strip() for c in at.code] == [export(net, f, batch=batch).strip() for f in ("einsum", "torch")]
