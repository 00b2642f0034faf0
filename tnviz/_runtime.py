"""Process settings tnviz makes before torch is loaded, and the import of torch itself.

``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it): torch's OpenMP threads then sleep at an op's
barrier instead of spinning.  On a machine shared with other jobs a spinning thread waits for its
descheduled sibling at every op: one MiniLM forward pass of the 236 calibration sentences took
7-9 s with two threads while another job held one of the two cores, 0.77 s with this policy
(0.75 s on one thread); on an idle machine the difference is not measurable at these op sizes
(milliseconds each).  It only takes effect when set before libgomp starts, i.e. before
``import torch``; :func:`configure` is called by ``import tnviz`` and says whether it was in time.

:func:`import_torch` is how a long-lived tnviz process (the ``tnviz`` command, the app's server)
imports torch: with the cyclic garbage collector paused, then frozen (see there).

>>> configure() in (True, False)
True
"""
from __future__ import annotations

import gc
import os
import sys

#: The OpenMP setting and the value tnviz gives it when the user has not.
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")


def configure() -> bool:
    """Set :data:`WAIT_POLICY` unless the user did; ``True`` when it governs this process (torch
    not loaded yet, or loaded with the same setting)."""
    key, value = WAIT_POLICY
    if key not in os.environ and "torch" not in sys.modules:
        os.environ[key] = value
    return "torch" not in sys.modules or os.environ.get(key, "").upper() == value


def import_torch() -> bool:
    """Import torch with the cyclic garbage collector paused, then move every object tracked so
    far into the permanent generation (``gc.freeze``); ``True`` when it did, ``False`` (and nothing
    changed) when torch was already loaded, e.g. in a test that calls the CLI's ``main``.

    torch's import leaves about 1.4·10^5 long-lived objects that every full collection would walk
    again: 0.12-0.18 s each on the 2-core development CPU.  The ``tnviz`` command ran three of them
    while compressing MiniLM (0.08 s) and its import took 0.13 s longer with the collector on;
    Streamlit runs one after every script run (``runner.postScriptGC``), so the app's server held
    each page's last messages for that long (measured 2026-12-07).  The cost: cyclic garbage among
    the frozen objects (a few thousand left by the import) is never collected."""
    if "torch" in sys.modules:
        return False
    enabled = gc.isenabled()
    gc.disable()
    try:
        import torch  # noqa: F401
    finally:
        gc.freeze()
        if enabled:
            gc.enable()
    return True
