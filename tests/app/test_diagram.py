"""tnviz_app.components.diagram: diagrams laid out by neato on the server, shown as checked inline
SVG; st.graphviz_chart when neato is missing."""
from __future__ import annotations

import html

import pytest

import tnviz
from tests.app.conftest import current_network, diagram_dots, diagram_spec, dot_of
from tnviz.errors import TnvizError
from tnviz.gallery import GALLERY
from tnviz.render import render_dot, to_dot
from tnviz_app.components import diagram as diagram_module
from tnviz_app.components.diagram import dot_digest, safe_svg, svg_markup


@pytest.fixture
def fresh_cache():
    svg_markup.cache_clear()
    yield
    svg_markup.cache_clear()


def _svg(net) -> str:
    text = render_dot(to_dot(net)).decode("utf-8")
    return text[text.find("<svg"):]


@pytest.mark.parametrize("name", sorted(GALLERY))
def test_graphviz_output_of_every_gallery_network_passes_the_check(name):
    for net in GALLERY[name].networks():
        assert safe_svg(_svg(net)), net.name


@pytest.mark.parametrize("bad", [
    '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><g/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><g><text ONCLICK="alert(1)">x</text></g></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">'
    '<a xlink:href="https://example.com"><text>x</text></a></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><a href="javascript:alert(1)"><text>x</text></a></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><foreignObject><div>x</div></foreignObject></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><image href="x.png"/></svg>',
    '<svg xmlns="http://www.w3.org/2000/svg"><g style="x:javascript:alert(1)"/></svg>',
    "<svg><g></svg>",  # not well formed
])
def test_the_check_refuses_anything_but_drawing(bad):
    assert not safe_svg(bad)


def test_names_from_an_uploaded_network_stay_text(fresh_cache):
    hostile = '<img src=x onerror="alert(1)">'
    net = tnviz.TensorNetwork.build([(hostile, ["i", "o"])], {"i": 2, "o": 2}, ["i"], ["o"], "<script>x</script>")
    markup = svg_markup(to_dot(net))
    assert markup is not None and markup.startswith('<svg width="100%" style="max-width:')
    assert "<img" not in markup and "<script" not in markup and safe_svg(markup)
    assert html.escape(hostile) in markup  # shown as its text
    assert "<!--" not in markup and "\n" not in markup  # one HTML block, no comments


def test_the_page_gets_fitted_svg_and_the_dot_digest(open_page):
    at = open_page()
    net = current_network(at)
    assert diagram_dots(at) == [dot_digest(to_dot(net))] == [dot_of(net)]
    spec = diagram_spec(at)
    assert spec.startswith('<div class="tn-diagram" data-dot="') and 'role="img"' in spec
    assert f'aria-label="{html.escape("Tensor-network diagram of " + net.name)}"' in spec
    assert 'width="100%"' in spec and "height:auto" in spec and "viewBox=" in spec
    assert "<title>" in spec and 'xlink:title="b1 = 4 (bond)"' in spec  # hover tooltips
    assert not at.get("graphviz_chart")


def test_without_neato_the_browser_lays_the_diagram_out(open_page, monkeypatch, fresh_cache):
    def no_neato(text, fmt="svg"):
        raise TnvizError("rendering SVG needs the Graphviz program 'neato' on PATH; it was not found")

    monkeypatch.setattr(diagram_module, "render_dot", no_neato)
    at = open_page()
    assert diagram_dots(at) == []
    charts = at.get("graphviz_chart")
    assert [c.proto.spec for c in charts] == [to_dot(current_network(at))]
    assert charts[0].proto.engine == "neato"  # the pinned positions need neato there too
    assert not at.exception


def test_an_svg_that_fails_the_check_falls_back_too(open_page, monkeypatch, fresh_cache):
    monkeypatch.setattr(diagram_module, "render_dot",
                        lambda text, fmt="svg": b'<svg xmlns="http://www.w3.org/2000/svg" onload="x()"/>')
    at = open_page()
    assert diagram_dots(at) == [] and len(at.get("graphviz_chart")) == 1


def test_a_neato_failure_falls_back_instead_of_breaking_the_page(open_page, monkeypatch, fresh_cache):
    import subprocess

    def fails(text, fmt="svg"):
        raise subprocess.CalledProcessError(1, ["neato", "-Tsvg"], stderr=b"Error: syntax error")

    monkeypatch.setattr(diagram_module, "render_dot", fails)
    at = open_page()
    assert not at.exception and diagram_dots(at) == [] and len(at.get("graphviz_chart")) == 1
