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

#: Browsers (and plotly's JSON encoder) hold integers to 64 bits; FLOP counts of large networks
#: pass that, so a series with a value beyond 2^53 is plotted as floats.
_EXACT_FLOAT = 2**53


def plottable(values: Any) -> list:
    """The values as a list plotly can send: floats when one of them is too large for exact floats."""
    values = list(values)
    if any(isinstance(v, int) and abs(v) > _EXACT_FLOAT for v in values):
        return [float(v) for v in values]
    return values


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
            x=list(sweep.batches), y=plottable(getattr(sweep, key)), mode="lines+markers", name=STRATEGY_LABELS[key],
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
        # one labelled tick per decade, SI prefixes: no bare "2" or "5" minor labels without a unit
        xaxis={"title": "batch size (inputs per call)", "type": "log", "dtick": 1, "exponentformat": "SI"},
        yaxis={"title": "FLOPs per forward pass of the batch", "type": "log", "dtick": 1, "exponentformat": "SI"},
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
        x=labels, y=plottable(s.flops for s in layer_cost.steps), name="FLOPs", marker_color="#1f77b4",
        hovertext=hover, hovertemplate="%{hovertext}<br>%{y:.3s} FLOPs<extra></extra>",
    ), row=1, col=1)
    fig.add_trace(go.Bar(
        x=labels, y=plottable(s.size for s in layer_cost.steps), name="intermediate", marker_color="#d62728",
        hovertext=hover, hovertemplate="%{hovertext}<br>%{y:.3s} elements<extra></extra>",
    ), row=1, col=2)
    # explicit log ranges so the smallest bar still shows (autorange starts near the smallest value)
    for col, values, unit in ((1, [s.flops for s in layer_cost.steps], "FLOPs"),
                              (2, [s.size for s in layer_cost.steps], "elements")):
        positive = [v for v in values if v > 0] or [1]
        fig.update_yaxes(
            type="log", range=[math.log10(min(positive)) - 0.5, math.log10(max(positive)) + 0.3], row=1, col=col,
            title_text=unit, dtick=1, exponentformat="SI",
        )
        fig.update_xaxes(title_text="pairwise step (operands)", row=1, col=col)
    fig.update_layout(
        title=title or f"forward path at batch {layer_cost.batch} ({layer_cost.path_note})",
        showlegend=False, template="plotly_white", height=380, margin={"l": 60, "r": 20, "t": 70, "b": 60},
    )
    return fig


def diagram_figure(net_or_scene: Any, **scene_options: Any) -> Any:
    """The Penrose diagram as a plotly figure (the second backend of the scene): lines with the
    scene's widths and colours, tensors as markers with hover text, labels at the leg ends.

    >>> from tnviz.builders import cp
    >>> fig = diagram_figure(cp([4, 4], [4, 4], rank=3))
    >>> sorted({t.name for t in fig.data if t.name})
    ['delta', 'tensors']
    """
    import plotly.graph_objects as go

    from ..network import TensorNetwork
    from .scene import TENSOR_SIZE, build_scene

    scene = build_scene(net_or_scene, **scene_options) if isinstance(net_or_scene, TensorNetwork) else net_or_scene
    fig = go.Figure()
    for e in scene.edges:
        pts = e.points(scene)
        fig.add_trace(go.Scatter(
            x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", showlegend=False, hoverinfo="text",
            text=f"{e.index} = {e.size} ({e.kind})",
            line={"color": e.color, "width": e.width, "dash": "dash" if e.style == "dashed" else "solid"},
        ))
    labels = [(e.label_pos, e.label, e.color) for e in scene.edges if e.label_pos is not None]
    for e in scene.edges:
        if e.kind in ("input", "output"):  # text just beyond the free end, along the leg
            a, b = scene.node(e.source), scene.node(e.target)
            length = math.dist((a.x, a.y), (b.x, b.y)) or 1.0
            push = 0.12 + 0.035 * len(b.label) * abs(b.x - a.x) / length
            labels.append(((b.x + (b.x - a.x) / length * push, b.y + (b.y - a.y) / length * push), b.label, e.color))
    labels += [((n.x, n.y - 0.2), n.label, e_color) for n in scene.nodes if n.kind == "delta"
               for e_color in [next(e.color for e in scene.edges if e.target == n.id)]]
    if labels:
        fig.add_trace(go.Scatter(
            x=[p[0] for p, _, _ in labels], y=[p[1] for p, _, _ in labels], mode="text", showlegend=False,
            text=[t for _, t, _ in labels], textfont={"color": [c for _, _, c in labels], "size": 11},
            hoverinfo="skip",
        ))
    tensors = [n for n in scene.nodes if n.kind == "tensor"]
    fig.add_trace(go.Scatter(
        x=[n.x for n in tensors], y=[n.y for n in tensors], mode="markers+text", name="tensors",
        text=[n.label for n in tensors], hovertext=[n.tooltip for n in tensors], hoverinfo="text",
        marker={"size": TENSOR_SIZE * 72, "color": [n.fill for n in tensors],
                "symbol": ["square" if n.shape == "box" else "circle" for n in tensors],
                "line": {"color": [n.border for n in tensors], "width": 2}},
        showlegend=False,
    ))
    deltas = [n for n in scene.nodes if n.kind == "delta"]
    if deltas:
        fig.add_trace(go.Scatter(
            x=[n.x for n in deltas], y=[n.y for n in deltas], mode="markers", name="delta",
            hovertext=[n.tooltip for n in deltas], hoverinfo="text", showlegend=False,
            marker={"size": 10, "color": [n.fill for n in deltas]},
        ))
    fig.update_layout(
        template="plotly_white", showlegend=False, margin={"l": 10, "r": 10, "t": 30, "b": 10},
        title=scene.title, xaxis={"visible": False}, yaxis={"visible": False, "scaleanchor": "x"},
    )
    return fig


def heal_curves(curves: dict[str, list[float]], *, unit: str = "step", title: str = "") -> Any:
    """The training loss of a healing as it went: one line per layer (or one for the model),
    against its step (or epoch), on a log axis when the losses span more than a factor of 10."""
    import plotly.graph_objects as go

    fig = go.Figure()
    values = [v for c in curves.values() for v in c if v > 0]
    for name, curve in curves.items():
        fig.add_trace(go.Scatter(x=list(range(1, len(curve) + 1)), y=plottable(curve), mode="lines", name=name))
    log = bool(values) and max(values) > 10 * min(values)
    fig.update_layout(title=title or None, height=320, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis_title=f"{unit} of its training", yaxis_title="training loss (relative to the target)",
                      showlegend=len(curves) <= 12)
    if log:
        fig.update_yaxes(type="log", dtick=1, exponentformat="power")
    return fig


#: Marker symbols of the leg placements in :func:`search_chart`.
_PLACEMENT_SYMBOLS = {"-": "circle", "chain": "square", "inputs-last": "diamond"}


def _symbol(c: dict[str, Any]) -> str:
    """A candidate's marker: its placement's symbol, open when scored in the searched neuron order."""
    base = _PLACEMENT_SYMBOLS.get(c["placement"], "circle")
    return base + "-open" if c.get("order") == "searched" else base


def search_chart(search: dict[str, Any], *, title: str = "") -> Any:
    """Every candidate of one layer's ``method="auto"`` search (the ``search`` record of
    :func:`tnviz.model.auto.compress_auto`) on error against parameters: one colour per method, one
    symbol per leg placement, the Pareto front (:func:`tnviz.decompose.pareto_front`) as a line, the
    layer's budget as a vertical line, the winner as a star and the runner-up ringed; a candidate
    scored in the searched neuron order (``order == "searched"``, :mod:`tnviz.model.auto_order`)
    is drawn open, one in the stored order filled.  Candidates not scored (``skipped``) are left
    out and counted in the title."""
    from types import SimpleNamespace

    import plotly.graph_objects as go

    from ..decompose import pareto_front

    rows = [c for c in search["candidates"] if c["error"] is not None and c["params"] is not None]
    skipped = len(search["candidates"]) - len(rows)
    fig = go.Figure()
    for method in dict.fromkeys(c["method"] for c in rows):
        mine = [c for c in rows if c["method"] == method]
        fig.add_trace(go.Scatter(
            x=[c["params"] for c in mine], y=[c["error"] for c in mine], mode="markers", name=method,
            marker={"size": 10, "symbol": [_symbol(c) for c in mine], "line": {"width": 2}},
            text=[f"{c['label']} ({c['scored']}; {c.get('order', 'stored')} neuron order; {c['note']})" for c in mine],
            hovertemplate="%{text}<br>%{x:,} parameters, error %{y:.4f}<extra></extra>"))
    if any(c.get("order") == "searched" for c in rows):  # the key to the two fills
        for order, symbol in (("stored", "circle"), ("searched", "circle-open")):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=f"{order} neuron order",
                                     marker={"size": 10, "symbol": symbol, "color": "#444444", "line": {"width": 2}}))
    front = pareto_front([SimpleNamespace(params=c["params"], error=c["error"]) for c in rows])
    fig.add_trace(go.Scatter(x=[p.params for p in front], y=[p.error for p in front], mode="lines",
                             name="Pareto front", line={"color": "#7f7f7f", "dash": "dot"}, hoverinfo="skip"))
    for key, name, marker in (("runner_up", "runner-up", {"size": 20, "symbol": "circle-open", "color": "#ff7f0e",
                                                          "line": {"width": 2}}),
                              ("chosen", "chosen", {"size": 20, "symbol": "star", "color": "#d62728"})):
        c = search.get(key)
        if c is not None:
            fig.add_trace(go.Scatter(x=[c["params"]], y=[c["error"]], mode="markers", name=f"{name}: {c['label']}",
                                     marker=marker, hovertemplate=f"{name}: {c['label']}<br>%{{x:,}} parameters, "
                                                                  f"error %{{y:.4f}}<extra></extra>"))
    fig.add_vline(x=search["budget"], line={"color": "#2ca02c", "dash": "dash"},
                  annotation_text=f"budget {search['budget']:,}", annotation_position="top left")
    # short enough for the axis at 380 px; the formula goes in the hover and the caption
    what = "data error ‖(W−W̃)X‖/‖WX‖" if search["error"] == "data" else "weight error ‖W−W̃‖/‖W‖"
    heading = title or "Candidates of the search"
    if skipped:
        heading += f" ({skipped} not run)"
    fig.update_layout(title=heading, height=400, margin=dict(l=10, r=10, t=60, b=10),
                      xaxis_title="parameters of the network (count)", yaxis_title=f"{what} (relative)",
                      legend={"font": {"size": 11}})
    return fig
