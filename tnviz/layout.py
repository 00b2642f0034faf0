"""Where the tensors of a network go when nobody placed them: a deterministic layout chosen by
the network's shape (a chain for an MPO, a ring, a star for Tucker, a circle around the CP delta,
a stress layout for anything else), in units of one tensor spacing, ``y`` up.

Core, so every face places tensors alike: the diagrams (:mod:`tnviz.render.scene`), the canvas
(:func:`canvas_layout`), the Teach page's drawings (:mod:`tnviz.teach`).

>>> from tnviz.builders import mpo
>>> net = mpo([4, 4, 4], [4, 4, 4], ranks=2)
>>> network_shape(net), auto_layout(net.with_layout(None))["B"]
('chain', (1.0, 0.0))
"""
from __future__ import annotations

import math
from typing import Mapping

from .network import TensorNetwork

LAYOUT_SHAPES = ("single", "chain", "ring", "star", "hyperstar", "general")

#: Layout units between neighbouring tensors on the canvas when a network comes without positions.
CANVAS_SPACING = 2.0


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




def canvas_layout(net: TensorNetwork, spacing: float = CANVAS_SPACING) -> dict[str, tuple[float, float]]:
    """Positions for every tensor on the canvas: the network's own layout where it has one; a
    network with no positions at all gets :func:`auto_layout` at ``spacing``; tensors missing
    from a partial layout go in a row (wrapping every 6 tensors) below the positioned ones."""
    layout = net.layout
    missing = [t.name for t in net.tensors if t.name not in layout]
    if missing and not layout:
        return {name: (round(x * spacing, 4), round(y * spacing, 4)) for name, (x, y) in auto_layout(net).items()}
    if missing:
        top = min((y for _, y in layout.values()), default=spacing) - spacing
        for k, name in enumerate(missing):
            layout[name] = (spacing * (k % 6), top - spacing * (k // 6))
    return {t.name: layout[t.name] for t in net.tensors}
