"""The Designer and Costs pages in a real headless Chromium against a running server: the diagram
is rendered as SVG and follows a template parameter; the Costs page draws its plotly charts for
the same network.  Screenshots: artifacts/screenshots/{designer,costs}.png (the Designer one is
copied to assets/screenshots/designer.png for the README when TNVIZ_UPDATE_SCREENSHOTS=1)."""
from __future__ import annotations


import pytest

import tnviz

pytestmark = pytest.mark.browser

DIAGRAM = '.tn-diagram svg'


def _diagram_texts(page) -> list[str]:
    return page.eval_on_selector_all(f"{DIAGRAM} text", "els => els.map(e => e.textContent)")


def _type_ranks(page, wait_idle, ranks: int):
    """Type ``ranks`` into the Template tab's Ranks field and wait until the diagram shows it."""
    field = page.get_by_role("textbox", name="Ranks", exact=True)
    field.fill(str(ranks))
    field.press("Enter")
    page.wait_for_function(
        "([sel, label]) => [...document.querySelectorAll(sel + ' text')].some(t => t.textContent === label)",
        arg=[DIAGRAM, f"b1={ranks}"],
    )
    wait_idle(page)
    return field


def test_designer_diagram_follows_a_parameter_and_costs_draw_charts(page, app_url, wait_idle, screenshot, expect):
    page.goto(app_url)
    wait_idle(page)
    page.wait_for_selector(f"{DIAGRAM} g.node")
    before = page.inner_html(DIAGRAM)
    texts = _diagram_texts(page)
    default = tnviz.build_template("MPO / tensor train")
    assert {"A", "B", "C", "D", "b1=4", "i1=8", "o4=8"} <= set(texts), texts
    # bonds are drawn in red, thicker than 1px
    assert "#d62728" in before.lower()

    ranks = _type_ranks(page, wait_idle, 16)
    ranks.blur()
    after = page.inner_html(DIAGRAM)
    assert after != before
    texts = _diagram_texts(page)
    assert "b1=16" in texts and "b1=4" not in texts
    params = tnviz.mpo(default.in_dims, default.out_dims, ranks=16).params
    # the count is a metric tile, whose code Streamlit loads on first use (it can mount after the run
    # ends): wait for it to show, where is_visible() answered at once
    expect(page.get_by_text(f"{params:,}", exact=True).first).to_be_visible(timeout=60_000)
    screenshot(page, "designer", readme=True)

    page.get_by_role("link", name="Costs").click()
    page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg')
    wait_idle(page)
    expect(page.locator('[data-testid="stPlotlyChart"]')).to_have_count(2, timeout=60_000)
    expect(page.locator('[data-testid="stPlotlyChart"] .scatterlayer .trace').nth(2)).to_be_attached(timeout=60_000)  # strategies
    # the Costs page uses the network edited on the Designer (shared session state)
    metric = page.locator('[data-testid="stMetric"]').filter(has_text="Parameters")
    assert f"{params:,}" in metric.inner_text()
    page.locator('[data-testid="stPlotlyChart"]').first.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    screenshot(page, "costs")


def test_build_tabs_draw_their_fields_when_opened_and_keep_what_was_typed(page, app_url, wait_idle, expect):
    """Upload JSON and Examples are drawn only while open (a tab click reruns the page): a real
    click shows the tab's fields, and a rank typed in Template is still there on return, two tabs
    later (it came back empty while Template was drawn only when open: persist.py, designer.py)."""
    page.goto(app_url)
    wait_idle(page)
    page.wait_for_selector(f"{DIAGRAM} g.node")
    _type_ranks(page, wait_idle, 6)
    page.get_by_role("tab", name="Examples").click()
    expect(page.get_by_text("Bundled example")).to_be_visible(timeout=30_000)
    page.get_by_role("tab", name="Upload JSON").click()
    expect(page.locator('[data-testid="stFileUploaderDropzone"]')).to_be_visible(timeout=30_000)
    page.get_by_role("tab", name="Template").click()
    ranks = page.get_by_role("textbox", name="Ranks", exact=True)
    expect(ranks).to_be_visible(timeout=30_000)
    wait_idle(page)
    assert ranks.input_value() == "6"
    assert "b1=6" in _diagram_texts(page)
