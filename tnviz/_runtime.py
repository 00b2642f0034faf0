"""Process settings tnviz makes before torch is loaded.

``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it): torch's OpenMP threads then sleep at an op's
barrier instead of spinning.  On a machine shared with other jobs a spinning thread waits for its
descheduled sibling at every op: one MiniLM forward pass of the 236 calibration sentences took
7-9 s with two threads while another job held one of the two cores, 0.77 s with this policy
(0.75 s on one thread); on an idle machine the difference is not measurable at these op sizes
(milliseconds each).  It only takes effect when set before libgomp starts, i.e. before
``import torch``; :func:`configure` is called by ``import tnviz`` and says whether it was in time.

>>> configure() in (True, False)
True
"""
from __future__ import annotations

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
