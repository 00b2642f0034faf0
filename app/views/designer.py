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
from app.components.canvas import take_canvas_edit
from app.components.canvas.panel import draw_section
from app.components.formatting import human
from app.components.inputs import parse_int_list, parse_letters, parse_ranks, parse_sizes
from app.components.persist import remember, restore
from app.state import (
    MAX_NETWORK_UPLOAD_BYTES,
    get_network,
    list_examples,
    load_example,
    network_source,
    set_network,
)
from tnviz.render import auto_layout, to_source, to_svg

K_TEMPLATE, K_IN, K_OUT, K_RANKS = "designer.template", "designer.in_dims", "designer.out_dims", "designer.ranks"
K_EQ, K_SIZES, K_INPUTS, K_OUTPUTS = "designer.eq", "designer.eq_sizes", "designer.eq_inputs", "designer.eq_outputs"
K_UPLOAD, K_EXAMPLE = "designer.upload", "designer.example"
K_FEAT_IN, K_FEAT_OUT, K_PROPOSAL = "designer.features_in", "designer.features_out", "designer.proposal"
K_HL_T, K_HL_I = "designer.highlight_tensors", "designer.highlight_indices"
K_ERROR = "designer.error"

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
    st.session_state[K_ERROR] = {"where": where, "message": str(exc)}


def _succeed(net: tnviz.TensorNetwork, source: str) -> None:
    set_network(net, source)
    st.session_state.pop(K_ERROR, None)


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
    choice = st.session_state.get(K_PROPOSAL)
    if not choice:
        return
    ins, outs = choice
    st.session_state[K_IN], st.session_state[K_OUT] = _as_text(ins), _as_text(outs)
    _apply_template()


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
    if upload is None:
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
    if error and error["where"] == where:
        st.error(error["message"], icon=":material/error:")
        st.caption(f"Kept the previous network: {get_network().name or '(unnamed)'}")


@st.cache_data(show_spinner=False, max_entries=32)
def _svg(net_json: str, tensors: tuple[str, ...], indices: tuple[str, ...]) -> str | None:
    try:
        return to_svg(tnviz.load_network(net_json), highlight_tensors=tensors, highlight_indices=indices)
    except tnviz.TnvizError:
        return None  # Graphviz is not installed on the server: no SVG download


# ---------------------------------------------------------------------- page
# canvas edit first (Draw section below), so every section of this run shows the edited network
if (_edited := take_canvas_edit("designer.canvas")) is not None:
    set_network(_edited, "canvas")
st.title("Designer")
st.caption("Design a tensor-network layer: tensors as shapes, bonds in red, open legs labelled with their size.")

template_names = list(tnviz.TEMPLATES)
restore(K_TEMPLATE, template_names[0])
for key, text in template_fields(st.session_state[K_TEMPLATE]).items():
    restore(key, text)
for key, text in EINSUM_DEFAULTS.items():
    restore(key, text)

controls, view = st.columns([2, 3], gap="large")

with controls:
    tab_template, tab_einsum, tab_upload, tab_example = st.tabs(["Template", "Einsum", "Upload JSON", "Examples"])
    with tab_template:
        st.selectbox("Template", template_names, key=K_TEMPLATE, on_change=_pick_template)
        st.text_input("Input leg sizes", key=K_IN, on_change=_apply_template, help="e.g. 8,8,8,8 (product = in_features)")
        st.text_input("Output leg sizes", key=K_OUT, on_change=_apply_template, help="e.g. 8,8,8,8 (product = out_features)")
        st.text_input(
            "Ranks", key=K_RANKS, on_change=_apply_template,
            help="One number for every bond, or one per bond (MPO/ring) or per leg (Tucker); CP takes one rank.",
        )
        _show_error("template")
        with st.expander("Factor in_features / out_features into legs"):
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
            else:
                st.info("No factorization with legs of size 2 or more; use one leg per side.")
            remember(K_FEAT_IN, K_FEAT_OUT)
    with tab_einsum:
        with st.form("designer.einsum_form"):
            st.text_input("Einsum equation", key=K_EQ, help="Terms are tensors; after '->' the open legs.")
            st.text_input("Index sizes", key=K_SIZES, help="One number for all, or letter=size pairs.")
            st.text_input("Input letters", key=K_INPUTS, help="Open letters that are layer inputs, e.g. ijk.")
            st.text_input("Output letters (optional)", key=K_OUTPUTS, help="Defaults to the other open letters.")
            st.form_submit_button("Build from einsum", on_click=_apply_einsum)
        _show_error("einsum")
    with tab_upload:
        st.file_uploader(
            f"Network JSON (tnviz.network, at most {MAX_NETWORK_UPLOAD_BYTES // 1024} KiB)", type=["json"],
            key=K_UPLOAD, on_change=_apply_upload,
        )
        _show_error("upload")
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
    st.subheader(net.name or "(unnamed network)")
    st.caption(f"from {network_source()}")
    with st.expander("Highlight tensors or indices"):
        for key, options in ((K_HL_T, list(net.tensor_names)), (K_HL_I, list(net.index_counts))):
            # a new network may not have the old selection: drop what no longer exists
            restore(key, [])
            st.session_state[key] = [v for v in st.session_state[key] if v in options]
        h1, h2 = st.columns(2)
        h1.multiselect("Tensors", list(net.tensor_names), key=K_HL_T)
        h2.multiselect("Indices", list(net.index_counts), key=K_HL_I)
        remember(K_HL_T, K_HL_I)
    highlight = {"highlight_tensors": st.session_state[K_HL_T], "highlight_indices": st.session_state[K_HL_I]}
    st.graphviz_chart(to_source(net, **highlight), alt=f"Tensor-network diagram of {net.name}")

    m1, m2, m3 = st.columns(3)
    m1.metric("Parameters", f"{net.params:,}", help="Total size of all tensors", border=True)
    m2.metric("Dense parameters", human(net.dense_params), help=f"in × out = {net.dense_params:,}", border=True)
    m3.metric("Compression", f"{net.compression:,.1f}x", help="dense / network parameters", border=True)
    st.caption(f"in_features {net.in_features:,} = {' × '.join(map(str, net.in_dims)) or '1'} · "
               f"out_features {net.out_features:,} = {' × '.join(map(str, net.out_dims)) or '1'}")

    st.markdown("**Equation** (the weight `W[outputs | inputs]` as a contraction)")
    st.code(net.named_equation(), language=None, wrap_lines=True)
    st.code(f"einsum: {net.equation()}\nlayer:  {net.layer_equation()}   (x first, batch = a)", language=None, wrap_lines=True)

    svg = _svg(net.to_json(), tuple(highlight["highlight_tensors"]), tuple(highlight["highlight_indices"]))
    d1, d2, d3 = st.columns(3)
    slug = "".join(c if c.isalnum() else "_" for c in (net.name or "network")).strip("_").lower() or "network"
    d1.download_button("Download JSON", net.to_json(), file_name=f"{slug}.json", mime="application/json")
    if svg is not None:
        d2.download_button("Download SVG", svg, file_name=f"{slug}.svg", mime="image/svg+xml")
    else:
        d2.caption("SVG export needs Graphviz on the server.")
    d3.download_button(
        "Download DOT", to_source(net, **highlight).source, file_name=f"{slug}.dot", mime="text/vnd.graphviz",
    )

    with st.expander("Tensors"):
        st.dataframe(
            [
                {"tensor": t.name, "indices": ", ".join(t.indices), "shape": " × ".join(map(str, net.shape(t))),
                 "params": math.prod(net.shape(t))}
                for t in net.tensors
            ],
            hide_index=True,
        )

# ---------------------------------------------------------------------- draw: the canvas (app/components/canvas)
st.divider()
st.subheader("Draw")
st.caption(
    "Edit the layer with the mouse: + Tensor then click the canvas; select a tensor to add legs; drag a leg onto "
    "another leg for a bond, onto a bond's leg or ● for a hyperedge; click a leg or bond to set its size and "
    "input/output role. Every edit is validated; a bad one shows its message and keeps your drawing."
)
draw_section(get_network(), key="designer.canvas")  # its edits are taken at the top of the page
