"""Keep widget values when the user visits another page and comes back.

Streamlit drops the state of widgets that a run does not draw, so a page that is left and
reopened would show its defaults again.  Call :func:`restore` before drawing a widget with that
``key`` (and no ``value=``), in the same run, and :func:`remember` after drawing it.

Restore only in a run that draws the widget (inside its open tab or expander, not above it): a
value written for a widget that the run does not draw becomes plain session state, and when a later
run draws the widget Streamlit's frontend mounts it at its default (""), not at that value; the
next rerun would then store the empty text (Streamlit 1.67: seen when the Designer's Template tab
was drawn only while open, Examples -> Upload -> Template; tests/e2e/test_designer_browser.py).
"""
from __future__ import annotations

from typing import Any

import streamlit as st

MEMORY_KEY = "tnviz_app.widget_memory"


def restore(key: str, default: Any) -> str:
    """Put the remembered value (or ``default``) into the widget's state; returns ``key``."""
    memory = st.session_state.setdefault(MEMORY_KEY, {})
    if key not in st.session_state:
        st.session_state[key] = memory.get(key, default)
    return key


def remember(*keys: str) -> None:
    """Store the current values of widgets for the next visit."""
    memory = st.session_state.setdefault(MEMORY_KEY, {})
    for key in keys:
        if key in st.session_state:
            memory[key] = st.session_state[key]
