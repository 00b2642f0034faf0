"""Layout at a narrow (800 px) and a laptop (1400 px) window: the sidebar does not eat a narrow
page, the canvas's drawing area takes the width it is given and refits when that changes, the
Draw section starts on the first screen, and no metric, label or button is cut to "…"."""
from __future__ import annotations

import pytest

#: Elements whose text must never be cut: metric values and labels, button labels.
ELIDED_JS = """() => {
  const out = [];
  const sel = '[data-testid="stMetricValue"], [data-testid="stMetricValue"] *, '
            + '[data-testid="stMetricLabel"], [data-testid="stMetricLabel"] *, '
            + '[data-testid="stMainBlockContainer"] button p, [data-testid="stCheckbox"] label p, '
            + '[data-testid="stWidgetLabel"] p';
  for (const el of document.querySelectorAll(sel)) {
    if (!el.offsetParent || !el.textContent.trim()) continue;         // hidden (closed tab or expander)
    const cut = el.scrollWidth > el.clientWidth + 1;
    const ellipsis = getComputedStyle(el).textOverflow === 'ellipsis' && el.scrollWidth > el.clientWidth;
    if (cut || ellipsis) out.push(`${el.textContent.trim().slice(0, 40)} (${el.scrollWidth} > ${el.clientWidth})`);
  }
  return out;
}"""

#: Every tensor's box lies inside the drawing area (after a fit).
NODES_INSIDE_JS = """() => {
  const flow = document.querySelector('[data-testid="tn-flow"]').getBoundingClientRect();
  const nodes = [...document.querySelectorAll('.react-flow__node-tensor')];
  return nodes.length > 0 && nodes.every(n => {
    const r = n.getBoundingClientRect();
    return r.left >= flow.left - 1 && r.right <= flow.right + 1 && r.width > 0;
  });
}"""

#: The app's page-wide CSS (layout.py: metric tiles, buttons and labels that wrap, the padding),
#: sent with st.html, is in the page.
PAGE_CSS_IN_JS = """() => [...document.querySelectorAll('[data-testid="stHtml"] style')]
    .some(s => s.textContent.includes('stMetricLabel'))"""


def _wait_drawn(pg, expect, *present: str) -> None:
    """After a run: wait until the page is drawn in full.  Streamlit loads the code of many elements
    (metric, data grid, button, checkbox, widget labels, st.html with the page CSS, Markdown's HTML
    and formula plugins) from a JS chunk on their first use, showing a placeholder skeleton until it
    is in: on a fresh page they mount up to a second or more after the run ends.  The checks here
    read every such element at once (one not mounted yet would go unchecked), and whether a label
    is cut depends on the page CSS."""
    pg.wait_for_function(PAGE_CSS_IN_JS, timeout=60_000)
    for selector in present:
        pg.locator(selector).first.wait_for(state="attached", timeout=60_000)
    expect(pg.locator('[data-testid="stSkeleton"]')).to_have_count(0, timeout=60_000)


#: (viewport width, least drawing width): the issue measured 83 px and 440 px before.
WIDTHS = [(800, 450), (1400, 600)]


def _new_page(browser, width):
    context = browser.new_context(viewport={"width": width, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(45_000)
    return context, pg


#: The sidebar's visible width on the page (0 when collapsed: it slides off to the left).
SIDEBAR_SHOWN_JS = """() => {
  const r = document.querySelector('[data-testid="stSidebar"]').getBoundingClientRect();
  return Math.max(0, Math.round(r.right));
}"""


@pytest.mark.parametrize("width,least", WIDTHS)
def test_designer_layout_fits_the_window(browser, app_url, wait_idle, screenshot, expect, width, least):
    context, pg = _new_page(browser, width)
    try:
        pg.goto(app_url)
        wait_idle(pg)
        pg.wait_for_selector('[data-testid="tn-flow"] .react-flow__node-tensor')
        _wait_drawn(pg, expect, '[data-testid="stMetricValue"]')
        # narrow: the sidebar starts collapsed (and stays openable); wide: open
        if width < 1000:
            pg.wait_for_function(f"() => ({SIDEBAR_SHOWN_JS})() === 0")
        else:
            assert pg.evaluate(SIDEBAR_SHOWN_JS) <= 260  # open, and narrower than Streamlit's 300 px
        flow_width = pg.locator('[data-testid="tn-flow"]').evaluate("el => el.clientWidth")
        assert flow_width >= least, f"drawing area {flow_width} px at a {width} px window"
        pg.wait_for_function(NODES_INSIDE_JS)
        if width >= 1400:  # the Draw section starts on the first screen
            top = pg.get_by_role("heading", name="Draw").bounding_box()["y"]
            assert top < 1000, f"Draw starts at y={top}"
        assert pg.evaluate(ELIDED_JS) == []
        screenshot(pg, f"layout-designer-{width}")
        pg.locator('[data-testid="tn-canvas"]').scroll_into_view_if_needed()
        screenshot(pg, f"layout-canvas-{width}")

        # Costs and Bond features (most metric tiles), Tensorize (checkboxes, the layer table)
        for link, name in (("Costs", "costs"), ("Bond features", "bond-features"), ("Tensorize", "tensorize")):
            pg.goto(f"{app_url}/{name.replace('-', '_')}")
            wait_idle(pg, timeout_ms=90_000)
            pg.wait_for_selector('[data-testid="stMetricValue"], [data-testid="stDataFrame"]', timeout=90_000)
            if name == "tensorize":  # the checkboxes; the rules editor and the layer table, each drawn in full
                _wait_drawn(pg, expect, '[data-testid="stCheckbox"]',
                            '[data-testid="stDataFrame"] .dvn-scroller >> nth=1')
            else:
                _wait_drawn(pg, expect, '[data-testid="stMetricValue"]')
            assert pg.evaluate(ELIDED_JS) == [], link
            if name == "tensorize" and width >= 1400:  # the layer table shows every column
                widths = pg.locator('[data-testid="stDataFrame"] .dvn-scroller').last.evaluate(
                    "el => [el.scrollWidth, el.clientWidth]")
                assert widths[0] <= widths[1] + 1, f"layer table scrolls: {widths}"
            screenshot(pg, f"layout-{name}-{width}")
    finally:
        context.close()


def test_canvas_refits_when_the_window_narrows(browser, app_url, wait_idle):
    context, pg = _new_page(browser, 1400)
    try:
        pg.goto(app_url)
        wait_idle(pg)
        pg.wait_for_selector('[data-testid="tn-flow"] .react-flow__node-tensor')
        wide = pg.locator('[data-testid="tn-flow"]').evaluate("el => el.clientWidth")
        pg.wait_for_function(NODES_INSIDE_JS)
        pg.set_viewport_size({"width": 800, "height": 1000})  # the sidebar stays open
        pg.wait_for_function(f"() => document.querySelector('[data-testid=\"tn-flow\"]').clientWidth < {wide - 50}")
        pg.wait_for_function(NODES_INSIDE_JS)  # refitted: every tensor still inside the narrower area
    finally:
        context.close()
