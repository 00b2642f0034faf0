"""AppTest fixtures: run the real router, then switch to a page."""
from __future__ import annotations

import re
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


_DIAGRAM = re.compile(r'^<div class="tn-diagram" data-dot="([0-9a-f]{16})"')


def diagrams(at) -> list[tuple[str, str]]:
    """The page's tensor diagrams (tnviz_app.components.diagram) in page order: (the digest of the
    DOT text each was drawn from, its markup with the SVG)."""
    found = [(_DIAGRAM.match(m.value), m.value) for m in at.markdown]
    return [(match[1], markup) for match, markup in found if match]


def diagram_spec(at, k: int = 0) -> str:
    """The markup (inline SVG) of the page's k-th diagram: its labels, ids and colours."""
    found = diagrams(at)
    assert len(found) > k, f"the page has {len(found)} diagrams"
    return found[k][1]


def diagram_dots(at) -> list[str]:
    """The DOT digests of the page's diagrams, to compare with :func:`dot_of` of what is expected."""
    return [digest for digest, _ in diagrams(at)]


def dot_of(net_or_scene, **options) -> str:
    """The digest of :func:`tnviz.render.to_dot` of a network: what its diagram carries."""
    from tnviz.render import to_dot
    from tnviz_app.components.diagram import dot_digest

    return dot_digest(to_dot(net_or_scene, **options))


def current_network(at):
    return at.session_state["tnviz.network"]


def open_build_tab(at, label: str):
    """Open the Designer's ``label`` build tab (Einsum, Upload JSON, Examples) as a click does: the
    page draws a closed tab's widgets only once it is open."""
    at.session_state["designer.build_tab"] = label
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at
