"""The Lesson page in a real headless Chromium, walked as a newcomer does at 1400 and at 800 px:
each step's action, a wrong one refused with its message first, the next step unlocked only after
the check, a visit to the Costs page and back keeping the progress, and the last step's accuracy.
Screenshots: artifacts/screenshots/lesson-{1400,800}.png (whole page) and lesson-{1400,800}-end.png."""
from __future__ import annotations

import time

import pytest

import tnviz

pytestmark = pytest.mark.browser

H3 = "h3"


def _wait_title(pg, text: str) -> None:
    pg.wait_for_function(
        "text => [...document.querySelectorAll('h3')].some(h => h.textContent.includes(text))", arg=text,
        timeout=90_000,
    )


def _titles(pg) -> list[str]:
    return [t.strip() for t in pg.locator(H3).all_inner_texts() if "Step " in t]


def _check(pg, wait_idle, label: str = "Check") -> None:
    pg.get_by_role("button", name=label).last.click()
    wait_idle(pg, timeout_ms=90_000)


def _error(pg) -> str:
    return pg.locator('[data-testid="stAlertContentError"]').last.inner_text()


def _type(pg, wait_idle, role: str, name: str, text: str) -> None:
    box = pg.get_by_role(role, name=name)
    box.fill(text)
    box.press("Enter")
    wait_idle(pg)


def _pick(pg, wait_idle, box: str, option: str) -> None:
    pg.get_by_role("combobox", name=box).click()
    pg.get_by_role("option", name=option, exact=True).click()
    wait_idle(pg)


def _add(pg, wait_idle, box: str, option: str) -> None:
    """Add ``option`` to a multiselect by typing it (its list opens off screen near the bottom)."""
    field = pg.get_by_role("combobox", name=box)
    chip = pg.get_by_role("button", name=f"Remove {option}")
    for _ in range(3):  # under load the filtered list can lag the typing: Enter then picked nothing
        field.click()
        field.fill(option)
        pg.get_by_role("option", name=option, exact=True).wait_for(timeout=30_000)
        pg.keyboard.press("Enter")
        pg.keyboard.press("Escape")
        wait_idle(pg)
        if chip.count():
            return
    chip.wait_for(timeout=10_000)  # fails here, naming the chip that never came


@pytest.mark.parametrize("width", [1400, 800])
def test_walk_every_step_of_the_lesson(browser, app_url, wait_idle, screenshot, width, expect):
    context = browser.new_context(viewport={"width": width, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    started = time.monotonic()
    try:
        if width >= 1000:
            pg.goto(app_url)
            wait_idle(pg, timeout_ms=90_000)
            pg.get_by_role("link", name="Lesson").click()
        else:  # the sidebar starts collapsed on a narrow window: the page's own address
            pg.goto(app_url + "/lesson")
        _wait_title(pg, "Step 1 of 6")
        wait_idle(pg, timeout_ms=90_000)
        assert _titles(pg) == ["Step 1 of 6: Pick a matrix"]

        # 1. no choice is refused, a layer passes
        _check(pg, wait_idle)
        assert "Pick one of the layers first" in _error(pg)
        _pick(pg, wait_idle, "Weight matrix", "fc2: 256 × 256 (65,536 numbers)")
        assert pg.get_by_role("combobox", name="Weight matrix").input_value().startswith("fc2")
        _check(pg, wait_idle)
        _wait_title(pg, "Step 2 of 6")

        # 2. legs whose product is not 256 are refused
        _type(pg, wait_idle, "textbox", "Input leg sizes (product 256)", "16,8")
        _type(pg, wait_idle, "textbox", "Output leg sizes (product 256)", "16,16")
        _check(pg, wait_idle)
        assert "The input legs 16 × 8 multiply to 128" in _error(pg)
        assert len(_titles(pg)) == 2
        _type(pg, wait_idle, "textbox", "Input leg sizes (product 256)", "16,16")
        _check(pg, wait_idle)
        _wait_title(pg, "Step 3 of 6")

        # 3. a rank that does not compress is refused; 32 passes and the MPO is drawn
        _type(pg, wait_idle, "spinbutton", "Bond rank r", "128")
        _check(pg, wait_idle)
        assert "not fewer than the dense matrix's 65,536" in _error(pg)
        _type(pg, wait_idle, "spinbutton", "Bond rank r", "32")
        _check(pg, wait_idle)
        _wait_title(pg, "Step 4 of 6")
        wait_idle(pg, timeout_ms=90_000)
        pg.locator('.tn-diagram svg text').first.wait_for(timeout=60_000)
        texts = pg.eval_on_selector_all('.tn-diagram svg text', "els => els.map(e => e.textContent)")
        assert {"A", "B", "b1=32"} <= set(texts), texts
        expect(pg.locator(".katex").nth(2)).to_be_attached(timeout=60_000)  # the formulas are typeset

        if width >= 1000:  # the Costs page and back through the navigation: the progress and the answers stay
            pg.get_by_role("link", name="Costs").click()
            pg.wait_for_selector('[data-testid="stPlotlyChart"]')
            wait_idle(pg, timeout_ms=90_000)
            pg.get_by_role("link", name="Lesson").click()
            _wait_title(pg, "Step 4 of 6")
            wait_idle(pg)
            assert _titles(pg)[-1] == "Step 4 of 6: Count the parameters"
            assert pg.get_by_role("spinbutton", name="Bond rank r").input_value() == "32"
            assert pg.get_by_role("textbox", name="Input leg sizes (product 256)").input_value() == "16,16"

        # 4. a wrong count is refused; the right one shows the Costs page's figures
        _type(pg, wait_idle, "spinbutton", "Parameters of the MPO", "1000")
        _check(pg, wait_idle)
        assert "1,000 is not the count" in _error(pg)
        net = tnviz.mpo([16, 16], [16, 16], ranks=32)
        _type(pg, wait_idle, "spinbutton", "Parameters of the MPO", str(net.params))
        _check(pg, wait_idle)
        _wait_title(pg, "Step 5 of 6")
        wait_idle(pg, timeout_ms=90_000)
        # Streamlit loads the metric tile's code on its first use (its own JS chunk), after the run
        # that drew it: wait for the tile, not only for the run
        pg.locator('[data-testid="stMetric"]').filter(has_text="Parameters").first.wait_for(timeout=60_000)
        tiles = pg.locator('[data-testid="stMetric"]').all_inner_texts()
        assert any("Parameters" in t and f"{net.params:,}" in t for t in tiles), tiles

        # 5. summing an open leg is refused; the bond passes and the matrices are compared
        _add(pg, wait_idle, "Sum over", "i1")
        _check(pg, wait_idle)
        assert "i1 is an open leg" in _error(pg)
        pg.get_by_role("button", name="Remove i1").click()
        wait_idle(pg)
        _add(pg, wait_idle, "Sum over", "b1")
        _check(pg, wait_idle)
        _wait_title(pg, "Step 6 of 6")
        wait_idle(pg, timeout_ms=90_000)  # the title can arrive before the rest of the run under load
        pg.locator('[data-testid="stImage"] img').nth(2).wait_for(timeout=60_000)
        assert pg.locator('[data-testid="stImage"] img').count() == 3
        pg.locator('[data-testid="stMetric"]').filter(has_text="Relative error").first.wait_for(timeout=60_000)
        tiles = pg.locator('[data-testid="stMetric"]').all_inner_texts()
        assert any("Relative error" in t for t in tiles), tiles

        # 6. put it in the model: rank 32 on fc2 keeps the accuracy within 3 points
        _check(pg, wait_idle, "Replace fc2 and measure")
        pg.get_by_text("Done: fc2 is a 2-tensor MPO of rank 32").wait_for()
        assert all(t.startswith("✓") for t in _titles(pg)) and len(_titles(pg)) == 6
        elapsed = time.monotonic() - started
        assert elapsed < 600, f"the walk took {elapsed:.0f} s"

        # nothing is wider than the window (no sideways scrolling at 800 px)
        overflow = pg.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page is {overflow} px wider than the window"
        pg.get_by_text("Done: fc2 is a 2-tensor MPO").scroll_into_view_if_needed()
        pg.wait_for_timeout(300)
        screenshot(pg, f"lesson-{width}-end")
        # the whole lesson in one picture: the app scrolls inside its own container, so grow the window
        height = pg.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
        pg.set_viewport_size({"width": width, "height": min(int(height) + 100, 9000)})
        pg.wait_for_timeout(800)
        screenshot(pg, f"lesson-{width}")
    except Exception:
        screenshot(pg, f"FAILED-lesson-{width}", full_page=True)
        raise
    finally:
        context.close()
