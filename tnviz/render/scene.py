"""A backend-neutral drawing of a network in Penrose (graphical) notation.

:func:`build_scene` turns a :class:`~tnviz.network.TensorNetwork` into plain data: tensors as
shapes at fixed positions, bonds (red, as in the paper), open legs dangling and labelled with
their name and size, hyperedges drawn through a small delta dot, edge widths growing with
``log2(size)``.  Backends (:mod:`tnviz.render.dot`, plotly) only translate this data.

Positions come from the network's ``layout`` when it places every tensor (``y`` grows upward,
any unit: the scene rescales so that the closest two tensors sit :data:`TENSOR_SPACING` apart);
otherwise from the core's deterministic layout (:mod:`tnviz.layout`) chosen by the network's
shape: a chain (MPO), a ring (tensor ring), a star (Tucker: core in the middle), a star around
the delta (CP), or for any other network a stress layout.
Several bonds between the same two tensors are drawn as separate arcs, each with its label on
its own arc, and a bond that would run through another tensor bends around it; a fan of three or more open legs alternates short and long legs so that the labels
at their ends do not overlap.

>>> from tnviz.builders import mpo
>>> scene = build_scene(mpo([4, 4], [4, 4], ranks=3))
>>> [(e.index, e.kind, e.label) for e in scene.edges if e.kind == "bond"]
[('b1', 'bond', 'b1=3')]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..layout import LAYOUT_SHAPES, auto_layout, network_shape, stress_layout  # noqa: F401 (re-exported)
from ..network import TensorNetwork

#: Colours shared by every backend.  Bonds are red as in the paper's figures.
PALETTE: dict[str, str] = {
    "bond": "#d62728",
    "leg": "#222222",
    "tensor_fill": "#dbe9f6",
    "tensor_border": "#1f4e79",
    "core_fill": "#c6dbef",
    "delta": "#000000",
    "highlight": "#f59e0b",
    "highlight_fill": "#fde68a",
    "faded": "#c8c8c8",
    "faded_fill": "#f3f4f6",
    "text": "#111111",
}

#: Distance (in inches, the unit of graphviz positions) between the two closest tensors.
TENSOR_SPACING = 1.5
#: Length of a dangling open leg, in the same unit.
LEG_LENGTH = 0.85
#: Diameter of a tensor shape.
TENSOR_SIZE = 0.5
#: In a fan of three or more open legs every second leg is this much longer (labels alternate).
LEG_STAGGER = 1.5
#: Distance between neighbouring arcs of parallel bonds (two tensors sharing several bonds).
PARALLEL_GAP = 0.45



def edge_width(size: int) -> float:
    """Line width for an index of ``size``: ``1 + 0.6·log2(size)``, capped at 9.

    >>> edge_width(1), edge_width(16)
    (1.0, 3.4)
    """
    return round(min(9.0, 1.0 + 0.6 * math.log2(max(1, size))), 3)


@dataclass(frozen=True)
class Node:
    """A drawn node: a tensor, a hyperedge's delta dot, or the free end of an open leg."""

    id: str
    kind: str  # "tensor" | "delta" | "leg"
    label: str
    x: float
    y: float
    shape: str  # "circle" | "box" (tensors), "point" (delta), "none" (leg end: text only)
    fill: str = ""
    border: str = ""
    tooltip: str = ""
    highlighted: bool = False
    faded: bool = False


@dataclass(frozen=True)
class Edge:
    """A drawn line: part of a bond, of a hyperedge (tensor -> delta) or an open leg."""

    index: str
    kind: str  # "bond" | "hyperedge" | "input" | "output"
    source: str  # node ids
    target: str
    size: int
    label: str
    width: float
    color: str
    style: str = "solid"  # "dashed" for size-1 indices (no correlation, paper Fig. 3 iii)
    highlighted: bool = False
    faded: bool = False
    label_pos: tuple[float, float] | None = None  # where a bond's label goes (beside the line)
    via: tuple[tuple[float, float], ...] = ()  # bend points of an arc (parallel bonds), source to target
    label_boxed: bool = False  # the label sits on its line (parallel bonds): backends give it a white box

    def points(self, scene: "Scene") -> list[tuple[float, float]]:
        """The drawn polyline: source, bend points, target."""
        a, b = scene.node(self.source), scene.node(self.target)
        return [(a.x, a.y), *self.via, (b.x, b.y)]


@dataclass(frozen=True)
class Scene:
    """Everything a backend needs to draw a network; positions in inches, y upward."""

    title: str
    shape: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    highlight_tensors: frozenset[str] = field(default_factory=frozenset)
    highlight_indices: frozenset[str] = field(default_factory=frozenset)

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def edges_of(self, index: str) -> tuple[Edge, ...]:
        """The drawn lines of one index (one for a bond or leg, one per tensor for a hyperedge)."""
        return tuple(e for e in self.edges if e.index == index)

    @property
    def tensor_nodes(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.kind == "tensor")

    def bounds(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` over all nodes."""
        xs = [n.x for n in self.nodes]
        ys = [n.y for n in self.nodes]
        return min(xs), min(ys), max(xs), max(ys)


def tensor_id(name: str) -> str:
    return f"t:{name}"


def delta_id(index: str) -> str:
    return f"d:{index}"


def leg_id(index: str) -> str:
    return f"l:{index}"


# ---------------------------------------------------------------------- positions
def positions(net: TensorNetwork) -> dict[str, tuple[float, float]]:
    """Tensor positions in inches: the network's layout when complete, else :func:`auto_layout`,
    scaled so that the closest two tensors are :data:`TENSOR_SPACING` apart and centred on 0."""
    layout = net.layout
    raw = layout if layout and all(n in layout for n in net.tensor_names) else auto_layout(net)
    pts = {n: (float(raw[n][0]), float(raw[n][1])) for n in net.tensor_names}
    names = list(pts)
    closest = min(
        (math.dist(pts[a], pts[b]) for k, a in enumerate(names) for b in names[k + 1:]),
        default=0.0,
    )
    scale = TENSOR_SPACING / closest if closest > 1e-9 else 1.0
    cx = sum(p[0] for p in pts.values()) / len(pts)
    cy = sum(p[1] for p in pts.values()) / len(pts)
    return {n: (round((x - cx) * scale, 4), round((y - cy) * scale, 4)) for n, (x, y) in pts.items()}


def _unit(dx: float, dy: float) -> tuple[float, float]:
    norm = math.hypot(dx, dy)
    return (dx / norm, dy / norm) if norm > 1e-9 else (0.0, 1.0)


def _fan(direction: tuple[float, float], count: int, spread_deg: float) -> list[tuple[float, float]]:
    """``count`` unit vectors fanned counter-clockwise-first around ``direction``."""
    if count == 1:
        return [direction]
    base = math.atan2(direction[1], direction[0])
    total = math.radians(min(spread_deg * (count - 1), 150.0))
    return [
        (math.cos(base + total / 2 - total * k / (count - 1)), math.sin(base + total / 2 - total * k / (count - 1)))
        for k in range(count)
    ]


def _widest_gap(directions: list[tuple[float, float]]) -> tuple[tuple[float, float], float]:
    """The bisector of the widest angle between the given directions (bonds leaving a tensor),
    and that angle in degrees: where open legs have the most room."""
    angles = sorted(math.atan2(dy, dx) for dx, dy in directions if math.hypot(dx, dy) > 1e-9)
    if not angles:
        return (0.0, 1.0), 360.0
    gaps = [(angles[(k + 1) % len(angles)] - a) % (2 * math.pi) or 2 * math.pi for k, a in enumerate(angles)]
    k = max(range(len(gaps)), key=lambda j: (round(gaps[j], 9), -j))
    mid = angles[k] + gaps[k] / 2
    return (math.cos(mid), math.sin(mid)), math.degrees(gaps[k])


def _staggered(legs: list[str]) -> dict[str, float]:
    """Leg lengths of one fan: in a fan of three or more, every second leg is longer."""
    if len(legs) < 3:
        return {leg: LEG_LENGTH for leg in legs}
    return {leg: LEG_LENGTH * (LEG_STAGGER if k % 2 else 1.0) for k, leg in enumerate(legs)}


def _leg_directions(
    net: TensorNetwork, pos: Mapping[str, tuple[float, float]], shape: str
) -> dict[str, tuple[tuple[float, float], float]]:
    """Direction and length of each open leg from its tensor.

    On a horizontal line (chain, single tensor) outputs point up and inputs down, as in the
    paper's MPO figures; otherwise legs point away from the centre of the drawing, outputs
    fanned before inputs.  In a fan of three or more legs, lengths alternate (:func:`_staggered`).
    """
    inputs = set(net.inputs)
    ys = [p[1] for p in pos.values()]
    flat = shape in ("single", "chain") or max(ys) - min(ys) < 1e-6
    cx = sum(p[0] for p in pos.values()) / len(pos)
    cy = sum(p[1] for p in pos.values()) / len(pos)
    neighbours: dict[str, list[str]] = {n: [] for n in net.tensor_names}
    for index in net.internal_indices:
        owners = net.tensors_on(index)
        for a in owners:
            neighbours[a].extend(o for o in owners if o != a and o not in neighbours[a])
    out: dict[str, tuple[tuple[float, float], float]] = {}
    for t in net.tensors:
        legs = [i for i in t.indices if net.index_counts[i] == 1]
        if not legs:
            continue
        outs = [i for i in legs if i not in inputs]
        ins = [i for i in legs if i in inputs]
        x, y = pos[t.name]
        radial = _unit(x - cx, y - cy)
        if flat or math.hypot(x - cx, y - cy) < 1e-6:
            fans = [(outs, _fan((0.0, 1.0), len(outs), 28.0)), (ins, _fan((0.0, -1.0), len(ins), 28.0)[::-1])]
        elif shape == "general" and neighbours.get(t.name):
            gap_dir, gap = _widest_gap([(pos[m][0] - x, pos[m][1] - y) for m in neighbours[t.name]])
            fans = [(outs + ins, _fan(gap_dir, len(legs), min(32.0, 0.7 * gap / max(1, len(legs) - 1))))]
        else:
            fans = [(outs + ins, _fan(radial, len(legs), 32.0))]
        for group, dirs in fans:
            lengths = _staggered(group)
            out.update({leg: (u, lengths[leg]) for leg, u in zip(group, dirs)})
    return out


def _label_position(
    a: tuple[float, float], b: tuple[float, float], pos: Mapping[str, tuple[float, float]]
) -> tuple[float, float]:
    """Beside the middle of the line a-b, on the side away from the drawing's centre (above a
    horizontal line, left of a vertical one when the line runs through the centre)."""
    mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
    nx, ny = _unit(-(b[1] - a[1]), b[0] - a[0])
    cx = sum(p[0] for p in pos.values()) / len(pos)
    cy = sum(p[1] for p in pos.values()) / len(pos)
    side = (mx - cx) * nx + (my - cy) * ny
    if abs(side) < 1e-6:
        side = ny if abs(ny) > 1e-6 else -nx  # up, else left
    if side < 0:
        nx, ny = -nx, -ny
    offset = 0.14 + 0.12 * abs(nx)  # labels are wider than tall: more room beside a steep line
    return round(mx + nx * offset, 4), round(my + ny * offset, 4)


#: A straight bond passing closer than this to another tensor's centre is bent around it.
CLEARANCE = 0.42


def _detour(
    a: tuple[float, float], b: tuple[float, float], others: list[tuple[float, float]],
    pos: Mapping[str, tuple[float, float]],
) -> float:
    """The arc offset (see :func:`_arc`) that keeps the bond a-b :data:`CLEARANCE` away from
    the tensors at ``others`` it would otherwise cross, or 0 when the straight line is clear.
    The arc bends away from the obstacles (away from the drawing's centre when they sit on
    the line), capped at twice the tensor spacing."""
    length = math.dist(a, b)
    if length < 1e-9:
        return 0.0
    ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
    nx, ny = -uy, ux
    hits = []
    for p in others:
        t = ((p[0] - a[0]) * ux + (p[1] - a[1]) * uy) / length
        side = (p[0] - a[0]) * nx + (p[1] - a[1]) * ny
        if 0.05 < t < 0.95 and abs(side) < CLEARANCE:
            hits.append((t, side))
    if not hits:
        return 0.0
    lean = sum(side for _, side in hits)
    if abs(lean) > 1e-6:
        sign = -1.0 if lean > 0 else 1.0
    else:  # on the line: bend away from the centre of the drawing
        cx = sum(p[0] for p in pos.values()) / len(pos)
        cy = sum(p[1] for p in pos.values()) / len(pos)
        mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
        outward = (mx - cx) * nx + (my - cy) * ny
        sign = 1.0 if outward > 1e-6 else -1.0 if outward < -1e-6 else (1.0 if ny >= 0 else -1.0)
    need = max((CLEARANCE + sign * side + 0.08) / (4 * t * (1 - t)) for t, side in hits)
    return sign * min(need, 2 * TENSOR_SPACING)


def _arc(
    a: tuple[float, float], b: tuple[float, float], offset: float
) -> tuple[tuple[tuple[float, float], ...], tuple[float, float]]:
    """Bend points of an arc from ``a`` to ``b`` whose middle lies ``offset`` beside the straight
    line (left of a->b for positive offsets), and the arc's middle (where its label goes).
    A zero offset is the straight line itself."""
    nx, ny = _unit(-(b[1] - a[1]), b[0] - a[0])
    mid = (round((a[0] + b[0]) / 2 + nx * offset, 4), round((a[1] + b[1]) / 2 + ny * offset, 4))
    if abs(offset) < 1e-9:
        return (), mid
    via = []
    for t in (0.2, 0.35, 0.5, 0.65, 0.8):  # a parabola through these points: a smooth-looking arc
        bend = offset * 4 * t * (1 - t)
        via.append((round(a[0] + (b[0] - a[0]) * t + nx * bend, 4), round(a[1] + (b[1] - a[1]) * t + ny * bend, 4)))
    return tuple(via), mid


# ---------------------------------------------------------------------- the scene
def build_scene(
    net: TensorNetwork,
    *,
    highlight_tensors: Iterable[str] = (),
    highlight_indices: Iterable[str] = (),
    fade_others: bool = True,
) -> Scene:
    """The drawing of ``net``.

    ``highlight_tensors`` / ``highlight_indices`` mark tensors and indices to emphasise (the
    current pair of a contraction step, a bond under study); with ``fade_others`` everything
    else is drawn in grey.  Unknown names are ignored, so a stale selection cannot break a page.
    """
    hl_t = frozenset(highlight_tensors) & set(net.tensor_names)
    hl_i = frozenset(highlight_indices) & set(net.index_counts)
    any_hl = bool(hl_t or hl_i)
    shape = network_shape(net)
    pos = positions(net)
    sizes = net.sizes
    counts = net.index_counts
    inputs = set(net.inputs)

    nodes: list[Node] = []
    for t in net.tensors:
        x, y = pos[t.name]
        shape_t = "box" if all(counts[i] >= 2 for i in t.indices) and len(t.indices) > 2 else "circle"
        dims = "x".join(str(sizes[i]) for i in t.indices)
        hl = t.name in hl_t
        faded = any_hl and fade_others and not hl
        nodes.append(Node(
            id=tensor_id(t.name), kind="tensor", label=t.name, x=x, y=y, shape=shape_t,
            fill=PALETTE["highlight_fill"] if hl else PALETTE["faded_fill"] if faded
            else PALETTE["core_fill"] if shape_t == "box" else PALETTE["tensor_fill"],
            border=PALETTE["highlight"] if hl else PALETTE["faded"] if faded else PALETTE["tensor_border"],
            tooltip=f"{t.name}[{', '.join(t.indices)}]  shape {dims}  ({math.prod(sizes[i] for i in t.indices):,} params)",
            highlighted=hl, faded=faded,
        ))

    edges: list[Edge] = []

    def style_of(index: str, base_color: str) -> tuple[str, bool, bool]:
        hl = index in hl_i
        faded = any_hl and fade_others and not hl
        return (PALETTE["highlight"] if hl else PALETTE["faded"] if faded else base_color), hl, faded

    parallel: dict[frozenset[str], list[str]] = {}
    for index in net.bonds:
        parallel.setdefault(frozenset(net.tensors_on(index)), []).append(index)
    for index in net.bonds:
        a, b = net.tensors_on(index)
        color, hl, faded = style_of(index, PALETTE["bond"])
        group = parallel[frozenset((a, b))]
        if len(group) == 1:
            bend = _detour(pos[a], pos[b], [p for n, p in pos.items() if n not in (a, b)], pos)
            if bend:  # the straight line would run through another tensor: go around it
                via, label_pos = _arc(pos[a], pos[b], bend)
                boxed = True
            else:
                via, label_pos, boxed = (), _label_position(pos[a], pos[b], pos), False
        else:
            via, label_pos = _arc(pos[a], pos[b], (group.index(index) - (len(group) - 1) / 2) * PARALLEL_GAP)
            boxed = True
        edges.append(Edge(
            index=index, kind="bond", source=tensor_id(a), target=tensor_id(b), size=sizes[index],
            label=f"{index}={sizes[index]}", width=edge_width(sizes[index]), color=color,
            style="dashed" if sizes[index] == 1 else "solid", highlighted=hl, faded=faded,
            label_pos=label_pos, via=via, label_boxed=boxed,
        ))

    for index in net.hyperedges:
        owners = net.tensors_on(index)
        dx = sum(pos[o][0] for o in owners) / len(owners)
        dy = sum(pos[o][1] for o in owners) / len(owners)
        if any(math.dist((dx, dy), pos[o]) < 0.3 for o in owners):
            dy -= 0.6  # keep the dot off a tensor that happens to sit on the centroid
        color, hl, faded = style_of(index, PALETTE["bond"])
        nodes.append(Node(
            id=delta_id(index), kind="delta", label=f"{index}={sizes[index]}", x=round(dx, 4), y=round(dy, 4),
            shape="point", fill=color if any_hl else PALETTE["delta"], border=color if any_hl else PALETTE["delta"],
            tooltip=f"hyperedge {index} (size {sizes[index]}) shared by {', '.join(owners)}: the delta tensor",
            highlighted=hl, faded=faded,
        ))
        for o in owners:
            edges.append(Edge(
                index=index, kind="hyperedge", source=tensor_id(o), target=delta_id(index), size=sizes[index],
                label="", width=edge_width(sizes[index]), color=color,
                style="dashed" if sizes[index] == 1 else "solid", highlighted=hl, faded=faded,
            ))

    directions = _leg_directions(net, pos, shape)
    for t in net.tensors:
        for index in t.indices:
            if counts[index] != 1:
                continue
            (ux, uy), length = directions[index]
            x, y = pos[t.name]
            lx, ly = round(x + ux * length, 4), round(y + uy * length, 4)
            role = "input" if index in inputs else "output"
            color, hl, faded = style_of(index, PALETTE["leg"])
            label = f"{index}={sizes[index]}"
            nodes.append(Node(
                id=leg_id(index), kind="leg", label=label, x=lx, y=ly, shape="none",
                tooltip=f"open {role} leg {index} of {t.name}, size {sizes[index]}",
                highlighted=hl, faded=faded,
            ))
            edges.append(Edge(
                index=index, kind=role, source=tensor_id(t.name), target=leg_id(index), size=sizes[index],
                label=label, width=edge_width(sizes[index]), color=color,
                style="dashed" if sizes[index] == 1 else "solid", highlighted=hl, faded=faded,
            ))

    return Scene(
        title=net.name, shape=shape, nodes=tuple(nodes), edges=tuple(edges),
        highlight_tensors=hl_t, highlight_indices=hl_i,
    )
