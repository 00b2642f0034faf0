"""The Spectra page in a real headless Chromium: the bundled MiniLM opens; upload a small
.safetensors through the file chooser, see the spectra chart with its cut, move the rank slider
with the keyboard and see the cut and the error follow; the trade-off chart of every method; the
chart of the networks method auto tries for the weight.
(The trade-off runs on the small weight: CP-ALS sweeps on MiniLM take minutes on a loaded
2-core machine.)  Screenshot:
artifacts/screenshots/spectra.png, copied to assets/screenshots/spectra.png for the README, and
artifacts/screenshots/spectra_search.png."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.browser

CHART = '[data-testid="stPlotlyChart"]'


def _small_file(folder: Path) -> Path:
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(48, 32, generator=g))
    V, _ = torch.linalg.qr(torch.randn(32, 32, generator=g))
    w = (U * 0.8 ** torch.arange(32.0)) @ V.T
    path = folder / "small.safetensors"
    save_file({"fc1.weight": w.contiguous(), "fc1.bias": torch.zeros(48)}, str(path))
    return path


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def _cut_x(page) -> str:
    """The x pixel position of the first cut line drawn in the spectra chart."""
    return page.locator(f"{CHART} .shapelayer path").first.get_attribute("d")


def _open_spectra(page, app_url, wait_idle) -> None:
    """The Spectra page on the bundled MiniLM, its chart drawn."""
    page.goto(app_url)
    wait_idle(page, timeout_ms=120_000)
    page.get_by_role("link", name="Spectra").click()
    page.get_by_text("bundled all-MiniLM-L6-v2").first.wait_for(timeout=120_000)
    page.wait_for_selector(f"{CHART} .main-svg", timeout=120_000)
    wait_idle(page, timeout_ms=120_000)


def test_upload_moves_the_cut_and_shows_the_tradeoff(page, app_url, wait_idle, screenshot, tmp_path, expect):
    _open_spectra(page, app_url, wait_idle)
    expect(page.locator(f"{CHART} .scatterlayer .trace")).to_have_count(4, timeout=60_000)  # MiniLM, two bonds: kept + discarded each

    # an upload through the file chooser replaces the weights; the slider moves the cut
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(_small_file(tmp_path)))
    page.get_by_text("upload small.safetensors").first.wait_for(timeout=60_000)
    wait_idle(page, timeout_ms=60_000)
    chart = page.locator(CHART).first
    chart.locator(".main-svg").first.wait_for()
    expect(chart.locator(".scatterlayer .trace")).to_have_count(2, timeout=60_000)  # one bond: kept + discarded values
    expect(page.locator(f"{CHART} .shapelayer path").first).to_be_attached(timeout=60_000)  # the cut
    error_before, params_before, cut_before = _metric(page, "Relative error"), _metric(page, "Parameters"), _cut_x(page)

    thumb = page.locator('[data-testid="stSlider"] input[type="range"]').first
    assert thumb.input_value() == "8"
    thumb.focus()
    thumb.press("Home")  # one key, one rerun: rank 1
    page.wait_for_function("() => document.querySelector('[data-testid=\"stSlider\"] input[type=\"range\"]').value === '1'")
    page.wait_for_function(
        "before => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
        ".find(e => e.textContent.includes('Relative error')); "
        "return m && m.querySelector('[data-testid=\"stMetricValue\"]').textContent !== before; }",
        arg=error_before, timeout=60_000,
    )
    wait_idle(page, timeout_ms=60_000)
    assert float(_metric(page, "Relative error")) > float(error_before)  # fewer values kept, more error
    assert int(_metric(page, "Parameters").replace(",", "")) < int(params_before.replace(",", ""))
    assert _cut_x(page) != cut_before
    thumb.focus()
    for _ in range(5):  # back up to a middle rank for the picture (each key is a rerun: wait between)
        value = thumb.input_value()
        thumb.press("ArrowRight")
        page.wait_for_function(
            "v => document.querySelector('[data-testid=\"stSlider\"] input[type=\"range\"]').value !== v", arg=value)
        wait_idle(page, timeout_ms=60_000)

    # the trade-off of every method, and the screenshot for the README
    page.get_by_role("button", name="Compute the trade-off").click()
    page.get_by_text("Pareto front:").first.wait_for(timeout=300_000)
    wait_idle(page, timeout_ms=120_000)
    expect(page.locator(CHART)).to_have_count(2, timeout=60_000)
    expect(page.locator(CHART).nth(1).locator(".scatterlayer .trace").nth(6)).to_be_attached(timeout=60_000)  # 5 methods, front, current
    page.mouse.move(5, 5)  # no tooltip over the shot
    page.set_viewport_size({"width": 1400, "height": 2500})
    page.wait_for_timeout(800)
    screenshot(page, "spectra", readme=True)  # copied to assets/ only with TNVIZ_UPDATE_SCREENSHOTS=1

    # (issue 19) the networks method auto tries for this weight, drawn on their chart
    page.get_by_role("button", name="Search the networks").click()
    page.get_by_text("Chosen:").first.wait_for(timeout=300_000)
    wait_idle(page, timeout_ms=120_000)
    expect(page.locator(CHART)).to_have_count(3, timeout=60_000)
    search = page.locator(CHART).nth(2)
    search.locator(".main-svg").first.wait_for()
    expect(search).to_contain_text("candidates at", use_inner_text=True, timeout=60_000)  # the chart's title
    expect(search.locator(".scatterlayer .trace").nth(5)).to_be_attached(timeout=60_000)  # methods, front, runner-up, chosen
    expect(search.locator(".scatterlayer .trace .point").nth(6)).to_be_attached(timeout=60_000)  # every candidate, the two marks
    expect(search.locator(".shapelayer path").first).to_be_attached(timeout=60_000)  # the budget line
    search.scroll_into_view_if_needed()
    page.mouse.move(5, 5)
    page.wait_for_timeout(500)
    screenshot(page, "spectra_search")


def test_data_aware_toggle_on_the_bundled_minilm(page, app_url, wait_idle):
    """The data-aware switch calibrates MiniLM once and shows the error on those inputs beside the weight error."""
    _open_spectra(page, app_url, wait_idle)
    assert page.locator('[data-testid="stMetric"]').filter(has_text="Error on calibration inputs").count() == 0
    page.get_by_text("Data-aware (minimise the error on calibration inputs)").click()
    page.locator('[data-testid="stMetric"]').filter(has_text="Error on calibration inputs").first.wait_for(timeout=300_000)
    wait_idle(page, timeout_ms=300_000)
    on_data = float(_metric(page, "Error on calibration inputs"))
    weights = float(_metric(page, "Relative error"))
    assert 0 < on_data < weights  # the cut minimises the error on the inputs, not on the weights
    assert page.get_by_text("data-aware: the singular values are those of W·L").count() == 1


def test_leg_factorization_stays_open_after_an_edit(page, app_url, wait_idle):
    """Issue 17: the expander closed itself after every edit of the legs (its label changed)."""
    _open_spectra(page, app_url, wait_idle)
    expander = page.locator('[data-testid="stExpander"]').filter(has_text="Leg factorization").first
    expander.locator("summary").click()
    legs = expander.get_by_role("textbox", name="Input legs")
    legs.wait_for()
    automatic = legs.input_value()
    sizes = [int(v) for v in automatic.split(",")]
    merged = ",".join(map(str, [sizes[0] * sizes[1], *sizes[2:]]))  # the same product, one leg fewer
    legs.fill(merged)
    legs.press("Enter")
    page.get_by_text(f"Legs {merged} →").first.wait_for(timeout=60_000)
    wait_idle(page, timeout_ms=60_000)
    assert legs.is_visible() and legs.input_value() == merged  # still open, showing the edit
    expander.get_by_role("button", name="Automatic").click()
    page.get_by_text(f"Legs {automatic} →").first.wait_for(timeout=60_000)
    wait_idle(page, timeout_ms=60_000)
    assert legs.is_visible()
