"""Tensor-network diagrams on a page: SVG laid out by Graphviz's ``neato`` on the server.

``st.graphviz_chart`` lays a diagram out in the browser with Graphviz compiled to WebAssembly; the
first diagram of a session waited for that module to load and compile, which made the Gallery
(up to 8 diagrams a tab) and Teach the slowest first visits of the app.  Here the server runs
``neato`` once per distinct DOT text (cached across sessions) and the page gets the finished SVG,
inline, so a diagram keeps its hover tooltips (``<title>``) and its text stays selectable.

The SVG is checked before it is shown: only Graphviz's drawing elements, no event attributes, no
links out (:func:`safe_svg`); a network's names come from uploaded JSON, and the text is shown as
HTML.  Without ``neato`` (the Python package installed but not the program), when it fails on a
graph, or when the check fails, the diagram falls back to ``st.graphviz_chart``.

Each diagram is a ``<div class="tn-diagram">`` whose ``data-dot`` is :func:`dot_digest` of its DOT
text: tests and tools compare it with :func:`tnviz.render.to_dot` of the network they expect.

>>> dot_digest("graph { a }") == dot_digest("graph { a }"), len(dot_digest("graph { a }"))
(True, 16)
"""
from __future__ import annotations

import hashlib
import html
import re
import subprocess
import xml.etree.ElementTree as ET
from functools import lru_cache
from typing import Any

import streamlit as st

from tnviz.errors import TnvizError
from tnviz.render import ENGINE, render_dot, to_dot

SVG_NS = "{http://www.w3.org/2000/svg}"
XLINK_NS = "{http://www.w3.org/1999/xlink}"
#: The elements Graphviz's SVG output is made of (``a`` carries a tooltip, never a link here).
ALLOWED_TAGS = frozenset({"svg", "g", "title", "polygon", "polyline", "ellipse", "path", "text", "a", "desc",
                          "defs", "linearGradient", "radialGradient", "stop"})
_SIZE = re.compile(r'<svg width="([0-9.]+)pt" height="([0-9.]+)pt"')


def dot_digest(dot: str) -> str:
    """A short fingerprint of DOT text (the ``data-dot`` of the diagram drawn from it)."""
    return hashlib.sha1(dot.encode("utf-8")).hexdigest()[:16]


def safe_svg(svg: str) -> bool:
    """Whether ``svg`` holds only Graphviz's drawing elements: no scripts, no foreign elements, no
    ``on*`` event attributes, no link that goes anywhere."""
    try:
        root = ET.fromstring(svg)
    except ET.ParseError:
        return False
    for el in root.iter():
        tag = el.tag.removeprefix(SVG_NS)
        if tag not in ALLOWED_TAGS:
            return False
        for name, value in el.attrib.items():
            local = name.removeprefix(XLINK_NS).lower()
            if local.startswith("on") or (local == "href" and value.strip()):
                return False
            if "javascript:" in value.lower().replace(" ", ""):
                return False
    return True


@lru_cache(maxsize=512)
def svg_markup(dot: str) -> str | None:
    """The inline SVG of ``dot``, fitted to its column (scaled down, never up), or ``None`` when it
    cannot be drawn here (no ``neato``, or an SVG that fails :func:`safe_svg`).  Cached for the
    process, across sessions (a plain ``lru_cache``, so that :func:`tnviz_app.serve.warm` can draw
    the fixed pictures before the server starts, when Streamlit's caches do not exist yet)."""
    try:
        svg = render_dot(dot, "svg").decode("utf-8")
    except (TnvizError, subprocess.CalledProcessError, OSError):  # no neato; neato failed on this graph
        return None
    svg = re.sub(r"<!--.*?-->", "", svg[svg.find("<svg"):], flags=re.S)
    if not safe_svg(svg):
        return None
    # width 100% of the column, at most the drawing's own size; the height follows the viewBox
    svg = _SIZE.sub(lambda m: f'<svg width="100%" style="max-width:{m[1]}pt;height:auto"', svg, count=1)
    return " ".join(svg.split())  # one line: markdown takes it as one HTML block


def diagram(net_or_scene: Any, *, alt: str, **options: Any) -> None:
    """Draw a network (or a :class:`~tnviz.render.scene.Scene`) as its tensor diagram; ``options``
    go to :func:`tnviz.render.to_dot` (highlights, fading)."""
    dot = to_dot(net_or_scene, **options)
    markup = svg_markup(dot)
    if markup is None:
        import graphviz

        st.graphviz_chart(graphviz.Source(dot, engine=ENGINE), alt=alt)
        return
    st.markdown(
        f'<div class="tn-diagram" data-dot="{dot_digest(dot)}" role="img" aria-label="{html.escape(alt)}">'
        f"{markup}</div>",
        unsafe_allow_html=True,
    )


def notation_pictures() -> dict[str, Any]:
    """The Teach page's notation pictures (paper Fig. 2), as drawn there: a matrix with its legs
    highlighted, a bond, the contracted result and a hyperedge.  Fixed, so
    :func:`tnviz_app.serve.warm` lays them out before the server starts."""
    from tnviz.gallery import fig2_delta, fig2_matrix, fig2_matrix_product
    from tnviz.network import TensorNetwork
    from tnviz.render import build_scene

    def emphasis(net: TensorNetwork, indices: list[str]) -> Any:  # highlighted, nothing faded
        return build_scene(net, highlight_indices=indices, fade_others=False)

    return {
        "leg": emphasis(fig2_matrix(), ["i", "j"]),
        "bond": emphasis(fig2_matrix_product(), ["k"]),
        "contraction": TensorNetwork.build([("c", ["i", "j"])], {"i": 4, "j": 5}, ["j"], ["i"], "c = ab"),
        "hyperedge": emphasis(fig2_delta(), ["r"]),
    }
