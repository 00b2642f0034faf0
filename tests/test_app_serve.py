"""tnviz_app.serve: the server process of ``tnviz app`` imports the pages' modules before it serves."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tnviz_app import serve


def _last_json(code: str):
    """Run ``code`` in a fresh interpreter and read the JSON on its last line of output."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_preload_imports_every_module_and_not_torch():
    """torch costs about 1.2 s and only the Compress pages need it; the preload must not pull it in
    (through any of its modules), and every name in it must exist."""
    code = ("import json, sys; from tnviz_app.serve import PRELOAD, preload; missing = preload(); "
            "print(json.dumps({'missing': missing, 'torch': 'torch' in sys.modules, "
            "'loaded': [n for n in PRELOAD if n in sys.modules]}))")
    result = _last_json(code)
    assert result["missing"] == []
    assert result["torch"] is False
    assert result["loaded"] == list(serve.PRELOAD)


def test_preload_reports_a_missing_module_instead_of_failing():
    assert serve.preload(("json", "tnviz_no_such_module")) == ["tnviz_no_such_module"]


def test_main_hands_its_arguments_to_streamlit(monkeypatch):
    from streamlit.web import cli as stcli

    seen = {}

    def fake_main():
        seen["argv"] = list(sys.argv)
        return 0

    monkeypatch.setattr(stcli, "main", fake_main)
    monkeypatch.setattr(serve, "preload", lambda names=serve.PRELOAD: [])
    frozen = []
    monkeypatch.setattr(serve, "freeze_heap", lambda: frozen.append(True))  # not this test process's heap
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert serve.main(["run", "app.py", "--server.port", "9000"]) == 0
    assert seen["argv"] == ["streamlit", "run", "app.py", "--server.port", "9000"]
    assert frozen == [True]


def test_the_server_s_heap_is_frozen_so_streamlit_s_collections_after_each_run_are_short():
    """Streamlit collects all generations after every script run; after freeze_heap (and torch
    imported by the device thread, which freezes again) a collection walks what the pages made
    since, not the ~3*10^5 objects of the preloaded modules and torch."""
    code = ("import gc, json, sys; from tnviz_app import serve, state; serve.preload(); serve.warm(); "
            "before = len(gc.get_objects()); serve.freeze_heap(); after = len(gc.get_objects()); "
            "dev = state.device_info(); "
            "print(json.dumps({'before': before, 'after': after, 'flag': state.FREEZE_TORCH_IMPORT, "
            "'torch': 'torch' in sys.modules, 'with_torch': len(gc.get_objects()), 'enabled': gc.isenabled()}))")
    r = _last_json(code)
    assert r["flag"] is True and r["torch"] is True and r["enabled"] is True
    assert r["before"] > 50_000 and r["after"] < 1_000 and r["with_torch"] < 5_000
    # a page whose module imports torch before the device thread runs: its objects are frozen too
    code = ("import gc, json; from tnviz_app import serve, state; serve.preload(); serve.freeze_heap(); "
            "import torch; loaded = len(gc.get_objects()); state.device_info(); "
            "print(json.dumps([loaded, len(gc.get_objects())]))")
    loaded, frozen = _last_json(code)
    assert loaded > 50_000 and frozen < 5_000


def test_the_device_thread_freezes_nothing_outside_the_server():
    import gc

    from tnviz_app import state

    assert state.FREEZE_TORCH_IMPORT is False  # tests and a plain `streamlit run` keep their collector as is
    frozen = gc.get_freeze_count()
    state._find_device()
    assert gc.get_freeze_count() == frozen


@pytest.mark.parametrize("argv", [[], ["--host", "0.0.0.0", "--headless"]])
def test_tnviz_app_starts_the_server_through_serve(argv):
    from tnviz.cli import app_command, build_parser

    cmd = app_command(build_parser().parse_args(["app", *argv]))
    assert cmd[:4] == [sys.executable, "-m", "tnviz_app.serve", "run"]
    assert cmd[4].endswith("streamlit_app.py")


def test_warm_builds_the_charts_first_visits_would_and_imports_no_torch():
    """After preload and warm, drawing the Costs and Stack view charts and sending a table imports
    nothing more (plotly's figure classes and pyarrow's pandas layer are loaded), and torch stays out."""
    code = ("import json, sys; from tnviz_app.serve import preload, warm; preload(); warm(); "
            "before = set(sys.modules); import plotly.io as pio, pandas as pd, pyarrow as pa, tnviz; "
            "from tnviz.cost import batch_sweep; from tnviz.render.charts import flops_vs_batch, step_bars; "
            "net = tnviz.mpo([4, 4], [4, 4], ranks=3); "
            "[pio.to_json(f, validate=False) for f in (flops_vs_batch(batch_sweep(net)), step_bars(tnviz.cost(net, 8)))]; "
            "pa.Table.from_pandas(pd.DataFrame({'x': [1.5]})); "
            "print(json.dumps({'new': sorted(m for m in set(sys.modules) - before if m.startswith(('plotly', 'pyarrow'))), "
            "'torch': 'torch' in sys.modules}))")
    result = _last_json(code)
    assert result == {"new": [], "torch": False}


def test_warm_lays_out_teachs_notation_pictures_for_the_page_to_reuse():
    from tnviz.render import to_dot
    from tnviz_app.components.diagram import notation_pictures, svg_markup

    svg_markup.cache_clear()
    serve.warm()
    before = svg_markup.cache_info()
    markups = [svg_markup(to_dot(p)) for p in notation_pictures().values()]
    after = svg_markup.cache_info()
    assert after.hits - before.hits == 4 and after.misses == before.misses  # no neato run left for the page
    assert all(m is None or m.startswith("<svg") for m in markups)
