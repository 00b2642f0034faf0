"""The Designer's canvas in a real headless Chromium, driven with real mouse actions: draw a
3-tensor MPO from an empty canvas, see its parameters and FLOPs, check them against
``tnviz.cost`` of the exported JSON, undo an edit (also after visiting another page).  Screenshots go to artifacts/screenshots/;
canvas.png also to assets/screenshots/ when TNVIZ_UPDATE_SCREENSHOTS=1."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

import tnviz
from tnviz_app.components.formatting import human

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
_CURRENT_PAGE: list = []  # for a screenshot when a wait times out


@pytest.fixture(scope="module")
def canvas_page(browser, app_url):
    """One page for this module on the shared server (tests/e2e/conftest.py): a new page load
    costs seconds, and the second test starts from the first one's drawing on purpose."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app_url)
    page.wait_for_selector("[data-testid=tn-canvas] .react-flow__node", timeout=60_000)
    page.locator("[data-testid=tn-canvas]").scroll_into_view_if_needed()
    _CURRENT_PAGE[:] = [page]
    yield page
    _CURRENT_PAGE.clear()
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page, name: str, full: bool = False) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"canvas_{name}.png"
    if full:
        page.screenshot(path=str(path), full_page=True)
    else:
        block = page.locator("[data-testid=stHorizontalBlock]").filter(has=page.locator("[data-testid=tn-canvas]")).last
        block.screenshot(path=str(path))
    return path


def centre(locator) -> tuple[float, float]:
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not on screen"
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def leg(page, tensor: str, index: str | None = None, role: str | None = None):
    sel = f"[data-tensor={tensor}] .react-flow__handle"
    if index:
        sel += f'[data-index="{index}"]'
    if role:
        sel += f'[data-role="{role}"]'
    return page.locator(sel).first


def steady_centre(locator, timeout: float = 20.0) -> tuple[float, float]:
    """The centre of ``locator`` once it has stopped moving (two reads 0.15 s apart agree): on
    a loaded machine the canvas may still be fitting the view or re-measuring nodes."""
    deadline = time.time() + timeout
    last = centre(locator)
    while time.time() < deadline:
        time.sleep(0.15)
        now = centre(locator)
        if abs(now[0] - last[0]) < 0.5 and abs(now[1] - last[1]) < 0.5:
            return now
        last = now
    pytest.fail(f"{locator} kept moving for {timeout} s")


def show_canvas(page) -> None:
    """Scroll the whole canvas into the middle of the window: a download button's click scrolls
    the page down, which can leave the top of the drawing under Streamlit's fixed header."""
    page.locator("[data-testid=tn-canvas]").evaluate("el => el.scrollIntoView({block: 'center'})")


def drag(page, source, target) -> None:
    """A real mouse drag from one leg to another, in small steps like a hand."""
    show_canvas(page)
    x0, y0 = steady_centre(source)
    x1, y1 = steady_centre(target)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2 + 15, steps=8)
    page.mouse.move(x1, y1, steps=8)
    page.mouse.up()


def set_size(page, target, size: int) -> None:
    """Click a leg or bond label, type its size in the inspector, press Enter."""
    target.click()
    box = page.locator("[data-testid=index-size]")
    box.fill(str(size))
    box.press("Enter")


def summary(page) -> str:
    return page.locator("[data-testid=summary]").inner_text()


def numbers(page) -> dict:
    """The live numbers beside the canvas: Parameters and Forward FLOPs (as shown, with the batch
    from the caption under it)."""
    panel = page.locator(".st-key-designer-canvas-numbers")
    values = panel.locator("[data-testid=stMetricValue]").all_inner_texts()
    captions = " ".join(panel.locator("[data-testid=stCaptionContainer]").all_inner_texts())
    batch = int(re.search(r"batch ([\d,]+)", captions).group(1).replace(",", ""))
    return {"params": int(values[0].replace(",", "")), "flops": values[1].strip(), "batch": batch}


def wait_for(predicate, what: str, timeout: float = 45.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # the page may be rerunning; try again
            last = exc
        time.sleep(0.25)
    if _CURRENT_PAGE:
        shot(_CURRENT_PAGE[0], f"failed_{int(time.time())}", full=True)
        last = f"{last!r}; canvas mounts: {_CURRENT_PAGE[0].evaluate('window.__tnvizCanvasMounts')}"
    pytest.fail(f"timed out waiting for {what}; last: {last!r}")


def same_layer(a: tnviz.TensorNetwork, b: tnviz.TensorNetwork) -> bool:
    """Equal tensors, sizes and leg order (name, layout and the order of the sizes aside)."""
    return (a.tensors, a.sizes, a.inputs, a.outputs) == (b.tensors, b.sizes, b.inputs, b.outputs)


def idle(page, timeout: float = 30.0) -> None:
    """Wait until the app has finished its reruns (the script state stays 'notRunning')."""
    app = page.locator("[data-testid=stApp]")
    deadline = time.time() + timeout
    calm = 0
    while time.time() < deadline:
        calm = calm + 1 if app.get_attribute("data-test-script-state") == "notRunning" else 0
        if calm >= 3:
            return
        time.sleep(0.15)
    pytest.fail(f"the app kept running for {timeout} s")


def download_json(page) -> tnviz.TensorNetwork:
    idle(page)
    with page.expect_download() as info:
        page.get_by_role("button", name="Network JSON").click()
    return tnviz.load_network(Path(info.value.path()).read_text())


def test_draw_a_three_tensor_mpo_with_the_mouse_then_undo(canvas_page, screenshot):
    page = canvas_page
    shot(page, "0_template")
    start_net = download_json(page)
    assert len(start_net.tensors) == 4, "the Designer opens on the 4-core MPO example"

    # ---- empty canvas
    page.get_by_test_id("clear").click()
    wait_for(lambda: "needs at least one tensor" in page.get_by_test_id("canvas-error").inner_text(), "the empty-network message")
    # ---- three tensors: "+ Tensor", then a click on the canvas
    for k in range(3):
        idle(page)  # the page above the canvas changes height as the network changes
        page.get_by_test_id("tool-add-tensor").click()
        flow = page.locator(".tn-flow").bounding_box()
        page.mouse.click(flow["x"] + 90 + 150 * k, flow["y"] + flow["height"] * 0.45)
        wait_for(lambda: summary(page).startswith(f"{k + 1} tensor{'' if k == 0 else 's'} ·"), f"{k + 1} tensors")
    assert [page.locator(f"[data-tensor={n}]").count() for n in "ABC"] == [1, 1, 1]

    # ---- legs: one input and one output per tensor, plus plain legs for the bonds
    for name, bond_legs in (("A", 1), ("B", 2), ("C", 1)):
        page.locator(f"[data-tensor={name}] .tn-name").click()
        page.get_by_test_id("add-input-leg").click()
        if name != "C":
            page.get_by_test_id("add-output-leg").click()
        for _ in range(bond_legs):
            page.get_by_test_id("add-leg").click()
    # C's output is marked by hand: a plain leg, then role "output"
    page.locator("[data-tensor=C] .tn-name").click()
    page.get_by_test_id("add-leg").click()
    wait_for(lambda: page.locator("[data-tensor=C] [data-role=open]").count() == 2, "C's plain legs")
    page.locator("[data-tensor=C] [data-role=open]").last.click()
    page.get_by_test_id("role-output").click()
    name_box = page.get_by_test_id("index-name")  # rename the index in place
    name_box.fill("o3")
    name_box.press("Enter")
    wait_for(lambda: page.locator("[data-leg-label=o3]").count() == 1, "the leg renamed to o3")
    wait_for(lambda: "3 in / 3 out legs" in summary(page), "3 inputs and 3 outputs")
    page.get_by_test_id("fit").click()
    steady_centre(page.locator("[data-tensor=C] .tn-name"))
    shot(page, "1_legs")

    # ---- bonds: drag a plain leg of A onto one of B, then B's other onto C's
    idle(page)
    drag(page, leg(page, "A", role="open"), leg(page, "B", role="open"))
    wait_for(lambda: "1 bond ·" in summary(page), "the first bond")
    idle(page)
    drag(page, leg(page, "B", role="open"), leg(page, "C", role="open"))
    wait_for(lambda: "2 bonds" in summary(page), "the second bond")

    # ---- sizes, set in place: two open legs and both bonds
    set_size(page, leg(page, "A", index="i1"), 2)
    set_size(page, page.locator("[data-leg-label=o3]"), 3)
    set_size(page, page.locator("[data-bond=b1]"), 5)
    set_size(page, page.locator("[data-bond=b2]"), 6)
    wait_for(lambda: page.locator("[data-bond=b2]").inner_text() == "b2=6", "the bond label b2=6")
    page.locator(".tn-flow .react-flow__pane").click(position={"x": 20, "y": 20})  # deselect

    expected = tnviz.TensorNetwork.build(
        [("A", ["i1", "o1", "b1"]), ("B", ["i2", "o2", "b1", "b2"]), ("C", ["i3", "b2", "o3"])],
        {"i1": 2, "o1": 4, "b1": 5, "i2": 4, "o2": 4, "b2": 6, "i3": 4, "o3": 3},
        ["i1", "i2", "i3"], ["o1", "o2", "o3"],
    )
    # ---- the numbers beside the canvas match tnviz.cost of the exported JSON
    def settled():  # both metrics of one finished rerun: mid-rerun the second may still be the old one
        idle(page)
        shown = numbers(page)
        return shown if shown["params"] == expected.params else None

    shown = wait_for(settled, f"parameters {expected.params}")
    assert page.get_by_test_id("canvas-error").count() == 0
    exported = download_json(page)
    assert same_layer(exported, expected), exported.to_json()
    assert set(exported.layout) == {"A", "B", "C"} and exported.layout["A"][0] < exported.layout["B"][0] < exported.layout["C"][0]
    cost = tnviz.cost(exported, batch=shown["batch"])
    assert shown["params"] == cost.params == 2 * 4 * 5 + 4 * 4 * 5 * 6 + 4 * 6 * 3
    assert shown["flops"] == human(cost.flops)  # the same figure as every other page (app.components.figures)
    assert cost.flops != tnviz.cost(start_net, batch=shown["batch"]).flops
    shot(page, "2_drawn")
    shot(page, "2_drawn_page", full=True)

    # ---- undo the last edit (b2 = 6 -> 4), then redo it
    page.get_by_test_id("undo").click()
    wait_for(lambda: page.locator("[data-bond=b2]").inner_text() == "b2=4", "undo to b2=4")
    undone = expected.with_sizes(b2=4)
    wait_for(lambda: numbers(page)["params"] == undone.params, f"parameters after undo {undone.params}")
    assert same_layer(download_json(page), undone)
    shot(page, "3_undone")
    page.get_by_test_id("redo").click()
    wait_for(lambda: numbers(page)["params"] == expected.params, "parameters after redo")

    # ---- the history survives a visit to another page: Costs shows the drawn layer, then undo works
    idle(page)
    page.get_by_role("link", name="Costs").click()
    wait_for(lambda: f"{expected.params:,}" in page.locator("[data-testid=stMetric]").filter(has_text="Parameters").first.inner_text(),
             "the Costs page with the drawn layer")
    page.get_by_role("link", name="Designer").click()
    page.wait_for_selector("[data-testid=tn-canvas] [data-bond=b2]", timeout=45_000)
    page.locator("[data-testid=tn-canvas]").scroll_into_view_if_needed()
    wait_for(lambda: page.get_by_test_id("undo").is_enabled(), "undo still available after coming back")
    page.get_by_test_id("undo").click()
    wait_for(lambda: page.locator("[data-bond=b2]").inner_text() == "b2=4", "undo after coming back")
    page.get_by_test_id("redo").click()
    wait_for(lambda: numbers(page)["params"] == expected.params, "parameters after the second redo")
    page.get_by_test_id("fit").click()
    block = page.locator("[data-testid=stHorizontalBlock]").filter(has=page.locator("[data-testid=tn-canvas]")).last
    steady_centre(page.locator("[data-tensor=C] .tn-name"))
    screenshot(page, "canvas", readme=True, clip=block.bounding_box())


def test_bad_edit_shows_message_and_keeps_drawing(canvas_page):
    page = canvas_page
    before = download_json(page)
    set_size(page, page.locator("[data-bond=b1]"), 0)
    err = wait_for(lambda: page.get_by_test_id("canvas-error").inner_text(), "the error on the canvas")
    assert "index sizes must be positive integers; index 'b1' has size 0" in err
    assert page.locator("[data-bond=b1]").inner_text() == "b1=0", "the drawing keeps the user's edit"
    assert download_json(page) == before, "the network stays the last valid one"
    shot(page, "4_error")
    page.get_by_test_id("undo").click()
    wait_for(lambda: page.get_by_test_id("canvas-error").count() == 0, "the error to go after undo")


def test_hyperedge_move_and_delete_with_the_mouse(canvas_page):
    page = canvas_page
    page.get_by_test_id("fit").click()
    idle(page)
    before = download_json(page)
    assert before.bonds and not before.hyperedges

    # a new leg on C dropped on A's end of bond b1: three tensors share b1
    page.locator("[data-tensor=C] .tn-name").click()
    page.get_by_test_id("add-leg").click()
    wait_for(lambda: page.locator("[data-tensor=C] [data-role=open]").count() == 1, "C's new leg")
    idle(page)
    drag(page, page.locator("[data-tensor=C] [data-role=open]"), leg(page, "A", index="b1"))
    wait_for(lambda: "1 hyperedge ·" in summary(page), "a hyperedge")
    assert page.locator(".tn-hyper").count() == 1, "the hyperedge is drawn with its junction dot"
    hyper = download_json(page)
    assert hyper.hyperedges == ("b1",) and set(hyper.tensors_on("b1")) == {"A", "B", "C"}
    wait_for(lambda: numbers(page)["params"] == tnviz.cost(hyper).params, "the numbers of the hyperedge network")
    shot(page, "5_hyperedge")
    page.get_by_test_id("undo").click()
    wait_for(lambda: "0 hyperedges" in summary(page), "undo of the hyperedge")
    page.get_by_test_id("undo").click()  # and of the new leg
    wait_for(lambda: page.locator("[data-tensor=C] [data-role=open]").count() == 0, "undo of C's new leg")

    # drag tensor C down: its position becomes the layout (y points up in layout units)
    idle(page)
    show_canvas(page)
    x0, y0 = centre(page.locator("[data-tensor=C] .tn-name"))
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 5, y0 + 60, steps=10)
    page.mouse.up()
    moved = wait_for(lambda: (lambda n: n if n.layout["C"][1] < before.layout["C"][1] - 0.3 else None)(download_json(page)),
                     "C's new position in the layout")
    assert abs(moved.layout["C"][0] - before.layout["C"][0]) < 0.3 and moved.layout["A"] == before.layout["A"]

    # select a tensor and press Delete; then undo
    page.locator("[data-tensor=C] .tn-name").click()
    page.get_by_test_id("tn-canvas").press("Delete")
    wait_for(lambda: summary(page).startswith("2 tensors"), "C deleted")
    assert page.locator("[data-tensor=C]").count() == 0
    page.keyboard.press("Control+z")
    wait_for(lambda: summary(page).startswith("3 tensors"), "C back after Ctrl+Z")

    # rename a tensor in place: double-click its name, type, Enter
    page.get_by_test_id("fit").click()
    idle(page)
    page.locator("[data-tensor=A] .tn-name").dblclick()
    box = page.locator("[data-tensor=A] .tn-name-input")
    box.fill("Core1")
    box.press("Enter")
    wait_for(lambda: page.locator("[data-tensor=Core1]").count() == 1, "the renamed tensor")
    renamed = wait_for(lambda: (lambda n: n if "Core1" in n.tensor_names else None)(download_json(page)), "Core1 in the JSON")
    assert renamed.tensor_names == ("Core1", "B", "C") and "Core1" in renamed.layout

    # inputs are numbered by their place in the input order: move i2 earlier, it becomes input 1
    idle(page)
    leg(page, "B", index="i2").click()
    page.get_by_test_id("order-up").click()
    wait_for(lambda: page.locator("[data-tensor=B]").get_by_text("in1 i2=4").count() == 1, "i2 labelled in1")
    reordered = wait_for(lambda: (lambda n: n if n.inputs[0] == "i2" else None)(download_json(page)), "i2 first in the JSON")
    assert reordered.inputs == ("i2", "i1", "i3") and reordered.outputs == renamed.outputs
