"""Graphviz backend: a :class:`~tnviz.render.scene.Scene` as DOT text, SVG or PNG.

Positions are pinned (``pos="x,y!"``) and laid out by the ``neato`` engine, so a diagram keeps
its shape when sizes change.  The DOT text needs nothing installed; :func:`to_svg` /
:func:`to_png` (and :func:`render_dot`, which the app's diagrams use) need the ``graphviz``
Python package and its ``neato`` program.  For ``st.graphviz_chart`` pass :func:`to_source` (a
``graphviz.Source`` carrying the engine): a bare DOT string would be laid out by ``dot`` and lose
the positions.

>>> from tnviz.builders import mpo
>>> text = to_dot(mpo([4, 4], [4, 4], ranks=3))
>>> text.startswith("graph") and 'pos="0.75,0.0!"' in text
True
"""
from __future__ import annotations

from typing import Any, Iterable

from ..errors import TnvizError
from ..network import TensorNetwork
from .scene import PALETTE, TENSOR_SIZE, Scene, build_scene

#: The graphviz engine that honours pinned positions.
ENGINE = "neato"

FONT = "Helvetica"


def quote(text: str) -> str:
    """A DOT double-quoted string (escapes backslashes, quotes and newlines)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _attrs(**attrs: Any) -> str:
    parts = []
    for key, value in attrs.items():
        if value is None or value == "":
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        parts.append(f"{key}={quote(str(value))}")
    return "[" + ", ".join(parts) + "]"


def _scene_of(net_or_scene: "TensorNetwork | Scene", **scene_options: Any) -> Scene:
    if isinstance(net_or_scene, Scene):
        return net_or_scene
    if isinstance(net_or_scene, TensorNetwork):
        return build_scene(net_or_scene, **scene_options)
    raise TnvizError(f"a diagram is drawn from a TensorNetwork or a Scene; got {type(net_or_scene).__name__}")


def to_dot(
    net_or_scene: "TensorNetwork | Scene",
    *,
    title: bool = False,
    highlight_tensors: Iterable[str] = (),
    highlight_indices: Iterable[str] = (),
    dpi: int | None = None,
) -> str:
    """DOT text of a network (or a prepared scene) with pinned positions for ``neato``.

    ``dpi`` sets the resolution of bitmap output (PNG); Graphviz's default is 96.

    ``title`` puts the network name above the drawing.  Highlight options are passed to
    :func:`~tnviz.render.scene.build_scene` when a network is given.
    """
    scene = _scene_of(net_or_scene, highlight_tensors=highlight_tensors, highlight_indices=highlight_indices)
    lines = [
        "graph tnviz {",
        "  graph " + _attrs(
            layout=ENGINE, splines="false", overlap="true", forcelabels="true", outputorder="edgesfirst", bgcolor="white",
            pad="0.25", fontname=FONT, label=scene.title if title else None, labelloc="t" if title else None,
            fontsize="14", dpi=dpi,
        ) + ";",
        "  node " + _attrs(fontname=FONT, fontsize="12", fontcolor=PALETTE["text"]) + ";",
        "  edge " + _attrs(fontname=FONT, fontsize="10") + ";",
    ]
    for n in scene.nodes:
        pos = f"{n.x},{n.y}!"
        if n.kind == "tensor":
            attrs = _attrs(
                pos=pos, label=n.label, shape=n.shape, style="filled" if n.shape == "circle" else "filled,rounded",
                fillcolor=n.fill, color=n.border, penwidth="3" if n.highlighted else "1.6",
                width=TENSOR_SIZE, height=TENSOR_SIZE, fixedsize="true", tooltip=n.tooltip,
                fontcolor=PALETTE["faded"] if n.faded else None, id=n.id, **{"class": "tensor"},
            )
        elif n.kind == "delta":
            attrs = _attrs(
                pos=pos, shape="point", width="0.12", color=n.border, fillcolor=n.fill, style="filled",
                xlabel=n.label, fontcolor=n.border if n.highlighted else PALETTE["bond"], fontsize="10",
                tooltip=n.tooltip, id=n.id, **{"class": "delta"},
            )
        else:  # the free end of an open leg: its label, tight so the leg reaches the text
            attrs = _attrs(
                pos=pos, shape="plaintext", label=n.label, width="0", height="0", margin="0.02",
                fontsize="11", fontcolor=PALETTE["faded"] if n.faded else PALETTE["highlight"] if n.highlighted
                else PALETTE["leg"], tooltip=n.tooltip, id=n.id, **{"class": "leg"},
            )
        lines.append(f"  {quote(n.id)} {attrs};")
    for e in scene.edges:
        # an arc (parallel bonds) is a polyline through invisible pinned bend points
        stops = [e.source] + [f"via:{e.index}:{k}" for k in range(len(e.via))] + [e.target]
        for stop, (vx, vy) in zip(stops[1:-1], e.via):
            lines.append(f"  {quote(stop)} " + _attrs(
                pos=f"{vx},{vy}!", shape="point", width="0.01", height="0.01", style="invis", label="",
            ) + ";")
        for k, (u, v) in enumerate(zip(stops, stops[1:])):
            attrs = _attrs(
                penwidth=e.width, color=e.color, style=e.style,
                tooltip=f"{e.index} = {e.size} ({e.kind})",
                id=f"e:{e.kind}:{e.index}:{e.source}" + (f":{k}" if k else ""), **{"class": e.kind},
                tailclip="false" if k else None, headclip="false" if k < len(stops) - 2 else None,
            )
            lines.append(f"  {quote(u)} -- {quote(v)} {attrs};")
        if e.label_pos is not None:  # the label as a pinned text node, so no engine moves it
            lx, ly = e.label_pos
            lines.append(f"  {quote('lbl:' + e.index)} " + _attrs(
                pos=f"{lx},{ly}!", shape="plaintext", label=e.label, width="0", height="0", margin="0.01",
                fontsize="10", fontcolor=e.color, id=f"lbl:{e.index}", **{"class": "bond-label"},
                style="filled" if e.label_boxed else None, fillcolor="white" if e.label_boxed else None,
            ) + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_source(net_or_scene: "TensorNetwork | Scene", **options: Any):
    """A ``graphviz.Source`` with the ``neato`` engine (what ``st.graphviz_chart`` should get)."""
    import graphviz

    return graphviz.Source(to_dot(net_or_scene, **options), engine=ENGINE)


def render_dot(text: str, fmt: str = "svg") -> bytes:
    """DOT text (of :func:`to_dot`) laid out by ``neato`` as ``fmt`` (``"svg"``, ``"png"``)."""
    import graphviz

    try:
        return graphviz.Source(text, engine=ENGINE).pipe(format=fmt, quiet=True)  # no layout warnings on stderr
    except graphviz.ExecutableNotFound:
        raise TnvizError(
            f"rendering {fmt.upper()} needs the Graphviz program {ENGINE!r} on PATH; it was not found "
            "(install Graphviz, e.g. `apt-get install graphviz`)"
        ) from None


def to_svg(net_or_scene: "TensorNetwork | Scene", **options: Any) -> str:
    """The diagram as SVG text (rendered locally by Graphviz's ``neato``)."""
    return render_dot(to_dot(net_or_scene, **options), "svg").decode("utf-8")


def to_png(net_or_scene: "TensorNetwork | Scene", **options: Any) -> bytes:
    """The diagram as PNG bytes (rendered locally by Graphviz's ``neato``)."""
    return render_dot(to_dot(net_or_scene, **options), "png")
