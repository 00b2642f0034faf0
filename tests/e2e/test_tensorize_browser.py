"""The Tensorize page in a real headless Chromium: upload a .safetensors file through the file
chooser, run a compression, download the zip and check what it holds. A second visit runs the
digits MLP demo for the screenshot (assets/screenshots/tensorize.png)."""
from __future__ import annotations

import json
import zipfile

import pytest
import torch

from tnviz.model.io import save_safetensors

pytestmark = pytest.mark.browser



def _open(page, app_url, wait_idle) -> None:
    page.goto(app_url)
    wait_idle(page)
    page.get_by_role("link", name="Tensorize").click()
    wait_idle(page, timeout_ms=120_000)
    page.get_by_role("button", name="Run compression").wait_for(timeout=120_000)


def test_upload_compress_and_download_zip(page, app_url, wait_idle, screenshot, tmp_path):
    g = torch.Generator().manual_seed(0)
    weights = {"encoder.weight": torch.randn(96, 64, generator=g), "encoder.bias": torch.zeros(96),
               "head.weight": torch.randn(16, 96, generator=g)}
    path = save_safetensors(weights, tmp_path / "upload.safetensors")
    _open(page, app_url, wait_idle)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(path))
    page.get_by_text("Uploaded: upload.safetensors", exact=True).wait_for(timeout=60_000)  # the source radio says so
    wait_idle(page)
    page.get_by_role("button", name="Run compression").click()
    download_button = page.get_by_role("button", name="Download compressed model (zip)")
    download_button.wait_for(timeout=120_000)
    wait_idle(page)
    with page.expect_download() as info:
        download_button.click()
    target = tmp_path / "out.zip"
    info.value.save_as(str(target))
    with zipfile.ZipFile(target) as archive:
        assert sorted(archive.namelist()) == ["model.safetensors", "tnviz.json"]
        report = json.loads(archive.read("tnviz.json"))
        blob = archive.read("model.safetensors")
    assert report["format"] == "tnviz.compressed"
    assert "encoder.weight" in [layer["name"] for layer in report["layers"]]
    from safetensors.torch import load

    tensors = load(blob)
    assert torch.equal(tensors["encoder.bias"], weights["encoder.bias"])  # untouched, bit for bit
    assert any(name.startswith("encoder.weight::") for name in tensors)
    assert report["totals"]["params_after"] < report["totals"]["params_before"]


def test_demo_run_screenshot(page, app_url, wait_idle, screenshot):
    _open(page, app_url, wait_idle)
    page.get_by_role("button", name="Run compression").click()
    page.get_by_text("Parameters per layer").first.wait_for(timeout=120_000)
    wait_idle(page)
    page.get_by_role("heading", name="Result").evaluate("h => h.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(600)
    screenshot(page, "tensorize", readme=True)  # copied to assets/ only with TNVIZ_UPDATE_SCREENSHOTS=1


def test_method_auto_chosen_in_the_rules_table_draws_its_search(page, app_url, wait_idle, screenshot):
    """A person picks "auto" in the rules table's method cell (the grid's own editor, by keyboard),
    runs the digits demo and sees the search: the candidates chart with its Pareto front, and the
    chosen network and runner-up named."""
    _open(page, app_url, wait_idle)
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.scroll_into_view_if_needed()
    box = grid.bounding_box()
    # the first row's first cell (below the 36 px header), then one to the right: the method
    page.mouse.click(box["x"] + 120, box["y"] + 53)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")  # opens the cell's select
    page.wait_for_timeout(400)
    page.keyboard.type("auto")
    page.keyboard.press("Enter")
    page.wait_for_timeout(400)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] - 40)  # leave the grid: the edit is committed
    wait_idle(page)
    page.get_by_role("button", name="Run compression").click()
    page.get_by_role("heading", name="Search (method auto)").wait_for(timeout=180_000)
    wait_idle(page)
    # the plotly charts' code is loaded on its first use (this run) and each figure is drawn after its
    # chart mounts: until the search chart is drawn, the last drawn chart is the error chart above it
    search_chart = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="candidates at its budget")
    search_chart.locator(".legendtext").first.wait_for(state="attached", timeout=60_000)
    chart = page.locator('[data-testid="stPlotlyChart"]').filter(has=page.locator(".main-svg")).last
    chart.scroll_into_view_if_needed()
    legend = [t.text_content() or "" for t in chart.locator(".legendtext").all()]
    assert any("Pareto" in t for t in legend), legend
    assert page.get_by_text("Runner-up (best of another method):").count() == 1
    screenshot(page, "tensorize-auto-search")
