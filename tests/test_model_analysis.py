"""Sensitivity (each layer compressed alone) and the method comparison at equal parameters."""
from __future__ import annotations

import pytest

from tnviz.errors import TnvizError
from tnviz.model.analysis import compare_methods, sensitivity
from tnviz.model.compress import compress
from tnviz.model.subject import demo_subject

pytestmark = pytest.mark.one_torch_thread  # see tests/conftest.py


@pytest.fixture(scope="module")
def mlp():
    return demo_subject("digits-mlp", "cpu")


def test_sensitivity_compresses_one_layer_at_a_time(mlp):
    result = compress(mlp, layers=r"fc[12]$", ratio=16, device="cpu")
    rows = sensitivity(result)
    assert [r["layer"] for r in rows] == ["fc1", "fc2"]
    both = result.metrics["compressed"]["accuracy"]
    original = result.metrics["original"]["accuracy"]
    for row in rows:  # one layer compressed costs no more than both, and the original is untouched
        assert both - 1e-9 <= row["accuracy"] <= original + 0.02
    assert type(mlp.model.fc1).__name__ == "Linear"
    with pytest.raises(TnvizError, match="needs a compressed model with an architecture"):
        sensitivity(compress(mlp.source.path, max_rank=4, layers="fc1"))  # weights only: no metric


def test_compare_methods_at_equal_parameters(mlp):
    seen = []
    rows = compare_methods(mlp, r"fc2$", 8.0, heal_steps=5, device="cpu",
                           progress=lambda done, total, label: seen.append((done, total, label)))
    assert [(r["method"], r["data-aware"]) for r in rows] == [("svd", False), ("svd", True), ("mpo", False), ("mpo", True)]
    assert all(7 < r["ratio"] < 9 for r in rows)
    assert all(0 <= r["accuracy"] <= 1 and 0 <= r["accuracy healed"] <= 1 for r in rows)
    plain, aware = rows[0], rows[1]
    assert aware["accuracy"] >= plain["accuracy"] - 0.01  # whitened SVD is no worse on held-out digits
    assert seen[0] == (0, 4, "svd plain") and seen[-1] == (4, 4, "done")
