"""The Bond features page in a real headless Chromium: the plotly charts draw (heatmap, spectrum,
digit mosaic), the bond is highlighted on the diagram, and a gauge move shows its report.
Screenshot: artifacts/screenshots/bond_features.png, copied to assets/screenshots/ for the README."""
from __future__ import annotations


import pytest

from tnviz.render import PALETTE

pytestmark = pytest.mark.browser

PLOT = '[data-testid="stPlotlyChart"]'
CHART = '.tn-diagram'


def test_bond_features_draws_charts_and_the_gauge_report(page, app_url, wait_idle, screenshot, expect):
    page.goto(app_url)
    wait_idle(page)
    page.get_by_role("link", name="Bond features").click()
    wait_idle(page, timeout_ms=90_000)
    page.wait_for_selector(f"{PLOT} >> nth=2 >> .main-svg", timeout=60_000)
    # heatmap, spectrum and the digit mosaic are drawn as plotly figures with heatmap/bar layers
    expect(page.locator(f"{PLOT} >> nth=0").locator(".hm, image").first).to_be_attached(timeout=60_000)
    expect(page.locator(f"{PLOT} >> nth=1 >> .bars path")).to_have_count(16, timeout=60_000)  # a bar per channel of b2 (max rank 16)
    # the chosen bond is drawn in the highlight colour (the diagram is Markdown with HTML, drawn once
    # Streamlit has loaded its HTML plugin: wait for its bonds before reading them)
    page.locator(f"{CHART} g.edge path").first.wait_for(state="attached", timeout=60_000)
    strokes = page.eval_on_selector_all(f"{CHART} >> g.edge path", "ps => ps.map(p => (p.getAttribute('stroke') || '').toLowerCase())")
    assert PALETTE["highlight"].lower() in strokes

    page.get_by_text("a random invertible X", exact=False).first.click()
    wait_idle(page, timeout_ms=90_000)
    page.wait_for_selector('[data-testid="stAlertContentSuccess"]', timeout=60_000)
    assert "the same model" in page.locator('[data-testid="stAlertContentSuccess"]').first.inner_text()
    # the grid is drawn by a frontend chunk loaded on first use, so it may appear after the run ends
    expect(page.locator('[data-testid="stDataFrame"]')).to_have_count(1, timeout=60_000)

    # the top of the page: controls, metrics, diagram, heatmap, spectrum and digits
    page.set_viewport_size({"width": 1400, "height": 1450})
    page.locator("h1").first.evaluate("h => h.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(800)
    screenshot(page, "bond_features", readme=True)  # copied to assets/ only with TNVIZ_UPDATE_SCREENSHOTS=1
