"""The Stack view page in a real headless Chromium: switch the equivalent view, apply a gauge move
(a new random X), and see the on-screen proof stay at rounding level (~1e-15) throughout."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser

PROOF = re.compile(r"equals the dense matrix to ([0-9.]+e[-+]\d+)")


def _proof(page) -> float:
    text = page.locator('[data-testid="stAlert"]').filter(has_text="equals the dense matrix").inner_text()
    match = PROOF.search(text)
    assert match, text
    return float(match.group(1))


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]').filter(has_text=label)
    return box.locator('[data-testid="stMetricValue"]').inner_text().strip()


def _pick_view(page, wait_idle, name: str) -> None:
    box = page.get_by_role("combobox", name="Equivalent view")
    box.evaluate("e => e.scrollIntoView({block: 'center'})")  # room below for the option list
    box.click()
    page.get_by_role("option", name=name, exact=True).click()
    page.get_by_text(f"{name}:", exact=False).first.wait_for()
    wait_idle(page)


def test_switch_view_and_gauge_move_keep_the_proof(page, app_url, wait_idle, screenshot):
    page.goto(app_url + "/stack_view")
    wait_idle(page, timeout_ms=90_000)
    assert _proof(page) < 1e-12
    layers_before = _metric(page, "Layers")

    _pick_view(page, wait_idle, "grouped")
    assert _metric(page, "Layers") != layers_before  # neighbouring cores merged: fewer layers
    assert _proof(page) < 1e-12

    _pick_view(page, wait_idle, "gauge")
    changed = float(_metric(page, "Tensors changed by"))
    assert changed > 1e-3  # the gauge move really changed the tensors ...
    assert _proof(page) < 1e-12  # ... and not the matrix
    shown = _metric(page, "Tensors changed by")
    page.get_by_role("button", name="New random X").click()
    page.wait_for_function(
        "v => [...document.querySelectorAll('[data-testid=stMetric]')].some(m => m.innerText.includes("
        "'Tensors changed by') && !m.innerText.includes(v))", arg=shown)
    wait_idle(page)
    assert float(_metric(page, "Tensors changed by")) != changed  # a different X
    assert _proof(page) < 1e-12
    page.locator('[data-testid="stMainBlockContainer"]').evaluate("e => e.scrollIntoView({block: 'start'})")
    screenshot(page, "stack_view", readme=True)  # copied to assets/ only with TNVIZ_UPDATE_SCREENSHOTS=1
