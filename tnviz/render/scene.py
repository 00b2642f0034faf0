"""A backend-neutral drawing of a network in Penrose (graphical) notation.

:func:`build_scene` turns a :class:`~tnviz.network.TensorNetwork` into plain data: tensors as
shapes at fixed positions, bonds (red, as in the paper), open legs dangling and labelled with
their name and size, hyperedges drawn through a small delta dot, edge widths growing with
``log2(size)``.  Backends (:mod:`tnviz.render.dot`, plotly) only translate this data.

Positions come from the network's ``layout`` when it places every tensor (``y`` grows upward,
any unit: the scene rescales so that the closest two tensors sit :data:`TENSOR_SPACING` apart);
otherwise from a deterministic layout chosen by the network's shape: a chain (MPO), a ring
(tensor ring), a star (Tucker: core in the middle), a star around the delta (CP), or for any
other network a stress layout (tensors placed so that drawn distances follow bond distances).
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

LAYOUT_SHAPES = ("single", "chain", "ring", "star", "hyperstar", "general")


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


# ---------------------------------------------------------------------- shapes and layouts
def _bond_neighbours(net: TensorNetwork) -> dict[str, list[str]]:
    """Tensor adjacency through bonds (indices shared by exactly two tensors), in network order."""
    adj: dict[str, list[str]] = {n: [] for n in net.tensor_names}
    for bond in net.bonds:
        a, b = net.tensors_on(bond)
        if b not in adj[a]:
            adj[a].append(b)
            adj[b].append(a)
    return adj


def _connected(adj: Mapping[str, list[str]]) -> bool:
    names = list(adj)
    seen, todo = {names[0]}, [names[0]]
    while todo:
        for m in adj[todo.pop()]:
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return len(seen) == len(names)


def network_shape(net: TensorNetwork) -> str:
    """The drawing shape of a network, one of :data:`LAYOUT_SHAPES`.

    ``hyperstar`` when it has a hyperedge (CP), ``chain`` / ``ring`` when the bonds form a path /
    a cycle (MPO / tensor ring), ``star`` when one tensor is bonded to three or more others and
    they only to it (Tucker; with two others it is a chain), ``single`` for one tensor, else
    ``general``.

    >>> from tnviz.builders import mpo
    >>> network_shape(mpo([4, 4, 4], [4, 4, 4], ranks=2))
    'chain'
    """
    names = net.tensor_names
    if len(names) == 1:
        return "single"
    if net.hyperedges:
        return "hyperstar"
    adj = _bond_neighbours(net)
    if not _connected(adj):
        return "general"
    degrees = [len(v) for v in adj.values()]
    n_links = sum(degrees) // 2
    if len(names) >= 4 and max(degrees) == len(names) - 1 and sorted(degrees)[-2] == 1:
        return "star"
    if max(degrees) <= 2 and n_links == len(names) - 1:
        return "chain"
    if all(d == 2 for d in degrees) and n_links == len(names):
        return "ring"
    return "general"


def _walk(adj: Mapping[str, list[str]], start: str) -> list[str]:
    order, prev, cur = [start], None, start
    while True:
        nxt = [m for m in adj[cur] if m != prev and m not in order]
        if not nxt:
            return order
        prev, cur = cur, nxt[0]
        order.append(cur)


def _circle(names: list[str], radius: float) -> dict[str, tuple[float, float]]:
    """Names on a circle, the first at the top, going clockwise."""
    n = len(names)
    return {
        name: (radius * math.cos(math.pi / 2 - 2 * math.pi * k / n), radius * math.sin(math.pi / 2 - 2 * math.pi * k / n))
        for k, name in enumerate(names)
    }


def auto_layout(net: TensorNetwork) -> dict[str, tuple[float, float]]:
    """A deterministic layout from the network's shape (unit: one tensor spacing)."""
    shape = network_shape(net)
    names = list(net.tensor_names)
    adj = _bond_neighbours(net)
    if shape == "single":
        return {names[0]: (0.0, 0.0)}
    if shape == "chain":
        ends = [n for n in names if len(adj[n]) <= 1]
        return {n: (float(k), 0.0) for k, n in enumerate(_walk(adj, ends[0]))}
    if shape == "ring":
        order = _walk(adj, names[0])
        return _circle(order, 1.0 / (2 * math.sin(math.pi / len(order))))
    if shape == "star":
        centre = max(names, key=lambda n: len(adj[n]))
        rest = [n for n in names if n != centre]
        pos = _circle(rest, max(1.0, 1.0 / (2 * math.sin(math.pi / len(rest)))))
        pos[centre] = (0.0, 0.0)
        return pos
    if shape == "general":
        return stress_layout(net)
    # hyperstar: a circle in network order (the delta dots go to the centroids)
    return _circle(names, max(1.0, 1.0 / (2 * math.sin(math.pi / len(names)))))


def _graph_distances(net: TensorNetwork) -> list[list[float]]:
    """Shortest-path distances between tensors through bonds and hyperedges (a hyperedge links
    all its tensors); tensors in different parts are put one step beyond the longest path."""
    names = list(net.tensor_names)
    where = {n: k for k, n in enumerate(names)}
    adj: list[set[int]] = [set() for _ in names]
    for index in net.internal_indices:
        owners = [where[t] for t in net.tensors_on(index)]
        for a in owners:
            adj[a].update(o for o in owners if o != a)
    inf = float("inf")
    dist = []
    for start in range(len(names)):
        row = [inf] * len(names)
        row[start], frontier = 0.0, [start]
        while frontier:
            nxt = []
            for a in frontier:
                for b in adj[a]:
                    if row[b] == inf:
                        row[b] = row[a] + 1.0
                        nxt.append(b)
            frontier = nxt
        dist.append(row)
    finite = [d for row in dist for d in row if d != inf]
    far = max(finite, default=0.0) + 1.0
    return [[far if d == inf else d for d in row] for row in dist]


def stress_layout(net: TensorNetwork, iterations: int = 300) -> dict[str, tuple[float, float]]:
    """A deterministic stress-majorization layout (SMACOF, started from a circle): drawn
    distances between tensors approximate their bond distances, so neighbours sit close and a
    grid or a tree keeps its shape.  Unit: one bond.

    >>> from tnviz.builders import from_einsum
    >>> pos = stress_layout(from_einsum("iab,jbc,kcd,lda,ac->ijkl", 2, inputs="ij"))
    >>> sorted(pos)
    ['A', 'B', 'C', 'D', 'E']
    """
    names = list(net.tensor_names)
    n = len(names)
    if n == 1:
        return {names[0]: (0.0, 0.0)}
    d = _graph_distances(net)
    start = _circle(names, max(1.0, 1.0 / (2 * math.sin(math.pi / n))))
    x = [list(start[name]) for name in names]
    # SMACOF with weights 1/d^2 (Gansner, Koren & North): x <- L_w^+ B(x) x, here by Gauss-Seidel
    # sweeps of the per-node update, which needs no linear solve and converges monotonically.
    w = [[0.0 if i == j else 1.0 / (d[i][j] ** 2) for j in range(n)] for i in range(n)]
    for _ in range(iterations):
        moved = 0.0
        for i in range(n):
            sx = sy = sw = 0.0
            for j in range(n):
                if i == j:
                    continue
                dx, dy = x[i][0] - x[j][0], x[i][1] - x[j][1]
                norm = math.hypot(dx, dy) or 1e-9
                sx += w[i][j] * (x[j][0] + d[i][j] * dx / norm)
                sy += w[i][j] * (x[j][1] + d[i][j] * dy / norm)
                sw += w[i][j]
            nx, ny = sx / sw, sy / sw
            moved = max(moved, abs(nx - x[i][0]) + abs(ny - x[i][1]))
            x[i] = [nx, ny]
        if moved < 1e-6:
            break
    return {name: (round(p[0], 6), round(p[1], 6)) for name, p in zip(names, x)}


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
