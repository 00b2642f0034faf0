"""A page opened by its own URL goes through the router: sections, sidebar and the shared state are
there, as when it is reached from the navigation.  (With the pages in a folder named ``pages/``,
Streamlit served a direct link in its old auto-discovered mode, without the router.)"""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("path,heading", [("costs", "Costs"), ("teach", "Teach"), ("stack_view", "Stack view")])
def test_direct_links_open_the_page_inside_the_router(page, app_url, wait_idle, path, heading):
    page.goto(f"{app_url}/{path}")
    wait_idle(page)
    body = page.inner_text("body")
    assert "No module named" not in body and "Traceback" not in body
    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    assert "Device:" in sidebar and "Network:" in sidebar  # the router's sidebar
    for section in ("Design", "Compress", "Learn"):
        assert section in sidebar
    assert page.get_by_role("heading", name=heading).first.is_visible()
