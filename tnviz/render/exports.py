"""Every export format of a layer: the text formats of :mod:`tnviz.export` and the diagram as
SVG, PNG (at print resolution) and DOT.  ``EXPORTS`` is the registry the app's download buttons
and the tests share.

>>> from tnviz.builders import mpo
>>> sorted(EXPORTS)
['dot', 'einsum', 'json', 'png', 'svg', 'torch']
>>> export_filename(mpo([4, 4], [4, 4], ranks=2).with_name("MPO 16x16"), "png")
'MPO_16x16.png'
"""
from __future__ import annotations

from typing import Any

from .. import export as text_exports
from ..export import Export
from ..network import TensorNetwork
from .dot import to_dot, to_png, to_svg

#: PNG resolution: print quality (Graphviz's default of 96 dpi gave 384x231 px for an MPO).
PNG_DPI = 300


def diagram_svg(net: TensorNetwork, **_: object) -> str:
    """The Penrose diagram as SVG text (Graphviz)."""
    return to_svg(net)


def diagram_png(net: TensorNetwork, *, dpi: int = PNG_DPI, **_: object) -> bytes:
    """The Penrose diagram as PNG bytes at ``dpi`` (Graphviz)."""
    return to_png(net, dpi=dpi)


def diagram_dot(net: TensorNetwork, **_: object) -> str:
    """The diagram's DOT text (pinned positions; render it with ``neato``)."""
    return to_dot(net)


#: Every export format by name.
EXPORTS: dict[str, Export] = {
    **text_exports.EXPORTS,
    "svg": Export("Diagram SVG", "svg", "image/svg+xml", diagram_svg),
    "png": Export(f"Diagram PNG ({PNG_DPI} dpi)", "png", "image/png", diagram_png),
    "dot": Export("Diagram DOT", "dot", "text/vnd.graphviz", diagram_dot),
}


def export(net: TensorNetwork, fmt: str, *, batch: int = 1, optimize: str = text_exports.DEFAULT_OPTIMIZER,
           **options: Any) -> "str | bytes":
    """``net`` in the export format ``fmt`` (a key of :data:`EXPORTS`)."""
    return text_exports.export(net, fmt, batch=batch, optimize=optimize, registry=EXPORTS, **options)


def export_filename(net: TensorNetwork, fmt: str) -> str:
    """A file name for the export, named after the network (see :func:`tnviz.export.export_filename`)."""
    return text_exports.export_filename(net, fmt, registry=EXPORTS)
