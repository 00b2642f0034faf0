"""AppTest fixtures: run the real router, then switch to a page."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "tnviz_app" / "streamlit_app.py"
if str(ROOT) not in sys.path:  # the tests import tnviz_app.* helpers directly
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def open_page() -> Callable[..., "AppTest"]:  # noqa: F821
    """``open_page("views/costs.py")`` -> an AppTest that has run the app and shows that page."""
    from streamlit.testing.v1 import AppTest

    def _open(page: str | None = None, *, network=None) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=60)
        if network is not None:
            at.session_state["tnviz.network"] = network
            at.session_state["tnviz.network_source"] = "test"
        at.run()
        if page is not None:
            at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    return _open


def diagram_spec(at) -> str:
    """The DOT text of the page's first graphviz chart."""
    charts = at.get("graphviz_chart")
    assert charts, "no diagram on the page"
    return charts[0].proto.spec


def current_network(at):
    return at.session_state["tnviz.network"]


def open_build_tab(at, label: str):
    """Open the Designer's ``label`` build tab (Einsum, Upload JSON, Examples) as a click does: the
    page draws a closed tab's widgets only once it is open."""
    at.session_state["designer.build_tab"] = label
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at
