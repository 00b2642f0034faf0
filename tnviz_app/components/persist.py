"""Keep widget values when the user visits another page and comes back.

Streamlit drops the state of widgets that a run does not draw, so a page that is left and
reopened would show its defaults again.  Call :func:`restore` before drawing a widget with that
``key`` (and no ``value=``), and :func:`remember` after drawing it.
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
