"""Stack view: the current layer as a column of sparse fully-connected layers (paper Fig. 4),
its equivalent views, a gauge move, and the numerical proof that every view is the same matrix."""
from __future__ import annotations

import math
from typing import Any

import streamlit as st

import tnviz
from tnviz_app.components.figures import forward_flops, forward_label, layer_cost
from tnviz_app.components.formatting import arrow_safe, human, md_escape
from tnviz.errors import plain_message
from tnviz_app.components.persist import remember, restore
from tnviz_app.components.diagram import diagram
from tnviz_app.state import get_network
from tnviz.render.stack_charts import column_figure, patterns_figure
from tnviz.stack import VIEWS, check_network, gauge_view, stack_views

K_VIEW, K_SEED, K_BOND, K_LAYER = "stack.view", "stack.seed", "stack.bond", "stack.layer"
PATTERN_SIDE = 120


@st.cache_data(show_spinner=False, max_entries=32)
def compute_view(net_json: str, view: str, seed: int, bond: str | None) -> dict[str, Any]:
    """One view as plain data: its report (sizes, density, FLOPs, proof) and each layer's pattern."""
    net = tnviz.load_network(net_json)
    check_network(net)  # from shapes: refuse before drawing a single random number
    tensors = tnviz.random_tensors(net, seed=seed)
    if view == "gauge":
        v = gauge_view(net, tensors, bond, seed=seed)
    else:
        (v,) = stack_views(net, tensors, views=[view], seed=seed) or (None,)
        if v is None:
            raise tnviz.InvalidNetworkError(f"the {view!r} view needs at least 3 tensors; this network has {len(net.tensors)}")
    report = v.to_dict()
    report["patterns"] = [layer.pattern(PATTERN_SIDE) for layer in v.layers]
    return report


def _next_seed() -> None:
    st.session_state[K_SEED] = int(st.session_state[K_SEED]) + 1


st.title("Stack view")
net = get_network()
st.caption(
    f"{net.name or '(unnamed)'} · {net.in_features:,} → {net.out_features:,} · the layer as a composition of "
    "sparse fully-connected layers, each identity ⊗ (a tensor matricized) ⊗ identity (paper Fig. 4)"
)

views = [v for v in VIEWS if v != "gauge" or net.bonds]
restore(K_VIEW, views[0])
restore(K_SEED, 0)
if st.session_state[K_VIEW] not in views:
    st.session_state[K_VIEW] = views[0]
c1, c2, c3 = st.columns([2, 1, 1])
view = c1.selectbox("Equivalent view", views, key=K_VIEW,
                    help="every view multiplies to the same dense matrix; the gauge view also changes the tensors")
seed = int(c2.number_input("Seed (tensors, gauge X)", min_value=0, max_value=2**31 - 1, step=1, key=K_SEED))
bond = None
if view == "gauge":
    bonds = list(net.bonds)
    restore(K_BOND, bonds[(len(bonds) - 1) // 2])
    if st.session_state[K_BOND] not in bonds:
        st.session_state[K_BOND] = bonds[(len(bonds) - 1) // 2]
    bond = c3.selectbox("Gauge bond", bonds, key=K_BOND, help="a -> a X⁻¹, b -> X b with a random invertible X")
    c3.button("New random X", icon=":material/casino:", on_click=_next_seed)
remember(K_VIEW, K_SEED, *([K_BOND] if view == "gauge" else []))

try:
    with st.spinner("Building the stack and checking it against the dense matrix..."):
        report = compute_view(net.to_json(), view, seed, bond)
except tnviz.TnvizError as exc:
    st.error(md_escape(plain_message(exc)), icon=":material/error:")
    st.stop()

layers = report["layers"]
st.markdown(f"**{view}**: {report['description']}")
m1, m2, m3, m4, m5 = st.columns(5)
checked = ("all" if report["exact_check"] else f"{report['checked_columns']:,} seeded") + f" of {net.in_features:,} columns"
m1.metric("max |stack product − dense|", f"{report['max_abs_diff']:.1e}", help=f"checked on {checked}", border=True)
m2.metric("Layers", len(layers), border=True)
dense_flops = 2 * net.in_features * net.out_features
m3.metric("This view's FLOPs per sample", human(report["flops"]), f"dense {human(dense_flops)}",
          delta_color="off", delta_arrow="off", border=True,
          help=f"{report['flops']:,}: one multiply-add per structural non-zero of each layer (dense layer: {dense_flops:,})")
try:
    best = layer_cost(net.to_json(), 1)
    m4.metric(f"{forward_label(best.optimize)}, per sample", forward_flops(best), border=True,
              help=f"{best.flops:,}: tnviz.cost at batch 1, path {best.path_note} (the Costs page's figure)")
except tnviz.TnvizError as exc:
    m4.caption(plain_message(exc))
if view == "gauge":
    m5.metric("Tensors changed by", f"{report['tensors_changed_by']:.3g}",
              help=f"max |change| of the two tensors on bond {report['bond']!r}; cond(X) = {report['X_condition']:.2f}",
              border=True)
ok = report["max_abs_diff"] < 1e-9 * max(1.0, math.sqrt(net.in_features))
(st.success if ok else st.error)(
    f"The product of the {len(layers)} layers equals the dense matrix to {report['max_abs_diff']:.1e} "
    f"(checked on {checked}).", icon=":material/check_circle:" if ok else ":material/error:")

names = [f"{k + 1}. {l['name']}" for k, l in enumerate(layers)]
restore(K_LAYER, names[0])
if st.session_state[K_LAYER] not in names:
    st.session_state[K_LAYER] = names[0]
left, right = st.columns([1, 1])
with right:
    choice = st.radio("Layer", names, key=K_LAYER, horizontal=True)
    selected = names.index(choice)
    st.plotly_chart(column_figure(report, selected), width="stretch", key="stack.column")
remember(K_LAYER)
with left:
    layer = layers[selected]
    diagram(net, highlight_tensors=layer["tensors"], highlight_indices=[*layer["consumed"], *layer["produced"]],
            alt=f"Diagram of {net.name} with layer {layer['name']} highlighted")
    st.caption(
        f"Layer **{layer['name']}** reads {', '.join(layer['consumed']) or 'nothing'} and writes "
        f"{', '.join(layer['produced']) or 'nothing'}; the other wires pass through an identity"
        + (" (a plain Kronecker product)." if layer["kron"] else " (the wires are reordered around it).")
    )

st.subheader("Layers")
st.dataframe(
    arrow_safe([{"layer": l["name"], "in": l["in_size"], "out": l["out_size"], "reads": ",".join(l["consumed"]),
                 "writes": ",".join(l["produced"]), "non-zeros": l["nnz"], "density": l["density"],
                 "FLOPs/sample": l["flops"], "as dense FLOPs": l["dense_flops"], "I ⊗ core ⊗ I": l["kron"]}
                for l in layers]),
    hide_index=True,
    column_config={"density": st.column_config.NumberColumn("density", format="%.3g"),
                   "in": st.column_config.NumberColumn("in", format="localized"),
                   "out": st.column_config.NumberColumn("out", format="localized"),
                   "FLOPs/sample": st.column_config.NumberColumn("FLOPs/sample", format="localized"),
                   "as dense FLOPs": st.column_config.NumberColumn("as dense FLOPs", format="localized"),
                   "non-zeros": st.column_config.NumberColumn("non-zeros", format="localized")},
)
st.subheader("Sparsity patterns")
st.caption(f"Block density of non-zeros (each picture at most {PATTERN_SIDE}x{PATTERN_SIDE} blocks, drawn square "
           "whatever the matrix's shape: read its size from the title and the axes).")
st.plotly_chart(patterns_figure(report["patterns"], layers), width="stretch", key="stack.patterns")
