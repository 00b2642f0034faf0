"""Gallery: the paper's figures as ready networks; each opens in the Designer as the current network."""
from __future__ import annotations

import streamlit as st

import tnviz
from tnviz_app.components.figures import forward_flops, forward_label, layer_cost
from tnviz_app.components.formatting import human, md_escape
from tnviz_app.components.persist import remember, restore
from tnviz_app.components.diagram import diagram
from tnviz_app.state import set_network
from tnviz.gallery import GALLERY, GalleryEntry

DESIGNER = "views/designer.py"
FIGURES = ("Fig. 1", "Fig. 2", "Fig. 3", "Fig. 4")
K_FIGURE = "gallery.figure"  # the open tab


def open_key(entry_name: str, layer: int = 0) -> str:
    """The widget key of an entry's 'open in Designer' button (one per layer)."""
    return f"gallery.open.{entry_name}.{layer}"


@st.cache_data(show_spinner=False)
def built(entry_name: str) -> list[str]:
    """The entry's networks as JSON (cached: built once per server)."""
    return [net.to_json() for net in GALLERY[entry_name].networks()]


def params_line(net: tnviz.TensorNetwork) -> str:
    ratio = net.compression
    versus = f"{ratio:,.1f}x fewer than" if ratio > 1 else "the same as" if ratio == 1 else f"{1 / ratio:,.2f}x more than"
    c = layer_cost(net.to_json(), 1)
    return (
        f"{net.in_features:,} → {net.out_features:,} · **{net.params:,}** parameters, {versus} "
        f"the dense {net.dense_params:,} · {forward_label(c.optimize)} per input: **{forward_flops(c)}**"
    )


def open_button(net: tnviz.TensorNetwork, entry_name: str, layer: int, label: str) -> None:
    if st.button(label, key=open_key(entry_name, layer), icon=":material/open_in_new:"):
        set_network(net, f"gallery {entry_name}")
        st.switch_page(DESIGNER)


def show_entry(name: str, entry: GalleryEntry) -> None:
    nets = [tnviz.load_network(text) for text in built(name)]
    with st.container(border=True):
        st.markdown(f"**{entry.figure}: {entry.title}**")
        if len(nets) == 1:
            net = nets[0]
            diagram(net, alt=f"Diagram of {net.name}")
            st.caption(entry.caption)
            st.markdown(params_line(net))
            open_button(net, name, 0, "Open in Designer")
            return
        st.caption(entry.caption)
        columns = st.columns(len(nets))
        for k, (column, net) in enumerate(zip(columns, nets)):
            with column:
                st.markdown(f"*{md_escape(net.name)}*")
                diagram(net, alt=f"Diagram of {net.name}")
                st.markdown(params_line(net))
                open_button(net, name, k, f"Open layer {'ABCDEFGH'[k] if k < 8 else k + 1} in Designer")
        total, dense = sum(n.params for n in nets), sum(n.dense_params for n in nets)
        st.markdown(
            f"The whole MLP: **{total:,}** parameters in its tensor layers against {dense:,} dense "
            f"({dense / total:,.0f}x fewer); FLOPs per input: "
            f"{human(sum(layer_cost(n.to_json(), 1).flops for n in nets))} against "
            f"{human(sum(2 * n.dense_params for n in nets))} dense."
        )


st.title("Gallery")
st.caption(
    "The figures of Hamreras, Singh & Orús, *Tensorization is a powerful but underexplored tool for "
    "compression and interpretability of neural networks* (2025), as ready networks. Open one in the "
    "Designer to make it the current network for every page."
)
# Only the open tab is drawn (a tab change reruns the page): the four tabs hold 18 diagrams, each
# laid out by Graphviz in the browser, which made the first visit the slowest navigation of the app.
restore(K_FIGURE, FIGURES[0])
tabs = st.tabs(list(FIGURES), key=K_FIGURE, on_change="rerun")
remember(K_FIGURE)
for figure, tab in zip(FIGURES, tabs):
    if not tab.open:
        continue
    with tab:
        names = [n for n, e in GALLERY.items() if e.figure.startswith(figure + " ")]
        per_row = 1 if any(GALLERY[n].is_stack for n in names) else 2
        for start in range(0, len(names), per_row):
            columns = st.columns(per_row)
            for column, name in zip(columns, names[start:start + per_row]):
                with column:
                    show_entry(name, GALLERY[name])
