"""The server process of ``tnviz app``: import what the pages use, then run Streamlit here.

``streamlit run`` imports a page's modules during the first script run, so the first visitor of a
fresh server waited for them: on the 2-core development CPU the Designer's first run took 0.37 s
against 0.04 s for every later session, most of it imports (tnviz, the app's components, Graphviz's
and Plotly's Python packages, scipy.sparse for the Stack view, pandas for tables).  Imported here,
before the server starts, they are in ``sys.modules`` when the script runs: the same modules the
script would import, loaded once, in the main thread (a background import races a script run that
finds the module half initialised).  torch is not among them: it costs about 1.2 s and only the
Compress pages need it; the app's background thread loads it after the first page
(:func:`tnviz_app.state.warm_device`).  :func:`warm` then draws the torch-free pages' charts once
on a tiny network, so a first visit does not create Plotly's figure classes (measured, 5 fresh
servers each: Costs' first visit 0.42 -> 0.35 s, the server ready 0.15 s later).

``python -m tnviz_app.serve run tnviz_app/streamlit_app.py [streamlit options]`` is what
:func:`tnviz.cli.app_command` starts; ``streamlit run tnviz_app/streamlit_app.py`` still works,
without the preload.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

#: Imported before the server starts; none of them imports torch (tests/test_app_serve.py).
PRELOAD = (
    "tnviz",
    "tnviz.render",
    "tnviz.render.charts",
    "tnviz.render.stack_charts",
    "tnviz.render.spectra_charts",
    "tnviz.render.bond_charts",
    "tnviz.gallery",
    "tnviz.teach",
    "tnviz.stack",
    "tnviz.cost",
    "tnviz.nn.strategies",
    "tnviz.model.plan",
    "tnviz.model.io",
    "graphviz",
    "scipy.sparse",
    "pandas",
    "tnviz_app.state",
    "tnviz_app.components.layout",
    "tnviz_app.components.formatting",
    "tnviz_app.components.persist",
    "tnviz_app.components.inputs",
    "tnviz_app.components.figures",
    "tnviz_app.components.diagram",
    "tnviz_app.components.canvas.panel",
    "tnviz_app.components.lesson",
    "tnviz_app.components.measure",
    "tnviz_app.components.subjects",
)


def preload(names: Sequence[str] = PRELOAD) -> list[str]:
    """Import ``names``; returns those that could not be imported (an optional package missing:
    the page that needs it says so itself)."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def warm() -> None:
    """Build the charts of the pages that need no torch (Costs, Stack view) on a tiny network,
    serialize them as Streamlit does, convert one small table to Arrow, and lay out Teach's fixed
    notation pictures (:func:`tnviz_app.components.diagram.svg_markup`, cached for the process).  Plotly makes its
    figure classes and validators on first use (about 160 modules: 0.05 s for the first figure),
    and Streamlit sends tables through pyarrow's pandas layer, imported on first use: without this
    the first visit of a page with a chart or a table paid for both."""
    import pandas as pd
    import plotly.io as pio
    import pyarrow as pa

    import tnviz
    from tnviz.cost import batch_sweep
    from tnviz.render.charts import flops_vs_batch, step_bars
    from tnviz.render.stack_charts import column_figure, patterns_figure
    from tnviz.stack import stack_views

    net = tnviz.mpo([2, 2, 2], [2, 2, 2], ranks=2)
    (view,) = stack_views(net, views=["left-to-right"])
    report = view.to_dict()
    for fig in (flops_vs_batch(batch_sweep(net), current_batch=2), step_bars(tnviz.cost(net, 2)),
                column_figure(report, 0), patterns_figure([view.layers[0].pattern(4)], report["layers"][:1])):
        pio.to_json(fig, validate=False)
    pa.Table.from_pandas(pd.DataFrame({"a": [1], "b": ["x"], "c": [0.5]}))
    from tnviz.render import to_dot
    from tnviz_app.components.diagram import notation_pictures, svg_markup

    for picture in notation_pictures().values():  # Teach's fixed pictures: four neato runs done now
        svg_markup(to_dot(picture))


def freeze_heap() -> None:
    """Collect once, then move every object left into the permanent generation (``gc.freeze``),
    and have the device thread do the same after importing torch
    (:data:`tnviz_app.state.FREEZE_TORCH_IMPORT`).  Streamlit runs a full collection after every
    script run (``runner.postScriptGC``) and it walks every tracked object: with the preloaded
    modules and torch, 0.16-0.18 s on the 2-core CPU, holding the GIL while the page's last
    messages waited to be sent.  A frozen object is still freed when its last reference goes; only
    a cycle among them is never collected (the modules and caches made here live as long as the
    server anyway)."""
    import gc

    from tnviz_app import state

    gc.collect()
    gc.freeze()
    state.FREEZE_TORCH_IMPORT = True


def main(argv: Sequence[str] | None = None) -> int:
    """Preload, warm and freeze the heap, then run Streamlit's command line with ``argv``
    (``run SCRIPT [options]``)."""
    preload()
    try:
        warm()
    except Exception:  # noqa: BLE001  a warm-up only: the page that hits the same problem says so itself
        pass
    freeze_heap()
    from streamlit.web import cli as stcli

    sys.argv = ["streamlit", *(sys.argv[1:] if argv is None else argv)]
    return stcli.main()


if __name__ == "__main__":
    sys.exit(main())
