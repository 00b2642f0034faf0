"""Plotly charts of bond spectra and compression trade-offs.

plotly is imported inside each function, so importing this module costs nothing.

>>> import torch
>>> from tnviz.decompose.spectra import layer_spectra
>>> W = torch.randn(16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
>>> fig = spectra_chart(layer_spectra(W, "svd", value=3))
>>> [t.name for t in fig.data], [s.x0 for s in fig.layout.shapes]
(['r kept (3)', 'r discarded (9)'], [3.5])
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    from ..decompose import TradeoffPoint
    from ..decompose.spectra import LayerRow, LayerSpectra

METHOD_COLORS = {"mpo": "#1f77b4", "tr": "#ff7f0e", "tucker": "#2ca02c", "cp": "#9467bd", "svd": "#7f7f7f"}
METHOD_LABELS = {"mpo": "MPO / TT", "tr": "tensor ring", "tucker": "Tucker", "cp": "CP", "svd": "low-rank SVD"}
CUT_COLOR = "#d62728"
KEPT_COLOR = "#1f77b4"
DISCARDED_COLOR = "#bbbbbb"
#: Singular values at or below this fraction of a bond's largest are drawn at it (log axes cannot show 0).
FLOOR = 1e-16


def _positive(values: Sequence[float]) -> list[float]:
    top = max(values) if values else 0.0
    floor = top * FLOOR if top > 0 else FLOOR
    return [max(v, floor) for v in values]


def spectra_chart(spectra: "LayerSpectra", *, columns: int = 3, title: str = "") -> Any:
    """One small panel per bond: singular values (log scale) by index, the kept ones in blue, the
    discarded ones in grey, and the cut as a red dashed line after the last kept value."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    bonds = list(spectra.bonds)
    n = max(1, len(bonds))
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    titles = [
        f"{b.bond}: keep {b.kept} of {b.full}" + ("" if b.discarded is None else f" · discarded {b.discarded:.3g}")
        for b in bonds
    ]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles or None,
                        horizontal_spacing=0.07, vertical_spacing=min(0.12, 0.5 / rows) if rows > 1 else 0.1)
    for k, b in enumerate(bonds):
        row, col = k // cols + 1, k % cols + 1
        values = _positive(list(b.values))
        x = list(range(1, len(values) + 1))
        fig.add_trace(go.Scatter(
            x=x[: b.kept], y=values[: b.kept], mode="lines+markers", name=f"{b.bond} kept ({b.kept})",
            legendgroup=b.bond, line={"color": KEPT_COLOR}, marker={"size": 4},
            hovertemplate=f"{b.bond}" + " σ%{x} = %{y:.4g}<extra>kept</extra>", showlegend=False,
        ), row=row, col=col)
        if b.kept < len(values):
            fig.add_trace(go.Scatter(
                x=x[b.kept:], y=values[b.kept:], mode="lines+markers", name=f"{b.bond} discarded ({len(values) - b.kept})",
                legendgroup=b.bond, line={"color": DISCARDED_COLOR}, marker={"size": 4},
                hovertemplate=f"{b.bond}" + " σ%{x} = %{y:.4g}<extra>discarded</extra>", showlegend=False,
            ), row=row, col=col)
        if b.kept < len(values):  # the cut; nothing to draw when every value is kept
            fig.add_vline(x=b.kept + 0.5, line={"color": CUT_COLOR, "dash": "dash", "width": 2}, row=row, col=col)
        fig.update_yaxes(type="log", row=row, col=col, exponentformat="power")
        fig.update_xaxes(title_text="index" if row == rows else None, row=row, col=col)
    fig.update_layout(
        title=title or f"Singular values per bond ({spectra.method}, {'rank' if spectra.setting == 'rank' else 'error'} "
                       f"{spectra.value:g}): kept in blue, discarded in grey, cut in red",
        template="plotly_white", height=max(300, 260 * rows + 80), margin={"l": 50, "r": 20, "t": 90, "b": 40},
    )
    return fig


def tradeoff_chart(
    points: Iterable["TradeoffPoint"],
    front: Iterable["TradeoffPoint"] = (),
    *,
    current: tuple[str, int, float] | None = None,
    dense_params: int | None = None,
    title: str = "",
    error: str = "rel_error",
) -> Any:
    """Relative error vs parameters (log x) for every method, the Pareto front as a black dashed
    line, the dense layer as a dotted line, and ``current = (method, params, error)`` as a star.
    ``error`` is the point attribute plotted: ``'rel_error'`` (weights) or ``'data_error'``
    (on the calibration inputs, for a data-aware trade-off)."""
    import plotly.graph_objects as go

    points = list(points)
    fig = go.Figure()
    methods = list(dict.fromkeys(p.method for p in points))
    for m in methods:
        pts = sorted((p for p in points if p.method == m), key=lambda p: p.params)
        fig.add_trace(go.Scatter(
            x=[p.params for p in pts], y=[getattr(p, error) for p in pts], mode="lines+markers",
            name=METHOD_LABELS.get(m, m), line={"color": METHOD_COLORS.get(m)},
            text=[f"rank {p.rank}" for p in pts],
            hovertemplate="%{text}<br>%{x:,} params<br>error %{y:.4f}<extra>" + METHOD_LABELS.get(m, m) + "</extra>",
        ))
    front = sorted(front, key=lambda p: p.params)
    if front:
        fig.add_trace(go.Scatter(
            x=[p.params for p in front], y=[getattr(p, error) for p in front], mode="lines", name="Pareto front",
            line={"color": "black", "dash": "dash", "width": 1.5}, hoverinfo="skip",
        ))
    if current is not None:
        method, params, err = current
        fig.add_trace(go.Scatter(
            x=[params], y=[err], mode="markers", name=f"current: {METHOD_LABELS.get(method, method)}",
            marker={"symbol": "star", "size": 18, "color": CUT_COLOR, "line": {"color": "black", "width": 1}},
            hovertemplate="current choice<br>%{x:,} params<br>error %{y:.4f}<extra></extra>",
        ))
    if dense_params:
        fig.add_vline(x=dense_params, line={"color": "#7f7f7f", "dash": "dot", "width": 1.5})
        fig.add_annotation(x=math.log10(dense_params), y=1.0, yref="paper", text="dense", showarrow=False,
                           xanchor="right", yanchor="top", font={"color": "#7f7f7f"})
    fig.update_layout(
        title=title or "Error vs parameters (every method)",
        xaxis={"title": "parameters", "type": "log"},
        yaxis={"title": "relative error on the calibration inputs" if error == "data_error" else "relative Frobenius error",
               "rangemode": "tozero"},
        legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
        template="plotly_white", height=520, margin={"l": 60, "r": 20, "t": 60, "b": 40},
    )
    return fig


def sensitivity_chart(rows: Iterable["LayerRow"], *, title: str = "") -> Any:
    """Relative error per layer at the common setting, as horizontal bars (largest at the top)."""
    import plotly.graph_objects as go

    ok = sorted((r for r in rows if r.rel_error is not None), key=lambda r: r.rel_error)
    fig = go.Figure(go.Bar(
        x=[r.rel_error for r in ok], y=[r.name for r in ok], orientation="h", marker_color=KEPT_COLOR,
        text=[f"{r.compression:,.1f}x" if r.compression else "" for r in ok], textposition="outside",
        hovertemplate="%{y}<br>error %{x:.4f}<br>%{text} smaller<extra></extra>",
    ))
    fig.update_layout(
        title=title or "Relative error per layer at the common setting (bar label: compression)",
        xaxis={"title": "relative Frobenius error", "rangemode": "tozero"},
        template="plotly_white", height=max(300, 18 * len(ok) + 120), margin={"l": 20, "r": 40, "t": 60, "b": 40},
    )
    return fig
