"""Every example in tnviz's docstrings runs and prints what it shows (docs true to the code)."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tnviz

MODULES = sorted(m.name for m in pkgutil.walk_packages(tnviz.__path__, "tnviz."))


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_run_as_shown(name):
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional dependency (triton): its own tests say so
        pytest.skip(f"{name} needs {exc.name or exc}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} fail"
