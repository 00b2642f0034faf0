"""Plotly charts of a layer's costs: FLOPs vs batch size per strategy, and the path step by step.

plotly is imported inside each function, so importing this module costs nothing.

>>> from tnviz.builders import mpo
>>> from tnviz.cost import batch_sweep
>>> fig = flops_vs_batch(batch_sweep(mpo([8, 8], [8, 8], ranks=4)))
>>> [t.name for t in fig.data][:2]
['factorized (x through the tensors)', 'rebuilt (dense weight, then matmul)']
"""
from __future__ import annotations

import math
from typing import Any

from ..cost import BatchSweep, LayerCost

STRATEGY_LABELS = {
    "factorized": "factorized (x through the tensors)",
    "rebuilt": "rebuilt (dense weight, then matmul)",
    "best": "best path of the optimizer",
    "dense": "dense layer (stored weight)",
}
STRATEGY_COLORS = {"factorized": "#1f77b4", "rebuilt": "#ff7f0e", "best": "#2ca02c", "dense": "#7f7f7f"}
STRATEGY_DASH = {"factorized": "solid", "rebuilt": "solid", "best": "dash", "dense": "dot"}


def flops_vs_batch(sweep: BatchSweep, *, current_batch: int | None = None, title: str = "") -> Any:
    """FLOPs per strategy against the batch size, both axes logarithmic, with every crossover
    (where the cheaper of factorized / rebuilt changes) marked by a vertical line."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for key in STRATEGY_LABELS:
        if getattr(sweep, key, None) is None:
            continue
        fig.add_trace(go.Scatter(
            x=list(sweep.batches), y=list(getattr(sweep, key)), mode="lines+markers", name=STRATEGY_LABELS[key],
            line={"color": STRATEGY_COLORS[key], "dash": STRATEGY_DASH[key]},
            hovertemplate="batch %{x}<br>%{y:.3s} FLOPs<extra>" + key + "</extra>",
        ))
    # Annotations on a log axis take log10 positions (shapes take data values): place them apart.
    for batch, winner in sweep.crossovers:
        fig.add_vline(x=batch, line={"color": "#d62728", "dash": "dash", "width": 2})
        fig.add_annotation(
            x=math.log10(batch), y=1.0, yref="paper", text=f"crossover B={batch:,}: {winner} wins",
            showarrow=False, xanchor="right", yanchor="top", font={"color": "#d62728"},
        )
    if current_batch is not None:
        fig.add_vline(x=current_batch, line={"color": "#9467bd", "dash": "dot", "width": 1.5})
        fig.add_annotation(
            x=math.log10(current_batch), y=0.0, yref="paper", text=f"B={current_batch:,}",
            showarrow=False, xanchor="left", yanchor="bottom", font={"color": "#9467bd"},
        )
    fig.update_layout(
        title=title or "FLOPs vs batch size",
        xaxis={"title": "batch size", "type": "log"},
        yaxis={"title": "FLOPs (forward)", "type": "log"},
        legend={"orientation": "h", "yanchor": "bottom", "y": -0.35, "x": 0},
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
        template="plotly_white",
        height=420,
    )
    return fig


def step_label(k: int, step: Any) -> str:
    """``"1: x·A"`` for the k-th pairwise step."""
    return f"{k}: {'·'.join(step.operands)}"


def step_bars(layer_cost: LayerCost, *, title: str = "") -> Any:
    """Per-step FLOPs and intermediate sizes of the forward path, as two log-scale bar panels."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    labels = [step_label(k + 1, s) for k, s in enumerate(layer_cost.steps)]
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("FLOPs per step", "intermediate size (elements)"), horizontal_spacing=0.12,
    )
    hover = [
        f"{'·'.join(s.operands)} -> {s.result}[{','.join(s.result_indices)}]<br>summed: {','.join(s.summed) or '-'}"
        for s in layer_cost.steps
    ]
    fig.add_trace(go.Bar(
        x=labels, y=[s.flops for s in layer_cost.steps], name="FLOPs", marker_color="#1f77b4",
        hovertext=hover, hovertemplate="%{hovertext}<br>%{y:.3s} FLOPs<extra></extra>",
    ), row=1, col=1)
    fig.add_trace(go.Bar(
        x=labels, y=[s.size for s in layer_cost.steps], name="intermediate", marker_color="#d62728",
        hovertext=hover, hovertemplate="%{hovertext}<br>%{y:.3s} elements<extra></extra>",
    ), row=1, col=2)
    # explicit log ranges so the smallest bar still shows (autorange starts near the smallest value)
    for col, values in ((1, [s.flops for s in layer_cost.steps]), (2, [s.size for s in layer_cost.steps])):
        positive = [v for v in values if v > 0] or [1]
        fig.update_yaxes(
            type="log", range=[math.log10(min(positive)) - 0.5, math.log10(max(positive)) + 0.3], row=1, col=col,
        )
    fig.update_layout(
        title=title or f"forward path at batch {layer_cost.batch} ({layer_cost.optimize})",
        showlegend=False, template="plotly_white", height=380, margin={"l": 60, "r": 20, "t": 70, "b": 60},
    )
    return fig
