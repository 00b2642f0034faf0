"""AppTest of the Gallery page: every figure drawn with its caption and numbers; 'Open in Designer'
makes the entry the current network and shows the Designer."""
from __future__ import annotations

import pytest

from tests.app.conftest import current_network, diagram_dots, dot_of
from tnviz.gallery import GALLERY

GALLERY_PAGE = "views/gallery.py"
FIGURES = ("Fig. 1", "Fig. 2", "Fig. 3", "Fig. 4")  # the page's tabs
K_FIGURE = "gallery.figure"  # the open tab's key


def _open_key(name: str, layer: int = 0) -> str:
    return f"gallery.open.{name}.{layer}"


@pytest.fixture(scope="module")
def gallery_at():
    """One run of the page shared by the read-only tests (AppTest runs are the slow part)."""
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import APP

    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page(GALLERY_PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _figure_of(name: str) -> str:
    return next(f for f in FIGURES if GALLERY[name].figure.startswith(f + " "))


def _show_tab(at, name: str):
    """Open the tab holding entry ``name`` (only the open tab is drawn)."""
    at.session_state[K_FIGURE] = _figure_of(name)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("figure", ["Fig. 1", "Fig. 2", "Fig. 3", "Fig. 4"])
def test_every_entry_is_drawn_with_caption_numbers_and_an_open_button(gallery_at, figure):
    at = gallery_at
    at.session_state[K_FIGURE] = figure
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Gallery"
    assert [t.label for t in at.tabs] == ["Fig. 1", "Fig. 2", "Fig. 3", "Fig. 4"]
    entries = {name: e for name, e in GALLERY.items() if _figure_of(name) == figure}
    assert entries
    networks = [(name, k, net) for name, e in entries.items() for k, net in enumerate(e.networks())]
    charts = diagram_dots(at)
    assert len(charts) == len(networks)  # the open tab's diagrams, none of the others'
    assert not at.get("graphviz_chart")  # all laid out on the server (neato), none in the browser
    assert charts == [dot_of(net) for _, _, net in networks]
    keys = {b.key for b in at.button}
    assert keys == {_open_key(name, k) for name, k, _ in networks}
    captions = " ".join(c.value for c in at.caption)
    markdown = " ".join(m.value for m in at.markdown)
    for name, entry in entries.items():
        assert entry.caption in captions, name
    for _, _, net in networks:  # parameters vs dense, computed from the network
        assert f"**{net.params:,}** parameters" in markdown and f"the dense {net.dense_params:,}" in markdown
    assert not at.error


def test_every_gallery_entry_is_in_one_tab():
    assert sorted(GALLERY) == sorted(n for f in FIGURES for n in GALLERY if _figure_of(n) == f)


def test_the_open_tab_is_kept_across_pages(open_page):
    at = _show_tab(open_page(GALLERY_PAGE), "Fig. 3 (iv): Tucker conv kernel")
    at.switch_page("views/costs.py").run()
    at.switch_page(GALLERY_PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[K_FIGURE] == "Fig. 3"
    expected = [net for n, e in GALLERY.items() if _figure_of(n) == "Fig. 3" for net in e.networks()]
    assert diagram_dots(at) == [dot_of(net) for net in expected]


@pytest.mark.parametrize("name,layer", [
    ("Fig. 3 (iv): Tucker conv kernel", 0),
    ("Fig. 2 (vi): delta (hyperedge)", 0),
    ("Fig. 1 (i, iii): MLP with three TN layers", 1),
])
def test_open_in_designer_sets_the_current_network(open_page, name, layer):
    at = _show_tab(open_page(GALLERY_PAGE), name)
    before = current_network(at)
    expected = GALLERY[name].networks()[layer]
    assert before != expected
    at.button(key=_open_key(name, layer)).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert current_network(at) == expected
    assert at.session_state["tnviz.network_source"] == f"gallery {name}"
    assert at.title[0].value == "Designer"  # the Designer shows it
    assert diagram_dots(at)[0] == dot_of(expected)
