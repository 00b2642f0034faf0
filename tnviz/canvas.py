"""Conversion between the drawing canvas's state and a :class:`TensorNetwork`, both ways.

The canvas (``tnviz_app/components/canvas``) edits a plain JSON value, the *canvas state*::

    {"format": "tnviz.canvas", "version": 1, "name": "MPO",
     "tensors": [{"id": "t0", "name": "A", "x": 0.0, "y": 0.0,
                  "legs": [{"id": "t0.0", "index": "i1"}, {"id": "t0.1", "index": "b1"}]}, ...],
     "sizes":   {"i1": 8, "b1": 4, ...},
     "inputs":  ["i1", ...], "outputs": ["o1", ...]}

It is the network JSON (SPEC 2.1) with two additions the mouse needs: stable ids for tensors
and legs (a rename must not break a drag in flight) and the positions kept on each tensor.
A leg is one slot of a tensor's ordered index list; as in the network, two legs that carry
the same index name form a bond, three or more a hyperedge, a single one an open index.
Positions are in layout units (the network JSON ``layout``), y pointing up; the canvas scales
them to pixels.  Nothing here imports streamlit: the page and the tests share it.

Example::

    >>> from tnviz.builders import mpo
    >>> net = mpo([4, 4], [4, 4], ranks=3)
    >>> canvas_to_network(network_to_canvas(net)) == net
    True
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from .errors import InvalidNetworkError
from .layout import CANVAS_SPACING, canvas_layout
from .network import Tensor, TensorNetwork

CANVAS_FORMAT = "tnviz.canvas"
CANVAS_VERSION = 1

#: Layout units between neighbouring tensors when a network comes without positions.
AUTO_SPACING = CANVAS_SPACING


def auto_layout(net: TensorNetwork) -> dict[str, tuple[float, float]]:
    """Positions for every tensor on the canvas (:func:`tnviz.layout.canvas_layout`)."""
    return canvas_layout(net, AUTO_SPACING)


def network_to_canvas(net: TensorNetwork) -> dict[str, Any]:
    """The canvas state that draws ``net`` (every tensor gets a position, see :func:`auto_layout`)."""
    layout = auto_layout(net)
    tensors = []
    for k, t in enumerate(net.tensors):
        tid = f"t{k}"
        x, y = layout[t.name]
        tensors.append(
            {
                "id": tid,
                "name": t.name,
                "x": x,
                "y": y,
                "legs": [{"id": f"{tid}.{j}", "index": index} for j, index in enumerate(t.indices)],
            }
        )
    return {
        "format": CANVAS_FORMAT,
        "version": CANVAS_VERSION,
        "name": net.name,
        "tensors": tensors,
        "sizes": net.sizes,
        "inputs": list(net.inputs),
        "outputs": list(net.outputs),
    }


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def canvas_to_network(state: Any) -> TensorNetwork:
    """The network drawn on the canvas, validated exactly as the JSON loader validates.

    Sizes of indices no tensor uses any more (a deleted leg) are dropped; everything else
    that the network rules reject raises :class:`InvalidNetworkError` naming the value.
    """
    if not isinstance(state, Mapping):
        raise InvalidNetworkError(f"a canvas state must be an object; got {type(state).__name__}")
    if state.get("format", CANVAS_FORMAT) != CANVAS_FORMAT:
        raise InvalidNetworkError(f"a canvas state has format {CANVAS_FORMAT!r}; got {state.get('format')!r}")
    raw_tensors = state.get("tensors", [])
    if not isinstance(raw_tensors, list):
        raise InvalidNetworkError(f"the canvas 'tensors' must be a list; got {type(raw_tensors).__name__}")
    tensors: list[Tensor] = []
    layout: dict[str, tuple[float, float]] = {}
    for k, t in enumerate(raw_tensors):
        if not isinstance(t, Mapping) or not isinstance(t.get("legs", []), list):
            raise InvalidNetworkError(f"each canvas tensor must be an object with a 'legs' list; tensor #{k} is {t!r:.80}")
        name = t.get("name")
        indices = []
        for leg in t.get("legs", []):
            index = leg.get("index") if isinstance(leg, Mapping) else leg
            indices.append(index)
        tensors.append(Tensor(name, tuple(indices)))
        if _number(t.get("x")) and _number(t.get("y")) and isinstance(name, str) and name not in layout:
            layout[name] = (t["x"], t["y"])
    sizes = state.get("sizes", {})
    if not isinstance(sizes, Mapping):
        raise InvalidNetworkError(f"the canvas 'sizes' must map index names to sizes; got {type(sizes).__name__}")
    used = {index for t in tensors for index in t.indices}
    sizes = {index: size for index, size in sizes.items() if index in used}
    inputs, outputs = state.get("inputs", []), state.get("outputs", [])
    for role, value in (("inputs", inputs), ("outputs", outputs)):
        if not isinstance(value, list):
            raise InvalidNetworkError(f"the canvas {role!r} must be a list of index names; got {value!r:.80}")
    name = state.get("name", "")
    return TensorNetwork(
        tuple(tensors),
        tuple(sizes.items()),
        tuple(inputs),
        tuple(outputs),
        name,
        tuple(layout.items()),
    )
