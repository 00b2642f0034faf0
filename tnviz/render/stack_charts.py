"""Plotly charts of a stack view (:mod:`tnviz.stack`): the column of layers and each layer's
sparsity pattern.  They take the plain report of :meth:`tnviz.stack.StackView.to_dict` (plus the
patterns), so pages can cache it.  plotly is imported inside each function.

>>> from tnviz.builders import mpo
>>> from tnviz.stack import stack_views
>>> (view,) = stack_views(mpo([2, 2], [2, 2], ranks=2), views=["left-to-right"])
>>> fig = column_figure(view.to_dict(), selected=0)
>>> fig.layout.yaxis.title.text
'layers, input (bottom) to output (top)'
"""
from __future__ import annotations

import math
from typing import Any

_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def si(value: float) -> str:
    """``2.62 M``: about three significant digits and an SI prefix."""
    for factor, prefix in _PREFIXES:
        if abs(value) >= factor:
            v = value / factor
            return f"{v:.3g} {prefix}" if abs(v) < 1000 else f"{v:.3e} {prefix}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.3g}"


def column_figure(report: dict[str, Any], selected: int) -> Any:
    """The stack drawn bottom (input) to top (output): one trapezoid per layer, width ~ log2(size)."""
    import plotly.graph_objects as go

    layers = report["layers"]
    widest = max(math.log2(max(l["in_size"], l["out_size"], 2)) for l in layers)
    fig = go.Figure()
    for k, layer in enumerate(layers):
        w_in = math.log2(max(layer["in_size"], 2)) / widest
        w_out = math.log2(max(layer["out_size"], 2)) / widest
        y0, y1 = 2 * k, 2 * k + 1.6
        color = "#c0392b" if k == selected else ("#7f8c8d" if layer["name"] == "P" else "#2c3e50")
        fig.add_trace(go.Scatter(
            x=[-w_in, w_in, w_out, -w_out, -w_in], y=[y0, y0, y1, y1, y0], fill="toself", mode="lines",
            line={"color": color}, fillcolor=color, opacity=0.85 if k == selected else 0.55, hoverinfo="text",
            text=f"{layer['name']}: {layer['in_size']:,} → {layer['out_size']:,}", name=layer["name"], showlegend=False,
        ))
        fig.add_annotation(x=1.05, y=(y0 + y1) / 2, xanchor="left", showarrow=False, font={"size": 12},
                           text=(f"<b>{layer['name']}</b>  {layer['in_size']:,} → {layer['out_size']:,}<br>"
                                 f"density {layer['density']:.3g} · {si(layer['flops'])}FLOPs/sample"))
    fig.add_annotation(x=0, y=-0.5, showarrow=False, text=f"input {layers[0]['in_size']:,}")
    fig.add_annotation(x=0, y=2 * len(layers) - 0.1, showarrow=False, text=f"output {layers[-1]['out_size']:,}")
    hidden = {"showticklabels": False, "showgrid": False, "zeroline": False}
    fig.update_layout(
        height=max(260, 110 * len(layers)), margin={"l": 30, "r": 10, "t": 10, "b": 30},
        xaxis={**hidden, "range": [-1.1, 3.2], "title": "width ∝ log2(wires' size)"},
        yaxis={**hidden, "title": "layers, input (bottom) to output (top)"},
        plot_bgcolor="white",
    )
    return fig


def pattern_figure(pattern: Any, layer: dict[str, Any]) -> Any:
    """One layer's sparsity pattern: block density of its non-zeros, outputs down, inputs across."""
    import plotly.graph_objects as go

    fig = go.Figure(go.Heatmap(z=pattern, colorscale="Greys", zmin=0, zmax=max(float(pattern.max()), 1e-12),
                               showscale=False, hovertemplate="block density %{z:.3g}<extra></extra>"))
    hidden = {"showticklabels": False, "showgrid": False, "zeroline": False}
    fig.update_layout(
        title={"text": f"{layer['name']}: {layer['out_size']:,} x {layer['in_size']:,}", "font": {"size": 12}},
        height=260, margin={"l": 30, "r": 5, "t": 30, "b": 30},
        xaxis={**hidden, "title": {"text": f"inputs (0 … {layer['in_size'] - 1:,})", "font": {"size": 11}}},
        yaxis={**hidden, "autorange": "reversed", "scaleanchor": "x",
               "title": {"text": f"outputs (0 … {layer['out_size'] - 1:,})", "font": {"size": 11}}},
    )
    return fig
