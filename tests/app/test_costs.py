"""AppTest of the Costs page: tiles, path table, useful ranks, charts, errors in place."""
from __future__ import annotations

import json

import tnviz
from tnviz_app.components.formatting import human, human_bytes
from tests.app.conftest import current_network

COSTS = "views/costs.py"


def _metric(at, label_start: str):
    return next(m for m in at.metric if m.label.startswith(label_start))


def test_tiles_show_the_engine_numbers(open_page):
    at = open_page(COSTS)
    assert at.title[0].value == "Costs"
    net = current_network(at)
    c = tnviz.cost(net, batch=1024)  # the default: the best path found
    assert _metric(at, "Parameters").value == f"{c.params:,}"
    assert _metric(at, "Forward FLOPs").label == "Forward FLOPs (best path)"
    assert _metric(at, "Forward FLOPs").value == human(c.flops) == "2.68 G"  # was 4.30 G (opt_einsum's auto)
    assert c.path_note in _metric(at, "Forward FLOPs").help
    assert _metric(at, "Backward FLOPs").value == human(c.backward_flops)
    assert _metric(at, "Rebuild").value == human(c.rebuild_flops)
    assert _metric(at, "Peak memory (float32)").value == human_bytes(c.peak_bytes("float32"))
    assert _metric(at, "Peak memory (float32)").delta == f"{c.peak_elements:,} elements"
    assert _metric(at, "Factorized FLOPs").value == human(c.factorized_flops)
    # the strategy shown is the layer's own choice (was LayerCost.best_strategy, 'factorized' by FLOPs)
    from tnviz.nn.strategies import decisions
    chosen = decisions(net, 1024)
    for mode, d in chosen.items():
        assert any(m.value.startswith(f"**{mode.capitalize()}** at batch 1,024: `{d.strategy}`") for m in at.markdown)
    table = at.dataframe[2].value
    runs = table[table["runs"] == "yes"]
    assert list(runs["mode"]) == ["inference", "training"]
    assert list(runs["strategy"]) == [chosen["inference"].strategy, chosen["training"].strategy] == ["chain", "chain"]
    assert "less than dense" in _metric(at, "Parameters").delta
    steps = at.dataframe[0].value
    assert len(steps) == len(c.steps)
    assert list(steps["FLOPs"]) == [s.flops for s in c.steps]
    assert list(steps["intermediate (elements)"]) == [s.size for s in c.steps]


def test_batch_optimizer_and_dtype_change_the_numbers(open_page):
    at = open_page(COSTS)
    net = current_network(at)
    at.number_input(key="costs.batch").set_value(8).run()
    assert _metric(at, "Forward FLOPs").value == human(tnviz.cost(net, batch=8).flops)
    at.selectbox(key="costs.optimize").set_value("left-to-right").run()
    c = tnviz.cost(net, batch=8, optimize="left-to-right")
    assert list(at.dataframe[0].value["FLOPs"]) == [s.flops for s in c.steps]
    at.selectbox(key="costs.dtype").set_value("bfloat16").run()
    assert _metric(at, "Peak memory (bfloat16)").value == human_bytes(c.peak_bytes("bfloat16"))


def test_charts_are_plotly_with_the_sweep(open_page):
    net = tnviz.mpo([8, 8], [8, 8], ranks=8)  # has a factorized/rebuilt crossover
    at = open_page(COSTS, network=net)
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    sweep_fig = json.loads(charts[0].proto.spec)
    names = [t["name"] for t in sweep_fig["data"]]
    assert names[0].startswith("factorized") and names[1].startswith("rebuilt")
    assert sweep_fig["layout"]["xaxis"]["type"] == "log" and sweep_fig["layout"]["yaxis"]["type"] == "log"
    crossovers = tnviz.batch_sweep(net, [2**k for k in range(17)]).crossovers
    assert crossovers
    assert any(f"from batch {crossovers[0][0]:,}" in c.value for c in at.caption)
    annotations = [a["text"] for a in sweep_fig["layout"]["annotations"]]
    assert any("crossover" in a for a in annotations)
    steps_fig = json.loads(charts[1].proto.spec)
    c = tnviz.cost(net, batch=1024)
    assert steps_fig["data"][0]["y"] == [s.flops for s in c.steps]
    assert steps_fig["data"][1]["y"] == [s.size for s in c.steps]


def test_wasted_rank_is_warned(open_page):
    at = open_page(COSTS, network=tnviz.mpo([2, 2], [2, 2], ranks=8))  # at most 4 is useful
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 1 and "'b1'" in warnings[0] and "at most 4" in warnings[0]
    ranks = at.dataframe[1].value
    assert list(ranks["max useful"]) == [4] and list(ranks["status"]) == ["4 wasted"]
    fine = open_page(COSTS, network=tnviz.mpo([2, 2], [2, 2], ranks=4))
    assert not fine.warning


def test_engine_refusal_is_shown_in_place(open_page):
    big = tnviz.mpo([2] * 11, [2] * 11, ranks=2)  # 12 operands: too many for 'optimal'
    at = open_page(COSTS, network=big)
    assert not at.error
    at.selectbox(key="costs.optimize").set_value("optimal").run()
    assert not at.exception
    assert len(at.error) == 1 and "'optimal' optimizer is limited" in at.error[0].value
    assert not at.get("plotly_chart")
    at.selectbox(key="costs.optimize").set_value("greedy").run()
    assert not at.error and len(at.get("plotly_chart")) == 2


def test_costs_follow_the_network_chosen_in_the_designer(open_page):
    at = open_page()
    at.selectbox(key="designer.template").set_value("CP").run()
    at.switch_page(COSTS).run()
    assert not at.exception
    assert _metric(at, "Parameters").value == f"{tnviz.build_template('CP').params:,}"
    assert any("hyperedges" in c.value for c in at.caption)  # no bond table for a CP layer


# ---------------------------------------------------------------------- one figure on every page
def _forward_metric(at):
    (m,) = [m for m in at.metric if m.label.startswith("Forward FLOPs")]
    return m


def _gallery_figure(at, net) -> str:
    import re

    head = f"{net.in_features:,} → {net.out_features:,} · **{net.params:,}** parameters"
    (line,) = [m.value for m in at.markdown if m.value.startswith(head)]
    return re.search(r"Forward FLOPs \(best path\) per input: \*\*(.+?)\*\*", line).group(1)


def test_every_page_shows_the_same_forward_flops_for_the_same_network_and_batch(open_page):
    """Designer, Costs, Stack view, Teach and Gallery: one figure, from one function (issue 13:
    Costs and Designer showed 4.30 G where Stack view and Teach showed 2.68 G)."""
    from tnviz.gallery import GALLERY

    from tnviz_app.components.figures import layer_cost

    name = "Fig. 4 (i): MPO with 4 tensors"
    net = GALLERY[name].network()
    for batch in (1, 1024):
        expected = human(tnviz.cost(net, batch).flops)
        assert expected == human(layer_cost(net.to_json(), batch).flops)
        shown, labels = {}, set()

        def read(page: str) -> None:
            metric = _forward_metric(at)
            shown[page] = metric.value
            labels.add(metric.label.split(",")[0])  # the Stack view adds ", per sample"

        at = open_page("views/designer.py", network=net)
        at.selectbox(key="designer.canvas.batch").set_value(batch).run()
        read("Designer")
        at.switch_page(COSTS).run()
        at.number_input(key="costs.batch").set_value(batch).run()
        read("Costs")
        at.switch_page("views/teach.py").run()
        at.number_input(key="teach.batch").set_value(batch).run()
        read("Teach")
        if batch == 1:  # per sample: the Stack view's and the Gallery's figures
            at.switch_page("views/stack_view.py").run()
            read("Stack view")
            at.session_state["gallery.figure"] = "Fig. 4"  # the Gallery draws only its open tab
            at.switch_page("views/gallery.py").run()
            shown["Gallery"] = _gallery_figure(at, net)
        assert not at.exception
        assert set(shown.values()) == {expected}, (batch, shown)
        assert labels == {"Forward FLOPs (best path)"}, labels


def test_costs_of_a_network_past_two_to_the_63_flops(open_page):
    # Arrow stores integers as int64: the path table crashed the page
    net = tnviz.mpo([4] * 40, [4] * 40, ranks=2, name="80-bit MPO")
    c = tnviz.cost(net, batch=1024)
    assert max(s.flops for s in c.steps) > 2**63
    at = open_page(COSTS, network=net)
    assert not at.exception and not at.error
    steps = at.dataframe[0].value
    assert len(steps) == len(c.steps) and float(steps["FLOPs"].max()) == float(max(s.flops for s in c.steps))
    assert _metric(at, "Forward FLOPs").value == human(c.flops)


def test_costs_of_a_500_tensor_chain_load_and_say_which_search_ran(open_page):
    # Costs hung on long chains (the input-first search, the useful ranks, the sweep)
    net = tnviz.mpo([2] * 500, [2] * 500, ranks=2, name="chain of 500")
    at = open_page(COSTS, network=net)
    assert not at.exception and not at.error
    c = tnviz.cost(net, batch=1024)
    assert _metric(at, "Forward FLOPs").value == human(c.flops)
    assert any("among the searches that fit this size: input-first" in cap.value for cap in at.caption)
    assert len(at.dataframe[0].value) == 500
