"""Diagrams and charts: the scene of every template, its DOT text, SVG rendering, plotly charts."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

import tnviz
from tnviz.render import PALETTE, build_scene, edge_width, network_shape, to_dot, to_svg
from tnviz.render.charts import flops_vs_batch, step_bars
from tnviz.render.dot import quote
from tnviz.render.scene import (
    LEG_LENGTH, LEG_STAGGER, TENSOR_SPACING, auto_layout, leg_id, positions, stress_layout, tensor_id,
)
from tnviz.testing import template_networks

NETWORKS = template_networks()
IDS = [name for name, _ in NETWORKS]
EXPECTED_SHAPE = {
    "MPO / tensor train": "chain",
    "Tensor ring": "ring",
    "Tucker": "star",
    "CP": "hyperstar",
    "MPO 3 in / 5 out (Fig. 1)": "chain",
    "Tucker conv kernel (Fig. 3 iv)": "star",
    "CP conv kernel (Fig. 3 v)": "hyperstar",
    "generic 2x2 grid": "ring",  # four tensors bonded in a cycle
}

has_neato = shutil.which("neato") is not None


def test_every_template_has_an_expected_shape():
    assert set(EXPECTED_SHAPE) >= set(IDS)
    assert set(tnviz.TEMPLATES) <= set(EXPECTED_SHAPE)


@pytest.mark.parametrize("name,net", NETWORKS, ids=IDS)
def test_scene_draws_every_tensor_index_and_leg(name, net):
    scene = build_scene(net)
    assert scene.shape == EXPECTED_SHAPE[name]
    assert {n.label for n in scene.tensor_nodes} == set(net.tensor_names)
    sizes = net.sizes
    # bonds: one red line between their two tensors, labelled with name and size
    for bond in net.bonds:
        (edge,) = scene.edges_of(bond)
        assert edge.kind == "bond" and edge.color == PALETTE["bond"]
        assert {edge.source, edge.target} == {tensor_id(t) for t in net.tensors_on(bond)}
        assert edge.label == f"{bond}={sizes[bond]}"
    # hyperedges: one red line from each tensor to a delta dot
    for hyper in net.hyperedges:
        lines = scene.edges_of(hyper)
        assert len(lines) == len(net.tensors_on(hyper)) >= 3
        assert {e.source for e in lines} == {tensor_id(t) for t in net.tensors_on(hyper)}
        assert {e.target for e in lines} == {f"d:{hyper}"}
        assert all(e.color == PALETTE["bond"] for e in lines)
        dot = scene.node(f"d:{hyper}")
        assert dot.kind == "delta" and dot.shape == "point" and str(sizes[hyper]) in dot.label
    # open legs: dangling (to a label-only node), labelled with name and size, marked input/output
    for index in net.open_indices:
        (edge,) = scene.edges_of(index)
        assert edge.kind == ("input" if index in net.inputs else "output")
        assert edge.color == PALETTE["leg"]
        end = scene.node(leg_id(index))
        assert end.kind == "leg" and end.label == f"{index}={sizes[index]}"
        owner = scene.node(edge.source)
        length = math.dist((owner.x, owner.y), (end.x, end.y))
        assert any(math.isclose(length, LEG_LENGTH * f, rel_tol=1e-3) for f in (1.0, LEG_STAGGER))
    # no drawn line for an index that is not in the network, and every index drawn
    assert {e.index for e in scene.edges} == set(net.index_counts)


@pytest.mark.parametrize("name,net", NETWORKS, ids=IDS)
def test_tensors_are_spread_out(name, net):
    pos = positions(net)
    pts = list(pos.values())
    closest = min(math.dist(a, b) for k, a in enumerate(pts) for b in pts[k + 1:])
    assert math.isclose(closest, TENSOR_SPACING, rel_tol=1e-3)


def test_widths_grow_with_log_size():
    assert edge_width(1) == 1.0
    widths = [edge_width(2**k) for k in range(0, 12)]
    assert widths == sorted(widths) and len(set(widths)) == len(widths)
    assert math.isclose(edge_width(16) - edge_width(4), edge_width(4) - edge_width(1))  # linear in log
    net = tnviz.mpo([2, 64], [2, 64], ranks=[16])
    scene = build_scene(net)
    (small,) = scene.edges_of("i1")
    (big,) = scene.edges_of("i2")
    (bond,) = scene.edges_of("b1")
    assert small.width < bond.width < big.width


def test_size_one_bond_is_dashed():
    scene = build_scene(tnviz.mpo([4, 4], [4, 4], ranks=1))
    (bond,) = scene.edges_of("b1")
    assert bond.style == "dashed"
    assert build_scene(tnviz.mpo([4, 4], [4, 4], ranks=2)).edges_of("b1")[0].style == "solid"


def test_chain_puts_outputs_up_and_inputs_down():
    net = tnviz.mpo([4, 4, 4], [2, 2, 2, 2, 4], ranks=3)
    scene = build_scene(net)
    for t in net.tensors:
        node = scene.node(tensor_id(t.name))
        for index in t.indices:
            if index in net.outputs:
                assert scene.node(leg_id(index)).y > node.y
            if index in net.inputs:
                assert scene.node(leg_id(index)).y < node.y
    xs = [scene.node(tensor_id(n)).x for n in net.tensor_names]
    assert xs == sorted(xs)


def test_star_and_ring_layouts_point_legs_outward():
    for net in (tnviz.tucker([8, 8], [8, 8], ranks=3), tnviz.tensor_ring([4, 4, 4], [4, 4, 4], ranks=2)):
        scene = build_scene(net)
        for index in net.open_indices:
            (edge,) = scene.edges_of(index)
            t, end = scene.node(edge.source), scene.node(edge.target)
            assert math.hypot(end.x, end.y) > math.hypot(t.x, t.y)  # farther from the centre


def test_layout_of_the_network_is_used_and_auto_layout_without_it():
    net = tnviz.mpo([4, 4], [4, 4], ranks=2)
    moved = net.__class__.build(net.tensors, net.sizes, net.inputs, net.outputs, net.name, {"A": [0, 0], "B": [0, 10]})
    scene = build_scene(moved)
    a, b = scene.node("t:A"), scene.node("t:B")
    assert math.isclose(a.x, b.x) and b.y - a.y == pytest.approx(TENSOR_SPACING)
    bare = net.__class__.build(net.tensors, net.sizes, net.inputs, net.outputs, net.name)
    assert bare.layout == {}
    assert auto_layout(bare) == {"A": (0.0, 0.0), "B": (1.0, 0.0)}
    assert build_scene(bare) == build_scene(bare)  # deterministic


def test_auto_layouts_for_each_shape():
    ring = tnviz.tensor_ring([2] * 5, [2] * 5, ranks=2)
    bare = ring.__class__.build(ring.tensors, ring.sizes, ring.inputs, ring.outputs)
    pts = list(auto_layout(bare).values())
    radii = [math.hypot(*p) for p in pts]
    assert max(radii) - min(radii) < 1e-9
    tucker = tnviz.tucker([4, 4], [4, 4], ranks=2)
    bare = tucker.__class__.build(tucker.tensors, tucker.sizes, tucker.inputs, tucker.outputs)
    assert network_shape(bare) == "star" and auto_layout(bare)["G"] == (0.0, 0.0)
    general = tnviz.from_einsum("iabe,jbc,kcde,lda->ijkl", 2, inputs="ij")
    assert network_shape(general) == "general"


def test_highlight_marks_and_fades():
    net = tnviz.mpo([4, 4, 4], [4, 4, 4], ranks=3)
    plain = build_scene(net)
    assert not any(n.highlighted or n.faded for n in plain.nodes)
    scene = build_scene(net, highlight_tensors={"A", "B", "nope"}, highlight_indices={"b1"})
    assert scene.highlight_tensors == {"A", "B"} and scene.highlight_indices == {"b1"}
    assert scene.node("t:A").highlighted and scene.node("t:B").highlighted
    assert scene.node("t:C").faded and not scene.node("t:C").highlighted
    (b1,) = scene.edges_of("b1")
    (b2,) = scene.edges_of("b2")
    assert b1.highlighted and b1.color == PALETTE["highlight"]
    assert b2.faded and b2.color == PALETTE["faded"]
    kept = build_scene(net, highlight_tensors={"A"}, fade_others=False)
    assert not kept.node("t:C").faded and kept.edges_of("b2")[0].color == PALETTE["bond"]


def test_dot_text_pins_positions_and_carries_labels():
    net = tnviz.cp([4, 4], [4, 4], rank=5)
    text = to_dot(net)
    assert text.startswith("graph tnviz {") and text.rstrip().endswith("}")
    assert 'layout="neato"' in text
    scene = build_scene(net)
    for node in scene.nodes:
        assert f'{quote(node.id)} [pos="{node.x},{node.y}!"' in text
    assert text.count(" -- ") == len(scene.edges)
    assert 'xlabel="r=5"' in text and 'label="i1=4"' in text
    assert to_dot(net, title=True).count(f'label="{net.name}"') == 1


def test_dot_quotes_odd_names():
    net = tnviz.TensorNetwork.build([('A "x"', ["i\\1", "o1"])], {"i\\1": 2, "o1": 3}, ["i\\1"], ["o1"])
    text = to_dot(net)
    assert '"t:A \\"x\\""' in text and '"l:i\\\\1"' in text


def test_dot_changes_with_sizes_but_positions_stay():
    a, b = tnviz.mpo([8, 8], [8, 8], ranks=4), tnviz.mpo([8, 8], [8, 8], ranks=16)
    da, db = to_dot(a), to_dot(b)
    assert da != db and "b1=16" in db and "b1=4" in da
    assert re.findall(r'pos="[^"]+"', da) == re.findall(r'pos="[^"]+"', db)


@pytest.mark.skipif(not has_neato, reason="Graphviz 'neato' is not installed")
@pytest.mark.parametrize("name,net", NETWORKS, ids=IDS)
def test_svg_renders_every_template(name, net):
    svg = to_svg(net, title=True)
    root = ET.fromstring(svg.encode())
    assert root.tag.endswith("svg")
    texts = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert set(net.tensor_names) <= texts
    assert {f"{i}={net.sizes[i]}" for i in net.open_indices} <= texts
    # red bond strokes present exactly when the network has bonds or hyperedges
    assert (PALETTE["bond"] in svg) == bool(net.internal_indices)


@pytest.mark.skipif(not has_neato, reason="Graphviz 'neato' is not installed")
def test_png_renders():
    from tnviz.render import to_png

    png = to_png(tnviz.mpo([4, 4], [4, 4], ranks=2))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_flops_chart_has_strategies_log_axes_and_crossover():
    net = tnviz.mpo([8, 8], [8, 8], ranks=64)
    sweep = tnviz.batch_sweep(net, optimize="left-to-right")
    assert sweep.crossovers  # this layer has one: the chart must mark it
    fig = flops_vs_batch(sweep, current_batch=64)
    assert [t.name.split()[0] for t in fig.data] == ["factorized", "rebuilt", "best", "dense"]
    assert list(fig.data[0].y) == list(sweep.factorized) and list(fig.data[1].y) == list(sweep.rebuilt)
    assert list(fig.data[2].y) == list(sweep.best) and list(fig.data[3].y) == list(sweep.dense)
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    xs = {shape.x0 for shape in fig.layout.shapes}
    assert {b for b, _ in sweep.crossovers} | {64} == xs
    assert any("crossover" in a.text for a in fig.layout.annotations)
    # annotations on a log axis are placed in log10 units (a raw batch would stretch the axis to 1e259)
    for batch, _ in sweep.crossovers:
        assert any(math.isclose(a.x, math.log10(batch)) for a in fig.layout.annotations)
    assert all(a.x <= math.log10(max(sweep.batches)) for a in fig.layout.annotations)
    no_cross = flops_vs_batch(tnviz.batch_sweep(net, [1, 2], optimize="auto"))
    assert not no_cross.layout.shapes


def test_step_bars_match_the_path():
    c = tnviz.cost(tnviz.mpo([8, 8, 8], [8, 8, 8], ranks=4), batch=32)
    fig = step_bars(c)
    assert list(fig.data[0].y) == [s.flops for s in c.steps]
    assert list(fig.data[1].y) == [s.size for s in c.steps]
    assert len(fig.data[0].x) == len(c.steps) and fig.data[0].x[0].startswith("1: ")
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type == "log"


def test_render_package_imports_without_plotly_graphviz_or_streamlit():
    code = (
        "import sys, tnviz.render, tnviz.render.charts, tnviz.render.dot\n"
        "from tnviz.builders import mpo\n"
        "tnviz.render.to_dot(mpo([2,2],[2,2],ranks=2))\n"
        "bad = [m for m in ('plotly', 'graphviz', 'streamlit') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name,net", NETWORKS, ids=IDS)
def test_bond_labels_sit_beside_their_line(name, net):
    scene = build_scene(net)
    for e in scene.edges:
        if e.kind != "bond":
            assert e.label_pos is None
            continue
        a, b = scene.node(e.source), scene.node(e.target)
        mid = ((a.x + b.x) / 2, (a.y + b.y) / 2)
        if e.via:  # an arc of parallel bonds: the label sits on the arc's middle, in a white box
            assert e.label_boxed and math.dist(e.via[len(e.via) // 2], e.label_pos) < 1e-3
        else:
            assert 0.1 < math.dist(mid, e.label_pos) < 0.4
        assert f'pos="{e.label_pos[0]},{e.label_pos[1]}!"' in to_dot(scene)


def _random_network(seed: int) -> tnviz.TensorNetwork:
    """Any shape: hyperedges, disconnected parts, scalar tensors, multi-bonds, no inputs."""
    import random

    rng = random.Random(seed)
    n = rng.randint(1, 7)
    names = [f"T{k}" for k in range(n)]
    indices: dict[str, list[str]] = {t: [] for t in names}
    sizes: dict[str, int] = {}
    for k in range(rng.randint(0, 2 * n)):  # internal indices shared by 2..n tensors
        if n < 2:
            break
        owners = rng.sample(names, rng.randint(2, min(n, 4)))
        sizes[f"x{k}"] = rng.choice([1, 2, 3, 16])
        for t in owners:
            indices[t].append(f"x{k}")
    opens = []
    for k in range(rng.randint(0, 6)):
        t = rng.choice(names)
        indices[t].append(f"e{k}")
        sizes[f"e{k}"] = rng.randint(1, 9)
        opens.append(f"e{k}")
    split = rng.randint(0, len(opens))
    return tnviz.TensorNetwork.build([(t, indices[t]) for t in names], sizes, opens[:split], opens[split:])


@pytest.mark.parametrize("seed", range(60))
def test_any_network_draws(seed):
    net = _random_network(seed)
    scene = build_scene(net, highlight_tensors=net.tensor_names[:1], highlight_indices=list(net.index_counts)[:1])
    assert scene.shape in ("single", "chain", "ring", "star", "hyperstar", "general")
    assert {e.index for e in scene.edges} == set(net.index_counts)
    assert all(math.isfinite(n.x) and math.isfinite(n.y) for n in scene.nodes)
    assert len({n.id for n in scene.nodes}) == len(scene.nodes)
    text = to_dot(scene)
    assert text.count(" -- ") == sum(len(e.via) + 1 for e in scene.edges)  # arcs are polylines


@pytest.mark.skipif(not has_neato, reason="Graphviz 'neato' is not installed")
@pytest.mark.parametrize("seed", range(0, 60, 6))
def test_any_network_renders_to_svg(seed):
    root = ET.fromstring(to_svg(_random_network(seed)).encode())
    assert root.tag.endswith("svg")


@pytest.mark.parametrize("name,net", NETWORKS, ids=IDS)
def test_plotly_diagram_draws_the_same_scene(name, net):
    from tnviz.render.charts import diagram_figure

    scene = build_scene(net)
    fig = diagram_figure(net)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(lines) == len(scene.edges)
    for trace, edge in zip(lines, scene.edges):
        pts = edge.points(scene)
        assert list(trace.x) == [p[0] for p in pts] and list(trace.y) == [p[1] for p in pts]
        assert trace.line.width == edge.width and trace.line.color == edge.color
    (tensors,) = [t for t in fig.data if t.name == "tensors"]
    assert list(tensors.text) == list(net.tensor_names)
    (texts,) = [t for t in fig.data if t.mode == "text"] or [None]
    shown = set(texts.text) if texts is not None else set()
    assert {f"{i}={net.sizes[i]}" for i in net.open_indices} <= shown
    assert {f"{i}={net.sizes[i]}" for i in net.internal_indices} <= shown
    assert fig.layout.yaxis.scaleanchor == "x"  # the drawing keeps its proportions


def _segments(scene, edge):
    pts = edge.points(scene)
    return list(zip(pts, pts[1:]))


def _cross(p, q, r, s) -> bool:
    """Whether segments p-q and r-s cross at an inner point of both."""
    def orient(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    d1, d2, d3, d4 = orient(p, q, r), orient(p, q, s), orient(r, s, p), orient(r, s, q)
    return d1 * d2 < -1e-9 and d3 * d4 < -1e-9


@pytest.mark.parametrize("count", [2, 3])
def test_parallel_bonds_are_separate_arcs_with_separate_labels(count):
    # a 2-core tensor ring (two bonds A-B) and a pair of tensors sharing three bonds
    net = (tnviz.tensor_ring([4, 4], [4, 4], ranks=3) if count == 2
           else tnviz.from_einsum("iabc,jabc->ij", {"i": 4, "j": 4, "a": 2, "b": 3, "c": 5}, inputs="i"))
    scene = build_scene(net)
    bonds = [e for e in scene.edges if e.kind == "bond"]
    assert len(bonds) == count
    mids = [e.points(scene)[len(e.points(scene)) // 2] for e in bonds]
    # the arcs' middles are apart (no two drawn on top of each other), so are their labels
    for k, a in enumerate(mids):
        for b in mids[k + 1:]:
            assert math.dist(a, b) > 0.3
    labels = [e.label_pos for e in bonds]
    assert all(math.dist(a, b) > 0.3 for k, a in enumerate(labels) for b in labels[k + 1:])
    # arcs do not cross each other
    for k, e in enumerate(bonds):
        for f in bonds[k + 1:]:
            assert not any(_cross(*s, *t) for s in _segments(scene, e) for t in _segments(scene, f))
    # the DOT text draws each arc through its own pinned bend points, labels boxed in white
    text = to_dot(scene)
    for e in bonds:
        for vx, vy in e.via:
            assert f'pos="{vx},{vy}!"' in text
    assert text.count('fillcolor="white"') == count


def test_a_single_bond_between_two_tensors_stays_straight():
    scene = build_scene(tnviz.mpo([4, 4, 4], [4, 4, 4], ranks=3))
    assert all(e.via == () and not e.label_boxed for e in scene.edges)


def test_three_tensor_chain_is_a_chain_not_a_star():
    assert network_shape(tnviz.mpo([4, 4, 4], [4, 4, 4], ranks=3)) == "chain"
    three = tnviz.from_einsum("ia,ab,bj->ij", 3, inputs="i")
    assert network_shape(three.with_layout(None)) == "chain"
    assert network_shape(tnviz.tucker([4, 4], [4, 4], ranks=2)) == "star"  # a core with 4 factors


def test_fans_of_three_or_more_legs_alternate_lengths_so_labels_do_not_meet():
    from tnviz.gallery import fig1_reshaped_b, fig2_general_tensor

    for net in (fig1_reshaped_b(), fig2_general_tensor()):
        scene = build_scene(net)
        ends = [scene.node(leg_id(i)) for i in net.open_indices]
        lengths = sorted({round(math.hypot(e.x, e.y) / LEG_LENGTH, 3) for e in ends})
        assert lengths == [1.0, LEG_STAGGER]
        # no two leg labels closer than a label's height vertically while overlapping horizontally
        for k, a in enumerate(ends):
            for b in ends[k + 1:]:
                assert abs(a.y - b.y) > 0.15 or abs(a.x - b.x) > 0.5, (a.label, b.label)


def test_general_networks_get_a_stress_layout_that_follows_bond_distances():
    # a square with one diagonal: bonded tensors closer than the one unbonded pair (B, D)
    net = tnviz.from_einsum("iabe,jbc,kcde,lda->ijkl", 2, inputs="ij").with_layout(None)
    assert network_shape(net) == "general"
    pos = stress_layout(net)
    assert pos == stress_layout(net)  # deterministic
    bonded = [math.dist(pos[a], pos[b]) for a, b in ("AB", "BC", "CD", "DA", "AC")]
    assert max(bonded) < math.dist(pos["B"], pos["D"])
    assert max(bonded) / min(bonded) < 1.5
    assert auto_layout(net) == pos
    # no bond crosses another in the drawing, and open legs leave through free space
    scene = build_scene(net)
    bonds = [e for e in scene.edges if e.kind == "bond"]
    for k, e in enumerate(bonds):
        for f in bonds[k + 1:]:
            if {e.source, e.target} & {f.source, f.target}:
                continue
            assert not any(_cross(*s, *t) for s in _segments(scene, e) for t in _segments(scene, f))
    for e in scene.edges:
        if e.kind in ("input", "output"):
            for b in bonds:
                assert not any(_cross(*s, *t) for s in _segments(scene, e) for t in _segments(scene, b))


def _distance_to_polyline(p, pts) -> float:
    best = float("inf")
    for a, b in zip(pts, pts[1:]):
        dx, dy = b[0] - a[0], b[1] - a[1]
        t = max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / ((dx * dx + dy * dy) or 1.0)))
        best = min(best, math.dist(p, (a[0] + t * dx, a[1] + t * dy)))
    return best


def test_a_bond_bends_around_a_tensor_it_would_run_through():
    from tnviz.render.scene import CLEARANCE

    # from_einsum puts A, B, C, D in a row: a (A-D) and e (A-C) would run through B and C
    net = tnviz.from_einsum("iabe,jbc,kcde,lda->ijkl", 2, inputs="ij")
    scene = build_scene(net)
    for e in scene.edges:
        if e.kind != "bond":
            continue
        pts = e.points(scene)
        for t in scene.tensor_nodes:
            if t.id not in (e.source, e.target):
                assert _distance_to_polyline((t.x, t.y), pts) >= CLEARANCE - 1e-6, (e.index, t.label)
    assert scene.edges_of("a")[0].via and scene.edges_of("e")[0].via
    assert not scene.edges_of("b")[0].via  # neighbours stay joined by a straight line


# ---------------------------------------------------------------------- exports (moved from test_export.py)
@pytest.mark.skipif(not has_neato, reason="Graphviz 'neato' is not installed")
def test_diagram_svg_and_png():
    from tnviz.render.exports import export

    net = tnviz.mpo([2, 2, 2], [2, 2, 2], ranks=3)
    svg = export(net, "svg")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    texts = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    for name in net.tensor_names:
        assert re.search(rf"\b{name}\b", texts), f"tensor {name} is labelled in the diagram"
    png = export(net, "png")
    assert isinstance(png, bytes) and png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def _png_size(data: bytes) -> tuple[int, int]:
    import struct

    return struct.unpack(">II", data[16:24])  # IHDR width, height


@pytest.mark.skipif(not has_neato, reason="Graphviz 'neato' is not installed")
def test_png_export_is_at_print_resolution():
    # was 384x231 px at Graphviz's default 96 dpi: too coarse to print
    from tnviz.render.exports import PNG_DPI, export

    net = tnviz.build_template("MPO / tensor train")
    default = _png_size(tnviz.render.to_png(net))
    printed = _png_size(export(net, "png"))
    assert PNG_DPI >= 192
    assert printed[0] >= 2 * default[0] and printed[1] >= 2 * default[1]


def test_every_format_in_one_registry_named_after_the_network():
    from tnviz.export import EXPORTS as TEXT
    from tnviz.render.exports import EXPORTS, export, export_filename

    assert set(EXPORTS) == {"json", "einsum", "torch", "svg", "png", "dot"} and set(TEXT) < set(EXPORTS)
    net = tnviz.mpo([2, 2], [2, 2], ranks=2).with_name("MPO 4x4 / v2")
    assert [export_filename(net, f) for f in ("json", "torch", "png", "dot")] == [
        "MPO_4x4___v2.json", "MPO_4x4___v2_torch.py", "MPO_4x4___v2.png", "MPO_4x4___v2.dot"]
    assert export(net, "dot") == to_dot(net)
    assert tnviz.load_network(export(net, "json")) == net


# ---------------------------------------------------------------------- the Stack view's sparsity patterns
def test_patterns_figure_draws_each_layer_s_pattern_square_in_one_chart():
    import numpy as np

    from tnviz.render.stack_charts import patterns_figure
    from tnviz.stack import stack_views

    net = tnviz.mpo([2, 3, 2, 2, 2], [2, 2, 3, 2, 2], ranks=2)
    (view,) = stack_views(net, views=["left-to-right"])
    layers = view.to_dict()["layers"]
    patterns = [l.pattern(12) for l in view.layers]
    fig = patterns_figure(patterns, layers, columns=4)
    assert len(fig.data) == len(layers) == 5
    layout = fig.to_plotly_json()["layout"]
    assert layout["height"] == 2 * 260  # five patterns, four to a row
    for k, (trace, pattern, layer) in enumerate(zip(fig.data, patterns, layers)):
        assert trace.type == "heatmap" and trace.name == layer["name"]
        np.testing.assert_array_equal(np.asarray(trace.z), pattern)  # the data itself, bit for bit
        assert trace.zmax == max(float(pattern.max()), 1e-12)
        x, y = layout[f"xaxis{k + 1 if k else ''}"], layout[f"yaxis{k + 1 if k else ''}"]
        assert y["scaleanchor"] == f"x{k + 1 if k else ''}" and y["autorange"] == "reversed"  # square, outputs down
        assert x["title"]["text"] == f"inputs (0 … {layer['in_size'] - 1:,})"
        assert y["title"]["text"] == f"outputs (0 … {layer['out_size'] - 1:,})"
    titles = [a["text"] for a in layout["annotations"]]
    assert titles == [f"{l['name']}: {l['out_size']:,} x {l['in_size']:,}" for l in layers]
    with pytest.raises(ValueError, match="one pattern per layer: 4 patterns for 5 layers"):
        patterns_figure(patterns[:4], layers)


# ---------------------------------------------------------------------- every chart names its axes (issue 17)
def _axis_titles(fig) -> list[str]:
    layout = fig.to_plotly_json()["layout"]
    return [layout[k].get("title", {}).get("text") for k in sorted(layout) if k.startswith(("xaxis", "yaxis"))]


def test_every_chart_names_its_axes_and_units():
    import numpy as np

    from tnviz.cost import batch_sweep
    from tnviz.render.bond_charts import class_channel_heatmap, spectrum_chart
    from tnviz.render.stack_charts import column_figure, patterns_figure
    from tnviz.stack import stack_views

    net = tnviz.mpo([4, 4], [4, 4], ranks=3)
    (view,) = stack_views(net, views=["left-to-right"])
    report = view.to_dict()
    figures = {
        "flops vs batch": flops_vs_batch(batch_sweep(net)),
        "step bars": step_bars(tnviz.cost(net, 64)),
        "stack column": column_figure(report, 0),
        "sparsity patterns": patterns_figure([l.pattern(20) for l in view.layers], report["layers"]),
        "class x channel": class_channel_heatmap(np.ones((3, 4)), [0, 1, 2]),
        "bond spectrum": spectrum_chart(np.array([3.0, 2.0, 1.0])),
    }
    for name, fig in figures.items():
        titles = _axis_titles(fig)
        assert titles and all(titles), (name, titles)
    assert "FLOPs" in _axis_titles(figures["flops vs batch"])[1]
    assert _axis_titles(figures["step bars"])[2:] == ["FLOPs", "elements"]
    sweep_layout = figures["flops vs batch"].to_plotly_json()["layout"]
    assert sweep_layout["yaxis"]["dtick"] == 1 and sweep_layout["yaxis"]["exponentformat"] == "SI"
