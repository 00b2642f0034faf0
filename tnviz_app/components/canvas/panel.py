"""The "Draw" section of the Designer: the canvas, live numbers beside it, export buttons.

Numbers come from :func:`tnviz.cost` and snippets from :mod:`tnviz.export`; this module only
lays them out.

>>> from tnviz_app.components.canvas.panel import draw_section   # in a page:
>>> # result = draw_section(get_network(), key="designer.canvas")
"""
from __future__ import annotations

import html

import streamlit as st

import tnviz
from tnviz.contract import DEFAULT_BUDGET_ELEMENTS
from tnviz.errors import TnvizError, plain_message
from tnviz.render.exports import EXPORTS, export, export_filename
from tnviz.network import TensorNetwork

from ..figures import forward_flops, forward_label, layer_cost, layer_decisions, runs_line
from ..formatting import count, human, md_escape, times
from . import CanvasResult, network_canvas

BATCH_CHOICES = [1, 8, 32, 128, 512, 1024, 4096, 16384]


def layer_warnings(net: TensorNetwork, layer_cost: tnviz.LayerCost, budget: int = DEFAULT_BUDGET_ELEMENTS) -> list[str]:
    """The cost warnings (ranks above their useful maximum) plus an intermediate over ``budget``."""
    out = list(layer_cost.warnings)
    if layer_cost.largest_intermediate > budget:
        out.append(
            f"intermediates are limited to {budget:,} elements; the forward pass at batch {layer_cost.batch} "
            f"makes one of {layer_cost.largest_intermediate:,}"
        )
    return out


def live_numbers(net: TensorNetwork, *, batch: int, key: str) -> tnviz.LayerCost | None:
    """Parameters vs dense, forward FLOPs at ``batch``, the einsum equation and the warnings."""
    try:
        c = layer_cost(net.to_json(), batch)
    except TnvizError as exc:
        st.error(md_escape(plain_message(exc)))
        return None
    with st.container(key=f"{key}-numbers".replace(".", "-")):
        st.metric("Parameters", count(c.params), help=f"{c.params:,}; dense layer: {c.dense_params:,}")
        st.caption(f"dense {c.dense_params:,} · {times(c.compression)} smaller · {net.in_features:,} → {net.out_features:,}")
        st.metric(forward_label(c.optimize), forward_flops(c),
                  help=f"{c.flops:,} at batch {batch:,} on the path {c.path_note}; dense layer: {c.dense_flops:,}")
        st.caption(f"batch {batch:,} · dense {human(c.dense_flops)} · {c.dense_flops / c.flops:,.2f}x fewer · "
                   f"backward {human(c.backward_flops)}")
        st.caption(f"largest intermediate {c.largest_intermediate:,} elements · runs "
                   f"{runs_line(layer_decisions(net.to_json(), batch))}")
        st.markdown("**einsum** (x first, then the tensors)")
        # inline code breaks anywhere in a narrow column; a code block would cut a long einsum off
        st.markdown(f"<code style='overflow-wrap:anywhere'>{html.escape(net.layer_equation())}</code>",
                    unsafe_allow_html=True)
        st.caption(net.named_equation())
        for message in layer_warnings(net, c):
            st.warning(md_escape(message), icon=":material/warning:")
    return c


def export_buttons(net: TensorNetwork, *, batch: int, key: str) -> None:
    """One download button per :data:`tnviz.render.exports.EXPORTS` format (made when clicked),
    each file named after the network."""
    stem = export_filename(net, "json").rsplit(".", 1)[0]
    st.caption(f"Export: files named after the network, `{stem}.*` (rename it in the Name field above)")
    # one row that wraps (a button never cuts its label to "Dow…" in a narrow window)
    with st.container(horizontal=True, wrap=True, key=f"{key}-exports".replace(".", "-")):
        for fmt, spec in EXPORTS.items():
            st.download_button(
                spec.label,
                data=lambda fmt=fmt: export(net, fmt, batch=batch),
                file_name=export_filename(net, fmt),
                mime=spec.mime,
                key=f"{key}.export.{fmt}",
                on_click="ignore",
                icon=":material/download:",
                width="content",
            )
    snippets = st.expander("Snippets", key=f"{key}.snippets_open", on_change="rerun")
    if not snippets.open:  # drawn when opened (it reruns): code blocks load the highlighter's 1.5 MB of JavaScript
        return
    with snippets:
        tabs = st.tabs(["opt_einsum", "PyTorch"], key=f"{key}.snippets_tab", on_change="rerun")
        with tabs[0]:
            st.code(export(net, "einsum", batch=batch), language="python")
        with tabs[1]:
            st.code(export(net, "torch", batch=batch), language="python")


def draw_section(net: TensorNetwork, *, key: str = "designer.canvas", height: int = 540) -> CanvasResult:
    """The canvas with the live numbers beside it and the exports below.

    Returns the canvas result; the page decides what to do with ``result.network``
    (normally ``app.state.set_network``).  The numbers describe the last valid network.
    """
    # the drawing gets five sixths of the page (its inspector moves under it when that is narrow)
    left, right = st.columns([5, 1], gap="medium")
    with left:
        result = network_canvas(net, key=key, height=height)
        if result.error:
            st.error(f"Canvas: {md_escape(result.error)} — the drawing is kept; the numbers show the last valid network.")
    current = result.network or result.current
    with right:
        batch = st.selectbox("Batch", BATCH_CHOICES, index=BATCH_CHOICES.index(1024), key=f"{key}.batch")
        live_numbers(current, batch=batch, key=key)
    export_buttons(current, batch=batch, key=key)
    return result
