"""Designer: build the current network from a template, an einsum string, a JSON file or a bundled
example, and see it in Penrose notation with its equation and parameter count.

Every edit goes through a callback that either replaces the network or leaves it alone and keeps
the error message for the place where the user acted.
"""
from __future__ import annotations

import math
from typing import Any

import streamlit as st

import tnviz
from tnviz_app.components.canvas.panel import draw_section
from tnviz_app.components.formatting import arrow_safe, count, md_escape, times
from tnviz_app.components.inputs import parse_int_list, parse_letters, parse_ranks, parse_sizes
from tnviz_app.components.persist import remember, restore
from tnviz_app.components.diagram import diagram
from tnviz.errors import plain_message
from tnviz_app.state import (
    CANVAS_KEY,
    MAX_NETWORK_UPLOAD_BYTES,
    get_network,
    list_examples,
    load_example,
    network_source,
    set_network,
)
from tnviz.render import auto_layout

K_TEMPLATE, K_IN, K_OUT, K_RANKS = "designer.template", "designer.in_dims", "designer.out_dims", "designer.ranks"
K_EQ, K_SIZES, K_INPUTS, K_OUTPUTS = "designer.eq", "designer.eq_sizes", "designer.eq_inputs", "designer.eq_outputs"
K_UPLOAD, K_EXAMPLE = "designer.upload", "designer.example"
K_FEAT_IN, K_FEAT_OUT, K_PROPOSAL = "designer.features_in", "designer.features_out", "designer.proposal"
K_HL_T, K_HL_I = "designer.highlight_tensors", "designer.highlight_indices"
K_ERROR = "designer.error"
K_NAME, K_NAME_OF = "designer.name", "designer.name_shown_for"
K_NOTE = "designer.note"
#: Keys of the tabs and expanders, so that each stays as the user left it across reruns.
K_BUILD_TAB, K_VIEW_TAB = "designer.build_tab", "designer.view_tab"
K_FACTOR_OPEN, K_HL_OPEN = "designer.factor_open", "designer.highlight_open"
#: Longest network name the rename field takes.
MAX_NAME = 80

EINSUM_DEFAULTS = {
    K_EQ: "ima,ajnb,bko->ijkmno",
    K_SIZES: "i=4, j=4, k=4, m=4, n=4, o=4, a=3, b=3",
    K_INPUTS: "ijk",
    K_OUTPUTS: "",
}


def _as_text(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def template_fields(template: str) -> dict[str, str]:
    """The text of the parameter fields for a template's defaults."""
    _, defaults = tnviz.TEMPLATES[template]
    return {K_IN: _as_text(defaults["in_dims"]), K_OUT: _as_text(defaults["out_dims"]), K_RANKS: _as_text(defaults["ranks"])}


# ---------------------------------------------------------------------- callbacks
def _fail(where: str, exc: Exception) -> None:
    # the message belongs to the network it was refused against: a later change of the network,
    # from any page or the canvas, makes it stale
    st.session_state[K_ERROR] = {"where": where, "message": plain_message(exc), "network": get_network()}


def _succeed(net: tnviz.TensorNetwork, source: str, *, named: bool = False) -> None:
    set_network(net, source, user_named=named)
    st.session_state.pop(K_ERROR, None)
    st.session_state.pop(K_NOTE, None)


def _rename() -> None:
    name = " ".join(str(st.session_state.get(K_NAME, "")).split())
    if not name:
        _fail("name", tnviz.InvalidNetworkError("a network name needs at least one character; got an empty name"))
        st.session_state[K_NAME_OF] = None  # show the current name again
        return
    if len(name) > MAX_NAME:
        _fail("name", tnviz.InvalidNetworkError(f"a network name may be at most {MAX_NAME} characters; got {len(name)}"))
        st.session_state[K_NAME_OF] = None
        return
    _succeed(get_network().with_name(name), network_source(), named=True)


def _apply_template() -> None:
    name = st.session_state[K_TEMPLATE]
    try:
        net = tnviz.build_template(
            name,
            in_dims=list(parse_int_list(st.session_state[K_IN], "input leg sizes")),
            out_dims=list(parse_int_list(st.session_state[K_OUT], "output leg sizes")),
            ranks=parse_ranks(st.session_state[K_RANKS]),
        )
    except tnviz.TnvizError as exc:
        _fail("template", exc)
        return
    _succeed(net, f"template {name}")


def _pick_template() -> None:
    st.session_state.update(template_fields(st.session_state[K_TEMPLATE]))
    _apply_template()


def _use_proposal() -> None:
    """Build the template with the proposed legs.  Ranks typed one per bond of the old legs do
    not fit other legs: then one rank (the largest typed) goes on every bond, and a note says so."""
    choice = st.session_state.get(K_PROPOSAL)
    if not choice:
        return
    ins, outs = choice
    st.session_state[K_IN], st.session_state[K_OUT] = _as_text(ins), _as_text(outs)
    note = None
    try:
        ranks = parse_ranks(st.session_state[K_RANKS])
    except tnviz.TnvizError:
        ranks = None  # _apply_template reports it
    if isinstance(ranks, tuple):
        try:
            tnviz.build_template(st.session_state[K_TEMPLATE], in_dims=list(ins), out_dims=list(outs), ranks=ranks)
        except tnviz.TnvizError:
            st.session_state[K_RANKS] = str(max(ranks))
            note = (f"The ranks {_as_text(ranks)} were one per bond of the previous legs; these legs have other "
                    f"bonds, so every bond has rank {max(ranks)}.")
    _apply_template()
    if st.session_state.get(K_ERROR):
        st.session_state[K_ERROR]["where"] = "proposal"  # shown beside the button the user pressed
    elif note:
        st.session_state[K_NOTE] = note


def _apply_einsum() -> None:
    outputs_text = st.session_state[K_OUTPUTS].strip()
    try:
        net = tnviz.from_einsum(
            st.session_state[K_EQ],
            parse_sizes(st.session_state[K_SIZES]),
            inputs=parse_letters(st.session_state[K_INPUTS], "inputs"),
            outputs=parse_letters(outputs_text, "outputs") if outputs_text else None,
        )
    except tnviz.TnvizError as exc:
        _fail("einsum", exc)
        return
    # from_einsum puts the tensors in a row, where bonds between non-neighbours run through the
    # tensors between them; the diagram's own layout (chain, ring, star or stress) reads better
    net = net.with_layout({n: tuple(2.0 * c for c in xy) for n, xy in auto_layout(net.with_layout(None)).items()})
    _succeed(net, "einsum string")


def _apply_upload() -> None:
    upload = st.session_state.get(K_UPLOAD)
    if upload is None:  # the file was removed: its message goes with it
        error = st.session_state.get(K_ERROR)
        if error and error["where"] == "upload":
            st.session_state.pop(K_ERROR)
        return
    try:
        if upload.size > MAX_NETWORK_UPLOAD_BYTES:
            raise tnviz.InvalidNetworkError(
                f"a network JSON may be at most {MAX_NETWORK_UPLOAD_BYTES:,} bytes; {upload.name!r} has {upload.size:,}"
            )
        net = tnviz.load_network(upload.getvalue())
    except tnviz.TnvizError as exc:
        _fail("upload", tnviz.InvalidNetworkError(f"{upload.name}: {exc}"))
        return
    _succeed(net, f"upload {upload.name}")


def _load_example() -> None:
    filename = list_examples().get(st.session_state[K_EXAMPLE], "")
    try:
        net = load_example(filename)
    except tnviz.TnvizError as exc:
        _fail("example", exc)
        return
    _succeed(net, f"example {filename}")


def _show_error(where: str) -> None:
    error = st.session_state.get(K_ERROR)
    if error and error["network"] != get_network():
        st.session_state.pop(K_ERROR)  # the network changed since (the canvas, another page): stale
        return
    if error and error["where"] == where:
        st.error(md_escape(error["message"]), icon=":material/error:")
        st.caption(f"Kept the previous network: {md_escape(get_network().name or '(unnamed)')}")


# ---------------------------------------------------------------------- page
# A canvas edit (Draw section below) was taken by get_network() before anything was drawn, the
# sidebar included, so every part of this run shows the edited network.
st.title("Designer")
st.caption("Design a tensor-network layer: tensors as shapes, bonds in red, open legs labelled with their size.")

template_names = list(tnviz.TEMPLATES)
for key, text in EINSUM_DEFAULTS.items():
    restore(key, text)

controls, view = st.columns([2, 3], gap="large")

with controls:
    # Upload and Examples are drawn only when open (a tab change reruns the page): the first load lays
    # out fewer widgets before the canvas.  Template (open at first) and Einsum are always drawn: a
    # field that was unmounted came back empty in Chromium once in a few loaded CI runs (Examples ->
    # Upload -> Template, tests/e2e/test_designer_browser.py), and a form keeps unsubmitted text only
    # while it is drawn.
    tab_template, tab_einsum, tab_upload, tab_example = st.tabs(
        ["Template", "Einsum", "Upload JSON", "Examples"], key=K_BUILD_TAB, on_change="rerun")
    with tab_template:
        # restored here, in the run that draws them (see tnviz_app.components.persist)
        restore(K_TEMPLATE, template_names[0])
        for key, text in template_fields(st.session_state[K_TEMPLATE]).items():
            restore(key, text)
        st.selectbox("Template", template_names, key=K_TEMPLATE, on_change=_pick_template)
        st.text_input("Input leg sizes", key=K_IN, on_change=_apply_template, help="e.g. 8,8,8,8 (product = in_features)")
        st.text_input("Output leg sizes", key=K_OUT, on_change=_apply_template, help="e.g. 8,8,8,8 (product = out_features)")
        st.text_input(
            "Ranks", key=K_RANKS, on_change=_apply_template,
            help="One number for every bond, or one per bond (MPO/ring) or per leg (Tucker); CP takes one rank.",
        )
        _show_error("template")
        with st.expander("Factor in_features / out_features into legs", key=K_FACTOR_OPEN, on_change="rerun"):
            net_now = get_network()
            restore(K_FEAT_IN, max(1, net_now.in_features))
            restore(K_FEAT_OUT, max(1, net_now.out_features))
            c1, c2 = st.columns(2)
            f_in = c1.number_input("in_features", min_value=1, max_value=1 << 24, step=1, key=K_FEAT_IN)
            f_out = c2.number_input("out_features", min_value=1, max_value=1 << 24, step=1, key=K_FEAT_OUT)
            proposals = tnviz.propose_legs(int(f_in), int(f_out))
            if proposals:
                st.selectbox(
                    "Balanced leg factorizations (best first)", proposals, key=K_PROPOSAL,
                    format_func=lambda p: f"{_as_text(p[0])}  →  {_as_text(p[1])}",
                )
                st.button("Use these legs", on_click=_use_proposal)
                _show_error("proposal")
                if st.session_state.get(K_NOTE):
                    st.caption(st.session_state[K_NOTE])
            else:
                st.info("No factorization with legs of size 2 or more; use one leg per side.")
            remember(K_FEAT_IN, K_FEAT_OUT)
    with tab_einsum:  # always drawn: a form keeps what was typed but not yet submitted only while it is drawn
        with st.form("designer.einsum_form"):
            st.text_input("Einsum equation", key=K_EQ, help="Terms are tensors; after '->' the open legs.")
            st.text_input("Index sizes", key=K_SIZES, help="One number for all, or letter=size pairs.")
            st.text_input("Input letters", key=K_INPUTS, help="Open letters that are layer inputs, e.g. ijk.")
            st.text_input("Output letters (optional)", key=K_OUTPUTS, help="Defaults to the other open letters.")
            st.form_submit_button("Build from einsum", on_click=_apply_einsum)
        _show_error("einsum")
    if tab_upload.open:
        with tab_upload:
            # no type filter: a file of another type is read and refused here, with its name, instead
            # of the browser's own refusal leaving the previous file's message on screen
            st.file_uploader(
                f"Network JSON (tnviz.network, at most {MAX_NETWORK_UPLOAD_BYTES // 1024} KiB)",
                key=K_UPLOAD, on_change=_apply_upload,
            )
            _show_error("upload")
    if tab_example.open:
        with tab_example:
            examples = list_examples()
            restore(K_EXAMPLE, next(iter(examples), ""))
            if st.session_state[K_EXAMPLE] not in examples and examples:
                st.session_state[K_EXAMPLE] = next(iter(examples))
            st.selectbox("Bundled example", list(examples), key=K_EXAMPLE)
            st.button("Load example", on_click=_load_example)
            _show_error("example")

remember(K_TEMPLATE, K_IN, K_OUT, K_RANKS, K_EQ, K_SIZES, K_INPUTS, K_OUTPUTS, K_EXAMPLE)

net = get_network()
with view:
    if st.session_state.get(K_NAME_OF) != net:  # a new network: the field shows its name
        st.session_state[K_NAME] = net.name
        st.session_state[K_NAME_OF] = net
    st.subheader(md_escape(net.name or "(unnamed network)"))
    st.caption(f"from {md_escape(network_source())} · in_features {net.in_features:,} = "
               f"{' × '.join(map(str, net.in_dims)) or '1'} · out_features {net.out_features:,} = "
               f"{' × '.join(map(str, net.out_dims)) or '1'}")
    st.text_input("Name", key=K_NAME, on_change=_rename, max_chars=MAX_NAME,
                  help="The network's name: the header, the Costs page and the export file names use it.")
    _show_error("name")
    m1, m2, m3 = st.columns(3)
    m1.metric("Parameters", count(net.params), help=f"Total size of all tensors: {net.params:,}", border=True)
    m2.metric("Dense parameters", count(net.dense_params), help=f"in × out = {net.dense_params:,}", border=True)
    m3.metric("Compression", times(net.compression), help=f"dense / network parameters = {net.compression:,.2f}",
              border=True)

# ---------------------------------------------------------------------- draw: the canvas (app/components/canvas)
# The canvas comes right after the controls, so it starts on the first screen of a laptop; the
# Graphviz diagram, the equations and the tensor table sit in tabs below it.
st.subheader("Draw")
st.caption(
    "Edit the layer with the mouse: + Tensor then click the canvas; select a tensor to add legs; drag a leg onto "
    "another leg for a bond, onto a bond's leg or ● for a hyperedge; click a leg or bond to set its size and "
    "input/output role. Every edit is validated; a bad one shows its message and keeps your drawing."
)
draw_section(net, key=CANVAS_KEY)  # its edits are taken by get_network()

tab_diagram, tab_equation, tab_tensors = st.tabs(
    ["Penrose diagram", "Equation", "Tensors"], key=K_VIEW_TAB, on_change="rerun")
with tab_diagram:
    with st.expander("Highlight tensors or indices", key=K_HL_OPEN, on_change="rerun"):
        for key, options in ((K_HL_T, list(net.tensor_names)), (K_HL_I, list(net.index_counts))):
            # a new network may not have the old selection: drop what no longer exists
            restore(key, [])
            st.session_state[key] = [v for v in st.session_state[key] if v in options]
        h1, h2 = st.columns(2)
        h1.multiselect("Tensors", list(net.tensor_names), key=K_HL_T)
        h2.multiselect("Indices", list(net.index_counts), key=K_HL_I)
        remember(K_HL_T, K_HL_I)
    highlight = {"highlight_tensors": st.session_state[K_HL_T], "highlight_indices": st.session_state[K_HL_I]}
    diagram(net, **highlight, alt=f"Tensor-network diagram of {net.name}")
# The Equation and Tensors tabs are drawn only when open (a tab change reruns the page): their code
# blocks and table made the first load fetch and run Streamlit's code highlighter and data grid
# (2.7 MB of JavaScript) before the canvas.
if tab_equation.open:
    with tab_equation:
        st.markdown("**Equation** (the weight `W[outputs | inputs]` as a contraction)")
        st.code(net.named_equation(), language=None, wrap_lines=True)
        st.code(f"einsum: {net.equation()}\nlayer:  {net.layer_equation()}   (x first, batch = a)", language=None,
                wrap_lines=True)
if tab_tensors.open:
    with tab_tensors:
        st.dataframe(
            arrow_safe([
                {"tensor": t.name, "indices": ", ".join(t.indices), "shape": " × ".join(map(str, net.shape(t))),
                 "params": math.prod(net.shape(t))}
                for t in net.tensors
            ]),
            hide_index=True,
        )
