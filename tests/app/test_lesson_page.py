"""AppTest of the Lesson page: every step's check passes on the right action and refuses a wrong one
with a message naming the rule and the value; passing unlocks the next step; progress survives a
visit to another page; changing an earlier answer locks the later steps again.  The numbers shown
are checked against computations made here (parameter counts, the error of the contracted MPO,
the accuracy of the model with the contracted matrix in a plain nn.Linear)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import tnviz
from tnviz_app.components import lesson
from tests.app.conftest import diagram_dots, diagram_spec, dot_of

LESSON = "views/lesson.py"
SHAPES = {"fc1": (256, 64), "fc2": (256, 256), "fc3": (10, 256)}  # DigitsMLP's weights (out, in)


# ---------------------------------------------------------------------- the checks alone
def test_matrix_check():
    assert not lesson.check_matrix(None, SHAPES).ok
    assert "fc9" in lesson.check_matrix("fc9", SHAPES).message
    ok = lesson.check_matrix("fc1", SHAPES)
    assert ok.ok and ok.value == "fc1" and "256 × 64" in ok.message


@pytest.mark.parametrize("ins,outs,needle", [
    ("64", "16,16", "at least 2 legs"),
    ("8,4", "16,16", "multiply to 32"),
    ("1,64", "16,16", "size 2 or more"),
    ("2,2,2,2,4", "16,16", "at most 4 legs"),
    ("8,x", "16,16", "'x'"),
])
def test_legs_check_refuses_with_the_rule(ins, outs, needle):
    verdict = lesson.check_legs(ins, outs, SHAPES["fc1"], "fc1")
    assert not verdict.ok and needle in verdict.message


def test_legs_check_accepts_factors_of_the_features():
    verdict = lesson.check_legs("8, 8", "16x16", SHAPES["fc1"], "fc1")
    assert verdict.ok and verdict.value == ((8, 8), (16, 16))


def test_rank_check_bounds():
    # dense 65,536; the 2-core MPO holds 2·256·r: compresses up to r = 127, and b1 is useful up to 256
    assert lesson.largest_compressing_rank((16, 16), (16, 16)) == 127
    assert lesson.check_rank(127, (16, 16), (16, 16)).ok
    refused = lesson.check_rank(128, (16, 16), (16, 16))
    assert not refused.ok and "65,536" in refused.message and "127 or less" in refused.message
    useless = lesson.check_rank(300, (16, 16), (16, 16))
    assert not useless.ok and "256" in useless.message
    assert not lesson.check_rank(0, (16, 16), (16, 16)).ok
    assert not lesson.check_rank(2.5, (16, 16), (16, 16)).ok


def test_params_check_against_a_hand_count():
    net = lesson.mpo_of((4, 4, 4), (4, 4, 4), 3)
    by_hand = 4 * 4 * 3 + 3 * 4 * 4 * 3 + 3 * 4 * 4
    assert lesson.check_params(by_hand, net).ok
    wrong = lesson.check_params(by_hand + 1, net)
    assert not wrong.ok and f"{by_hand + 1:,} is not the count" in wrong.message


def test_contract_check_sums_exactly_the_bonds():
    net = lesson.mpo_of((4, 4, 4), (4, 4, 4), 3)
    assert lesson.check_contract(["b1", "b2"], net).ok
    assert "open leg" in lesson.check_contract(["b1", "b2", "o3"], net).message
    assert "b2 joins B and C" in lesson.check_contract(["b1"], net).message
    assert not lesson.check_contract([], net).ok


def test_accuracy_check_tolerance():
    assert lesson.check_accuracy(0.97, 0.95).ok
    refused = lesson.check_accuracy(0.97, 0.90)
    assert not refused.ok and "7.0 points below" in refused.message


def test_contraction_latex_names_every_tensor_and_bond():
    text = lesson.contraction_latex(lesson.mpo_of((4, 4), (4, 4), 2))
    assert text == r"\tilde W_{o_{1} o_{2},\, i_{1} i_{2}} = \sum_{b_{1}} A_{i_{1} o_{1} b_{1}}\,B_{b_{1} i_{2} o_{2}}"


# ---------------------------------------------------------------------- the page
def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def _titles(at) -> list[str]:
    return [s.value for s in at.subheader]


def _check(at, key):
    at.button(key=f"lesson.check.{key}").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.fixture
def lesson_page(open_page):
    return open_page(LESSON)


def test_the_first_step_refuses_no_choice_then_unlocks_the_second(lesson_page):
    at = lesson_page
    assert at.title[0].value == "Lesson: compress a layer"
    assert _titles(at) == ["Step 1 of 6: Pick a matrix"]
    assert set(at.selectbox(key="lesson.layer").options) >= {"fc1: 256 × 64 (16,384 numbers)"}
    _check(at, "matrix")
    assert _errors(at) == ["Pick one of the layers first: the lesson compresses the weight matrix you choose."]
    assert len(_titles(at)) == 1
    at.selectbox(key="lesson.layer").select("fc1").run()
    _check(at, "matrix")
    assert _titles(at) == ["✓ Step 1 of 6: Pick a matrix", "Step 2 of 6: Reshape it into legs"]
    assert ">W</text>" in diagram_spec(at)  # the matrix drawn as one tensor named W


def _walk_to(at, last: str, layer="fc1", legs=("8,8", "16,16"), rank=32):
    at.selectbox(key="lesson.layer").select(layer).run()
    _check(at, "matrix")
    if last == "matrix":
        return at
    at.text_input(key="lesson.in_legs").input(legs[0])
    at.text_input(key="lesson.out_legs").input(legs[1])
    _check(at, "legs")
    if last == "legs":
        return at
    at.number_input(key="lesson.rank").set_value(rank)
    _check(at, "rank")
    if last == "rank":
        return at
    net = tnviz.mpo([int(v) for v in legs[0].split(",")], [int(v) for v in legs[1].split(",")], ranks=rank)
    at.number_input(key="lesson.params").set_value(sum(math.prod(net.shape(t)) for t in net.tensors))
    _check(at, "params")
    if last == "params":
        return at
    at.multiselect(key="lesson.summed").set_value(list(net.bonds))
    _check(at, "contract")
    return at


def test_each_step_refuses_the_wrong_action_with_its_rule(lesson_page):
    at = _walk_to(lesson_page, "matrix")
    at.text_input(key="lesson.in_legs").input("8,4")
    at.text_input(key="lesson.out_legs").input("16,16")
    _check(at, "legs")
    assert _errors(at) == ["The input legs 8 × 4 multiply to 32; fc1 has 64 inputs: their product must be 64."]
    assert _titles(at)[-1] == "Step 2 of 6: Reshape it into legs"

    at.text_input(key="lesson.in_legs").input("8,8")
    _check(at, "legs")
    assert _titles(at)[-1] == "Step 3 of 6: Choose a bond rank"
    at.number_input(key="lesson.rank").set_value(64)  # 2·(8·16)·64 = 16,384: as many as dense
    _check(at, "rank")
    assert _errors(at) == ["Rank 64 gives 16,384 parameters, not fewer than the dense matrix's 16,384: nothing is "
                           "compressed. Pick a rank of 63 or less."]
    at.number_input(key="lesson.rank").set_value(8)
    _check(at, "rank")
    assert _titles(at)[-1] == "Step 4 of 6: Count the parameters"
    from tnviz.render import build_scene

    mpo = lesson.mpo_of((8, 8), (16, 16), 8, "fc1")  # drawn with its bond highlighted, nothing faded
    assert diagram_dots(at)[2] == dot_of(build_scene(mpo, highlight_indices=["b1"], fade_others=False))

    at.number_input(key="lesson.params").set_value(1000)
    _check(at, "params")
    assert _errors(at)[0].startswith("1,000 is not the count.")
    at.number_input(key="lesson.params").set_value(8 * 16 * 8 + 8 * 8 * 16)
    _check(at, "params")
    assert _titles(at)[-1] == "Step 5 of 6: Contract it back"
    c = tnviz.cost(tnviz.mpo([8, 8], [16, 16], ranks=8), batch=1)
    assert _metric(at, "Parameters") == f"{c.params:,}" == "2,048"
    assert _metric(at, "Forward FLOPs (best path)") == tnviz_human(c.flops)

    at.multiselect(key="lesson.summed").set_value(["i1"])
    _check(at, "contract")
    assert _errors(at) == ["i1 is an open leg (an input of the matrix): it stays on the result. A contraction sums "
                           "only the legs two tensors share."]
    at.multiselect(key="lesson.summed").set_value(["b1"])
    _check(at, "contract")
    assert _titles(at)[-1] == "Step 6 of 6: Put it in the model"

    _check(at, "apply")  # rank 8 on fc1 loses about 18 points of accuracy
    assert _errors(at) and "points below the original" in _errors(at)[0] and "raise the rank" in _errors(at)[0]
    assert not any(s.value.startswith("Done:") for s in at.success)


def tnviz_human(v):
    from tnviz_app.components.formatting import human

    return human(v)


def test_the_numbers_match_a_computation_made_here(lesson_page):
    import torch

    from tnviz.model.demos import load_demo
    from tnviz.model.evaluate import digits_accuracy

    at = _walk_to(lesson_page, "contract", rank=32)
    model = load_demo("digits-mlp", "cpu")
    W = model.fc1.weight.detach().double()
    res = tnviz.decompose(model.fc1.weight, "mpo", in_dims=[8, 8], out_dims=[16, 16], max_rank=32)
    approx = tnviz.to_dense(res.network, res.tensors).detach().double()
    error = float(torch.linalg.norm(W - approx) / torch.linalg.norm(W))
    assert _metric(at, "Relative error") == f"{error:.1%}"
    assert _metric(at, "Largest |W − W̃| entry") == f"{float((W - approx).abs().max()):.3g}"

    _check(at, "apply")
    plain = copy.deepcopy(model)
    with torch.no_grad():
        plain.fc1.weight.copy_(approx.to(plain.fc1.weight.dtype))  # the contracted matrix in a plain nn.Linear
    expected = digits_accuracy(plain)
    assert _metric(at, "Compressed accuracy") == f"{expected:.1%}"
    assert _metric(at, "Original accuracy") == f"{digits_accuracy(model):.1%}"
    assert _errors(at) == []
    assert any(s.value.startswith("Done: fc1 is a 2-tensor MPO of rank 32") for s in at.success)
    assert all(t.startswith("✓ ") for t in _titles(at))


def test_progress_survives_reruns_another_page_and_an_earlier_change_relocks(lesson_page):
    at = _walk_to(lesson_page, "params", rank=16)
    assert _titles(at)[-1] == "Step 5 of 6: Contract it back"
    at.run()
    # another page and back (the inputs of steps not drawn on the first visit used to come back empty,
    # which locked every step after the first)
    at.switch_page("views/gallery.py").run()
    at.switch_page(LESSON).run()
    assert not at.exception
    assert _titles(at)[-1] == "Step 5 of 6: Contract it back"
    assert at.number_input(key="lesson.rank").value == 16
    assert at.text_input(key="lesson.in_legs").value == "8,8"

    at.number_input(key="lesson.rank").set_value(20).run()  # changed after its check: steps 3.. locked again
    assert _titles(at)[-1] == "Step 3 of 6: Choose a bond rank" and len(_titles(at)) == 3
    assert _errors(at) == []  # the old verdict judged rank 16: it goes with it
    _check(at, "rank")
    assert _titles(at)[-1] == "Step 4 of 6: Count the parameters"
    at.number_input(key="lesson.params").set_value(2 * 8 * 16 * 20)
    _check(at, "params")
    assert _titles(at)[-1] == "Step 5 of 6: Contract it back"

    at.button(key="lesson.restart").click().run()
    assert _titles(at) == ["Step 1 of 6: Pick a matrix"]
    assert at.selectbox(key="lesson.layer").value is None
