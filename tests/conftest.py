"""Suite-wide setup: the repository root on sys.path, so tests can import ``app.*`` (the Streamlit
pages' helpers) and ``tests.app.conftest`` helpers however pytest is started."""
from __future__ import annotations

import sys

import pytest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(request):
    """Modules marked ``one_torch_thread`` run torch on one thread: their many tiny SVDs and
    matmuls spend more time handing work between threads than doing it on a 2-core machine."""
    if request.node.get_closest_marker("one_torch_thread") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
