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


def test_sensitivity_replays_the_blocks_before_each_layer_with_the_same_numbers(monkeypatch):
    """On an encoder, the blocks before a layer's own run as recorded outputs, not recomputed: the
    rows equal those of full forwards (the replay turned off by its size limit), and the blocks run
    as often as the replay promises: once each to record, then block b's layers run blocks b..5."""
    from tnviz.model import analysis, bert

    subject = demo_subject("minilm", "cpu")
    result = compress(subject, layers=r"layer\.[0-9]+\.(intermediate|output)\.dense$", ratio=2, data_aware=False,
                      device="cpu")
    calls = {"n": 0}
    forward = bert._Layer.forward

    def counted(self, *args, **kwargs):
        calls["n"] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(bert._Layer, "forward", counted)
    fast = sensitivity(result)
    fast_calls, calls["n"] = calls["n"], 0
    monkeypatch.setattr(analysis, "REPLAY_MAX_BYTES", 0)
    full = sensitivity(result)
    full_calls = calls["n"]
    assert [r["layer"] for r in fast] == [r["layer"] for r in full]
    for a, b in zip(fast, full):
        assert a["cosine"] == pytest.approx(b["cosine"], abs=1e-6), a["layer"]
    # per held-out batch, both start with the recording pass (6 blocks; the second then finds it over
    # the size limit): full = 6 + 12 layers x 6 blocks = 78; replay = 6 + 2 x (6+5+4+3+2+1) = 48
    assert full_calls % 78 == 0 and fast_calls * 78 == full_calls * 48


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
