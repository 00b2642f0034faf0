"""AppTest of the Teach page: notation diagrams, Next/Previous move the step (text, numbers and
highlighted diagram follow tnviz.teach), the path choice changes the sequence, the gauge demo
shows live numbers, bad choices show a message instead of a traceback."""
from __future__ import annotations

import pytest

import tnviz
from tnviz_app.components.formatting import human
from tnviz.gallery import GALLERY
from tests.app.conftest import diagram_dots, diagram_spec, dot_of
from tnviz.teach import contraction_walkthrough, gauge_demo, stage

TEACH = "views/teach.py"
NOTATION_CHARTS = 4
MPO4 = GALLERY["Fig. 4 (i): MPO with 4 tensors"].network()


def _step_title(at) -> str:
    return next(s.value for s in at.subheader if s.value.startswith("Step "))


def _metric(at, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


def _layer_chart(at) -> str:
    return diagram_dots(at)[NOTATION_CHARTS]


def _expected_layer_chart(walk, k) -> str:
    step = walk.steps[k]
    return dot_of(walk.display, highlight_tensors=step.highlight_tensors,
                  highlight_indices=[walk.display_index(i) for i in step.summed])


def test_notation_then_first_step_of_the_current_network(open_page):
    at = open_page(TEACH, network=MPO4)
    assert at.title[0].value == "Teach"
    headers = [h.value for h in at.header]
    assert headers[:2] == ["1. The notation", "2. Contract an input with the current layer"]
    notation = [diagram_spec(at, k) for k in range(NOTATION_CHARTS)]
    assert 'class="edge bond"' in notation[1] and '"d:r"' in notation[3]  # a bond; the hyperedge's dot
    walk = contraction_walkthrough(MPO4, 1, "optimal")
    step = walk.steps[0]
    assert _step_title(at) == f"Step 1 of {len(walk.steps)}: {step.result} = {' · '.join(step.operands)}"
    assert any(f"**{step.result}[{', '.join(step.result_indices)}]**" in m.value for m in at.markdown)
    assert _metric(at, "Its size") == f"{step.size:,}"
    assert _layer_chart(at) == _expected_layer_chart(walk, 0)
    first = stage(walk, 0)
    assert diagram_dots(at)[NOTATION_CHARTS + 1] == dot_of(
        first.network, highlight_tensors=first.next_pair, highlight_indices=first.next_summed)
    assert at.button(key="teach.previous").disabled and not at.button(key="teach.next").disabled


def test_next_and_previous_move_the_step(open_page):
    at = open_page(TEACH, network=MPO4)
    walk = contraction_walkthrough(MPO4, 1, "optimal")
    charts = [_layer_chart(at)]
    at.button(key="teach.next").click().run()
    assert _step_title(at).startswith(f"Step 2 of {len(walk.steps)}")
    charts.append(_layer_chart(at))
    assert charts[1] == _expected_layer_chart(walk, 1) != charts[0]
    assert _metric(at, "Running FLOPs") == human(walk.steps[1].running_flops)
    assert f"{walk.steps[1].flops:,}" in [m.delta for m in at.metric if m.label == "FLOPs of this step"][0]
    for _ in range(len(walk.steps)):  # past the end: stays on the last step
        if not at.button(key="teach.next").disabled:
            at.button(key="teach.next").click().run()
    assert _step_title(at).startswith(f"Step {len(walk.steps)} of")
    assert at.button(key="teach.next").disabled
    assert f"{walk.total_flops:,} FLOPs" in at.success[0].value
    at.button(key="teach.previous").click().run()
    assert _step_title(at).startswith(f"Step {len(walk.steps) - 1} of")
    assert _layer_chart(at) == _expected_layer_chart(walk, len(walk.steps) - 2)


def test_running_flops_shown_match_the_walkthrough(open_page):
    at = open_page(TEACH, network=MPO4)
    walk = contraction_walkthrough(MPO4, 1, "optimal")
    table = at.dataframe[0].value
    assert list(table["running FLOPs"]) == [s.running_flops for s in walk.steps]
    assert list(table["FLOPs"]) == [s.flops for s in walk.steps]
    assert int(table["running FLOPs"].iloc[-1]) == tnviz.cost(MPO4, 1, "optimal").flops


def test_path_choice_changes_the_sequence_and_restarts(open_page):
    at = open_page(TEACH, network=MPO4)
    at.button(key="teach.next").click().run()
    optimal = list(at.dataframe[0].value["merge"])
    at.selectbox(key="teach.optimize").set_value("left-to-right").run()
    assert not at.exception
    left = list(at.dataframe[0].value["merge"])
    expected = contraction_walkthrough(MPO4, 1, "left-to-right")
    assert left == [" · ".join(s.operands) for s in expected.steps] != optimal
    assert _step_title(at).startswith("Step 1 of")  # a new path starts from its first step
    at.number_input(key="teach.batch").set_value(64).run()
    assert list(at.dataframe[0].value["running FLOPs"]) == [
        s.running_flops for s in contraction_walkthrough(MPO4, 64, "left-to-right").steps]


def test_gauge_demo_numbers_are_live(open_page):
    at = open_page(TEACH, network=MPO4)
    assert at.selectbox(key="teach.bond").options == list(MPO4.bonds)
    demo = gauge_demo(MPO4, "b1", seed=0)
    assert _metric(at, "‖A' − A‖") == f"{demo.change_norms['A']:.4g}"
    assert float(_metric(at, "max |layer after")) < 1e-10
    at.selectbox(key="teach.bond").set_value("b3").run()
    at.number_input(key="teach.seed").set_value(5).run()
    demo = gauge_demo(MPO4, "b3", seed=5)
    assert _metric(at, "‖C' − C‖") == f"{demo.change_norms['C']:.4g}"
    assert _metric(at, "‖D' − D‖") == f"{demo.change_norms['D']:.4g}"
    assert float(_metric(at, "max |layer after")) == pytest.approx(demo.max_abs_diff, abs=1e-15)


def test_networks_without_bonds_or_too_large_for_optimal_show_a_message(open_page):
    cp = tnviz.build_template("CP")
    at = open_page(TEACH, network=cp)
    assert any("no bond" in i.value for i in at.info)
    long = tnviz.mpo([2] * 10, [2] * 10, ranks=2)  # x + 10 tensors: beyond the exhaustive search
    at = open_page(TEACH, network=long)
    assert not at.error and _step_title(at).startswith("Step 1 of 10")  # the default 'best' fits any size
    at.selectbox(key="teach.optimize").set_value("optimal").run()
    assert any("limited to 8 operands" in e.value for e in at.error)
    at.selectbox(key="teach.optimize").set_value("greedy").run()
    assert not at.error and _step_title(at).startswith("Step 1 of 10")


def test_a_new_current_network_restarts_from_its_first_step(open_page):
    at = open_page(TEACH, network=MPO4)
    at.button(key="teach.next").click().run()
    at.button(key="teach.next").click().run()
    assert _step_title(at).startswith("Step 3 of 4")
    pqr = GALLERY["Fig. 2 (viii): network of P, Q, R"].network()
    at.session_state["tnviz.network"] = pqr
    at.run()
    assert _step_title(at).startswith("Step 1 of 3")
    assert list(at.dataframe[0].value["merge"]) == [
        " · ".join(s.operands) for s in contraction_walkthrough(pqr, 1, "optimal").steps]


def test_the_path_comparison_names_each_paths_flops_and_the_chosen_sequence(open_page):
    at = open_page(TEACH, network=MPO4)
    line = next(c.value for c in at.caption if c.value.startswith("Whole contraction, FLOPs by path"))
    walks = {o: contraction_walkthrough(MPO4, 1, o) for o in ("optimal", "greedy", "left-to-right")}
    for name, walk in walks.items():
        same = [s.members for s in walk.steps] == [s.members for s in walks["optimal"].steps]
        assert f"{name} {human(walk.total_flops)}{' (this sequence)' if same else ''}" in line, line
    assert "optimal " + human(walks["optimal"].total_flops) + " (this sequence)" in line
    assert "left-to-right " + human(walks["left-to-right"].total_flops) + " (this" not in line  # it differs here


def test_a_500_tensor_chain_steps_through_and_the_gauge_refuses_in_place(open_page):
    # Teach defaulted to 'optimal' and hung the same way as Costs; the gauge demo drew 2^500 inputs
    net = tnviz.mpo([2] * 500, [2] * 500, ranks=2, name="chain of 500")
    at = open_page(TEACH, network=net)
    assert not at.exception
    assert _step_title(at).startswith("Step 1 of 500")
    assert any("the gauge demo compares the layer on 16 random inputs" in e.value for e in at.error)


def test_the_notation_typesets_its_formulas_and_names_the_colours_it_draws(open_page):
    # formulas were plain text ("c_ij = Σ_k a_ik b_kj"); the caption said red for a bond drawn orange
    at = open_page(TEACH)
    formulas = [l.value for l in at.latex]
    assert any(r"c_{ij} = \sum_k a_{ik}\, b_{kj}" in f for f in formulas) and any(r"\delta_{ijk}" in f for f in formulas)
    captions = " ".join(c.value for c in at.caption)
    assert "highlighted in orange" in captions and "Σ_k" not in captions and "$m_{ij}$" in captions
    from tnviz.render import PALETTE

    assert PALETTE["highlight"] == "#f59e0b"  # orange, the colour the captions name


def test_the_batch_leg_is_not_named_like_a_tensor(open_page):
    at = open_page(TEACH, network=MPO4)  # tensors A, B, C, D: "B=1" beside tensor B read as one thing
    layer_and_x = diagram_spec(at, 4)
    assert "N=1" in layer_and_x and "B=1" not in layer_and_x
