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
from typing import Any, Sequence

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


#: Sparsity patterns side by side in :func:`patterns_figure`, then a new row.
PATTERN_COLUMNS = 4


def patterns_figure(patterns: Sequence[Any], layers: Sequence[dict[str, Any]], columns: int = PATTERN_COLUMNS) -> Any:
    """Every layer's sparsity pattern in one figure, :data:`PATTERN_COLUMNS` to a row: block density
    of its non-zeros, outputs down, inputs across, each drawn square.  One chart rather than one per
    layer: on the 2-core development CPU the browser took about 40 ms for each Plotly chart it drew,
    and the Stack view's first visit went from 0.46 to 0.39 s (median of 6 fresh servers,
    2026-12-07)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if len(patterns) != len(layers) or not layers:
        raise ValueError(f"one pattern per layer: {len(patterns)} patterns for {len(layers)} layers")
    cols = max(1, min(columns, len(layers)))
    rows = math.ceil(len(layers) / cols)
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.07,
                        vertical_spacing=90 / (260 * rows),  # a fraction of the plot area (260·rows − 60 px): about
                        # 80 px at two rows, 83 at three, for one row's x titles and the next row's titles
                        subplot_titles=[f"{l['name']}: {l['out_size']:,} x {l['in_size']:,}" for l in layers])
    hidden = {"showticklabels": False, "showgrid": False, "zeroline": False}
    for k, (pattern, layer) in enumerate(zip(patterns, layers)):
        row, col = k // cols + 1, k % cols + 1
        fig.add_trace(go.Heatmap(z=pattern, colorscale="Greys", zmin=0, zmax=max(float(pattern.max()), 1e-12),
                                 showscale=False, name=layer["name"],
                                 hovertemplate=f"{layer['name']}: block density %{{z:.3g}}<extra></extra>"),
                      row=row, col=col)
        fig.update_xaxes(**hidden, title={"text": f"inputs (0 … {layer['in_size'] - 1:,})", "font": {"size": 11}},
                         row=row, col=col)
        fig.update_yaxes(**hidden, autorange="reversed", scaleanchor=f"x{k + 1 if k else ''}",
                         title={"text": f"outputs (0 … {layer['out_size'] - 1:,})", "font": {"size": 11}},
                         row=row, col=col)
    fig.update_annotations(font_size=12)  # the subplot titles
    fig.update_layout(height=260 * rows, margin={"l": 30, "r": 5, "t": 30, "b": 30})
    return fig
