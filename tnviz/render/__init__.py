"""Drawing networks and costs: backend-neutral scenes, Graphviz DOT/SVG/PNG, plotly charts.

Imports here are light: graphviz and plotly are imported inside the functions that need them.

>>> from tnviz.builders import mpo
>>> from tnviz.render import build_scene, to_dot
>>> scene = build_scene(mpo([8, 8], [8, 8], ranks=4))
>>> sorted({e.kind for e in scene.edges})
['bond', 'input', 'output']
"""
from __future__ import annotations

from .charts import diagram_figure, flops_vs_batch, step_bars
from .dot import ENGINE, render_dot, to_dot, to_png, to_source, to_svg
from .scene import PALETTE, Edge, Node, Scene, auto_layout, build_scene, edge_width, network_shape, positions

__all__ = [
    "Scene", "Node", "Edge", "PALETTE", "ENGINE", "build_scene", "network_shape", "auto_layout", "positions",
    "edge_width", "to_dot", "to_source", "to_svg", "to_png", "render_dot", "diagram_figure", "flops_vs_batch", "step_bars",
]
