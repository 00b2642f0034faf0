"""tnviz app entry point: routing only.  Run with ``tnviz app`` or
``streamlit run tnviz_app/streamlit_app.py``.

Add a page with one ``st.Page(...)`` line in its section; empty sections are hidden.
"""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts tnviz_app/ on sys.path; pages import `tnviz_app.*`, so its parent must be there too
# (the repository root, or site-packages when installed from a wheel).
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tnviz_app.components.layout import SIDEBAR_PX, apply_page_style  # noqa: E402
from tnviz_app.state import render_sidebar  # noqa: E402

st.set_page_config(page_title="tnviz", page_icon=":material/hub:", layout="wide",
                   initial_sidebar_state=SIDEBAR_PX)

SECTIONS: dict[str, list] = {
    "Design": [
        st.Page("views/designer.py", title="Designer", icon=":material/hub:", default=True),
        st.Page("views/costs.py", title="Costs", icon=":material/functions:"),
        st.Page("views/gallery.py", title="Gallery", icon=":material/photo_library:"),
        st.Page("views/stack_view.py", title="Stack view", icon=":material/view_agenda:"),
    ],
    "Compress": [
        st.Page("views/tensorize.py", title="Tensorize", icon=":material/compress:"),
        st.Page("views/spectra.py", title="Spectra", icon=":material/bar_chart:"),
    ],
    "Learn": [
        st.Page("views/lesson.py", title="Lesson", icon=":material/route:"),
        st.Page("views/teach.py", title="Teach", icon=":material/school:"),
        st.Page("views/bond_features.py", title="Bond features", icon=":material/insights:"),
    ],
}

page = st.navigation({section: pages for section, pages in SECTIONS.items() if pages})
apply_page_style()
sidebar_slot = st.sidebar.container()  # filled after the page: see render_sidebar
try:
    page.run()
finally:  # also after a page's st.stop()
    render_sidebar(sidebar_slot)
