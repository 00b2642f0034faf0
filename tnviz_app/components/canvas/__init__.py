"""The network canvas: draw a layer with the mouse (Streamlit components v2 + React Flow).

The frontend (``frontend/src``, bundled into ``dist/canvas.js`` and committed, so nothing is
fetched at run time) edits a *canvas state* (see :mod:`tnviz.canvas`) and sends each edit back
as the component state ``drawing``.  This module validates each edit with the network loader,
keeps the last valid network, and sends the message of a bad edit back to the canvas, which
keeps the user's drawing either way.

Use from a page::

    result = network_canvas(get_network(), key="designer.canvas")
    if result.network is not None:
        set_network(result.network, "canvas")

Rebuild the bundle after editing the frontend: ``cd app/components/canvas/frontend &&
npm ci && npm run build``.
"""
from __future__ import annotations

import json

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import streamlit as st

from tnviz.canvas import canvas_to_network, network_to_canvas
from tnviz.errors import TnvizError
from tnviz.network import TensorNetwork

COMPONENT_NAME = "tnviz_network_canvas"
BUNDLE = Path(__file__).resolve().parent / "static" / "canvas.js"
DEFAULT_HEIGHT = 540


@dataclass(frozen=True)
class CanvasResult:
    """What one run of the canvas produced.

    ``network`` is the new valid network when the user's latest edit changed it (else None);
    ``error`` is the validation message of the drawing on the canvas (None when it is valid);
    ``current`` is the last valid network, the one the page should keep showing.
    """

    network: TensorNetwork | None
    error: str | None
    current: TensorNetwork


@lru_cache(maxsize=1)
def _component() -> Any:
    if not BUNDLE.is_file():
        raise FileNotFoundError(
            f"the canvas bundle must be built; {BUNDLE} is missing (run `npm ci && npm run build` in "
            f"{BUNDLE.parent.parent / 'frontend'})"
        )
    return st.components.v2.component(COMPONENT_NAME, js=BUNDLE.read_text(encoding="utf-8"), isolate_styles=False)


def _keys(key: str) -> dict[str, str]:
    return {name: f"{key}.{name}" for name in ("revision", "expected", "drawing", "error", "seq", "loads")}


def _revision(net: TensorNetwork, loads: int) -> str:
    return f"{loads}-{hashlib.sha1(net.to_json(indent=None).encode()).hexdigest()[:10]}"


def _event(state: Any) -> Mapping[str, Any] | None:
    """The latest ``drawing`` state the frontend sent (None before the first edit)."""
    if state is None:
        return None
    try:
        event = state["drawing"]
    except (KeyError, TypeError):
        return None
    return event if isinstance(event, Mapping) else None


def apply_drawing(key: str, event: Mapping[str, Any] | None) -> tuple[TensorNetwork | None, str | None]:
    """Validate one ``drawing`` event of the canvas ``key`` (ignored when stale or already seen).

    Returns ``(new valid network or None, error or None)`` and records both in session state.
    """
    ss = st.session_state
    k = _keys(key)
    if not event or event.get("revision") != ss.get(k["revision"]) or event.get("seq") == ss.get(k["seq"]):
        return None, None
    ss[k["seq"]] = event.get("seq")
    drawing = event.get("drawing")
    ss[k["drawing"]] = drawing
    try:
        net = canvas_to_network(drawing)
    except TnvizError as exc:
        ss[k["error"]] = str(exc)
        return None, str(exc)
    ss[k["error"]] = None
    expected = ss.get(k["expected"])
    if expected is not None and net.with_name(expected.name) == expected:
        return None, None  # nothing changed (the drawing's name is the page's business, not the canvas's)
    ss[k["expected"]] = net
    return net, None


def take_canvas_edit(key: str) -> TensorNetwork | None:
    """The network of the user's latest canvas edit when it is new and valid, else None.

    Call it at the top of a page (before anything shows the network) so that the whole page
    draws the edited network in this run; :func:`network_canvas` later sees the edit as done.
    """
    net, _ = apply_drawing(key, _event(st.session_state.get(key)))
    return net


def network_canvas(net: TensorNetwork, *, key: str, height: int = DEFAULT_HEIGHT) -> CanvasResult:
    """Show ``net`` on the drawing canvas and return the user's edit (see :class:`CanvasResult`).

    ``net`` is the page's current network.  When it differs from what the canvas last
    produced (a template, an upload), the canvas is reset to it; otherwise the user's drawing
    stays, valid or not.  Every edit is validated by :func:`tnviz.canvas.canvas_to_network`.
    """
    ss = st.session_state
    k = _keys(key)
    new_net, _ = apply_drawing(key, _event(ss.get(key)))
    if new_net is not None and net.with_name(new_net.name) == new_net:
        new_net = None  # the page took the edit already (take_canvas_edit), perhaps renaming it
    expected = ss.get(k["expected"])
    if new_net is None and expected is not None and net != expected and net.with_name(expected.name) == expected:
        # only the name changed (a rename, or the page naming a drawn network): keep the drawing
        ss[k["expected"]] = net
        ss[k["drawing"]] = {**ss[k["drawing"]], "name": net.name}
    elif new_net is None and net != expected:
        # A network from outside the canvas: draw it, fresh revision, no error.
        ss[k["loads"]] = ss.get(k["loads"], 0) + 1
        ss[k["revision"]] = _revision(net, ss[k["loads"]])
        ss[k["expected"]] = net
        ss[k["drawing"]] = network_to_canvas(net)
        ss[k["error"]] = None
    error = ss.get(k["error"])
    data = {
        # as JSON text: for a dict value Streamlit's component serializer imports pandas to look for a
        # dataframe (0.4-1 s on the first page of a fresh server); plain values skip that check
        "drawing": json.dumps(ss[k["drawing"]]),
        "revision": ss[k["revision"]],
        "error": error,
        "height": int(height),
    }
    _component()(data=data, key=key, on_drawing_change=lambda: None, height=int(height) + 4)
    return CanvasResult(network=new_net, error=error, current=ss[k["expected"]])


__all__ = ["CanvasResult", "network_canvas", "take_canvas_edit", "apply_drawing"]
