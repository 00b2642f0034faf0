"""The one layout module of the core (tnviz.layout): the diagrams, the canvas and the Teach page
place tensors alike, and the core no longer reaches up into render/ for it (issue 14)."""
from __future__ import annotations

import tnviz.canvas
from tnviz import layout
from tnviz.testing import template_networks


def test_the_diagram_the_canvas_and_teach_use_the_core_layout():
    import tnviz.render.scene as scene
    import tnviz.teach as teach

    assert scene.auto_layout is layout.auto_layout and scene.network_shape is layout.network_shape
    assert scene.stress_layout is layout.stress_layout and teach.auto_layout is layout.auto_layout
    for _, net in template_networks():
        bare = net.with_layout(None)
        assert tnviz.canvas.auto_layout(bare) == layout.canvas_layout(bare)
        assert layout.canvas_layout(bare) == {
            n: (round(x * layout.CANVAS_SPACING, 4), round(y * layout.CANVAS_SPACING, 4))
            for n, (x, y) in layout.auto_layout(bare).items()}


def test_shapes_of_the_templates():
    shapes = {name: layout.network_shape(net.with_layout(None)) for name, net in template_networks()}
    assert shapes["MPO / tensor train"] == "chain" and shapes["Tensor ring"] == "ring"
    assert shapes["Tucker"] == "star" and shapes["CP"] == "hyperstar"
    assert set(shapes.values()) <= set(layout.LAYOUT_SHAPES)
