"""Plotly charts of bond features: class x channel heatmap, the activation spectrum, digit mosaics.

plotly is imported inside each function, so importing this module costs nothing.

>>> import numpy as np
>>> fig = spectrum_chart(np.array([4.0, 1.0, 0.0]))
>>> [t.name for t in fig.data]
['eigenvalue', 'cumulative fraction']
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

#: What the heatmap can show: key -> (BondStats attribute, colour bar title).
HEATMAP_VALUES: dict[str, tuple[str, str]] = {
    "mean activation, centred": ("centred_means", "mean - all"),
    "mean activation": ("class_means", "mean"),
    "selectivity": ("selectivity", "d'"),
}


def class_channel_heatmap(values: np.ndarray, classes: Sequence[int], *, title: str = "", colorbar: str = "",
                          highlight: dict[int, list[int]] | None = None) -> Any:
    """``values (classes, channels)`` as a heatmap, classes as rows; ``highlight`` marks each
    class's chosen channels (e.g. its most selective ones) with a dot."""
    import plotly.graph_objects as go

    values = np.asarray(values, dtype=float)
    limit = float(np.max(np.abs(values), initial=0.0)) or 1.0
    fig = go.Figure(go.Heatmap(
        z=values, x=[f"c{j}" for j in range(values.shape[1])], y=[str(c) for c in classes],
        colorscale="RdBu", reversescale=True, zmin=-limit, zmax=limit, zmid=0.0,
        colorbar={"title": {"text": colorbar}},
        hovertemplate="class %{y}, channel %{x}<br>%{z:.3g}<extra></extra>",
    ))
    if highlight:
        xs, ys = [], []
        for c, channels in highlight.items():
            for j in channels:
                xs.append(f"c{j}")
                ys.append(str(c))
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name="most selective",
                                 marker={"symbol": "circle-open", "size": 11, "color": "#111111", "line": {"width": 2}},
                                 hoverinfo="skip"))
    fig.update_layout(
        title=title or "class x channel", xaxis={"title": "bond channel"},
        yaxis={"title": "class", "autorange": "reversed", "type": "category"},
        margin={"l": 50, "r": 10, "t": 50, "b": 40}, height=380, showlegend=False,
    )
    return fig


def spectrum_chart(spectrum: np.ndarray, *, after: np.ndarray | None = None, after_name: str = "after the gauge move",
                   title: str = "") -> Any:
    """Covariance eigenvalues (bars, descending) and their cumulative fraction of the variance
    (line, right axis); ``after`` overlays a second spectrum (e.g. after a gauge move) as markers."""
    import plotly.graph_objects as go

    s = np.asarray(spectrum, dtype=float)
    total = s.sum()
    cumulative = np.cumsum(s) / total if total > 0 else np.zeros_like(s)
    k = list(range(1, len(s) + 1))
    fig = go.Figure()
    fig.add_trace(go.Bar(x=k, y=s, name="eigenvalue", marker={"color": "#1f77b4"},
                         hovertemplate="λ%{x} = %{y:.4g}<extra></extra>"))
    fig.add_trace(go.Scatter(x=k, y=cumulative, name="cumulative fraction", yaxis="y2", mode="lines+markers",
                             line={"color": "#d62728"}, hovertemplate="first %{x}: %{y:.1%}<extra></extra>"))
    if after is not None:
        fig.add_trace(go.Scatter(x=k, y=np.asarray(after, dtype=float), name=after_name, mode="markers",
                                 marker={"symbol": "x", "size": 10, "color": "#ff7f0e"},
                                 hovertemplate="λ%{x} = %{y:.4g}<extra>" + after_name + "</extra>"))
    fig.update_layout(
        title=title or "spectrum of the bond activations (covariance eigenvalues)",
        xaxis={"title": "principal direction", "dtick": 1 if len(s) <= 32 else None},
        yaxis={"title": "variance"},
        yaxis2={"title": "cumulative fraction", "overlaying": "y", "side": "right", "range": [0, 1.05],
                "tickformat": ".0%", "tickvals": [0, 0.25, 0.5, 0.75, 1.0], "showgrid": False},
        legend={"orientation": "h", "y": -0.25}, margin={"l": 60, "r": 60, "t": 50, "b": 40}, height=360,
    )
    return fig


def image_mosaic(images: np.ndarray, *, row_labels: Sequence[str] = (), col_labels: Sequence[str] = (),
                 title: str = "", gap: int = 1, colorscale: str = "Greys", height: int | None = None,
                 symmetric: bool = False) -> Any:
    """``images (rows, cols, h, w)`` (or ``(n, h, w)`` as one row) tiled into one heatmap with
    blank gaps, rows labelled on the left, columns on top; ``symmetric`` centres the colours on 0."""
    import plotly.graph_objects as go

    a = np.asarray(images, dtype=float)
    if a.ndim == 3:
        a = a[None]
    rows, cols, h, w = a.shape
    mosaic = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for r in range(rows):
        for c in range(cols):
            mosaic[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = a[r, c]
    span = {}
    if symmetric:
        limit = float(np.nanmax(np.abs(mosaic))) if np.isfinite(mosaic).any() else 1.0
        span = {"zmin": -(limit or 1.0), "zmax": limit or 1.0, "zmid": 0.0}
    fig = go.Figure(go.Heatmap(z=mosaic, colorscale=colorscale, showscale=False, hoverongaps=False,
                               hovertemplate="%{z:.2f}<extra></extra>", **span))
    axis = {"showgrid": False, "zeroline": False}
    fig.update_layout(
        title=title, height=height or max(160, 60 + rows * 70),
        xaxis={**axis, "tickvals": [c * (w + gap) + (w - 1) / 2 for c in range(len(col_labels))],
               "ticktext": list(col_labels), "side": "top", "showticklabels": bool(col_labels)},
        yaxis={**axis, "autorange": "reversed", "scaleanchor": "x",
               "tickvals": [r * (h + gap) + (h - 1) / 2 for r in range(len(row_labels))],
               "ticktext": list(row_labels), "showticklabels": bool(row_labels)},
        margin={"l": 60, "r": 10, "t": 60 if title else 30, "b": 10}, plot_bgcolor="white",
    )
    return fig
