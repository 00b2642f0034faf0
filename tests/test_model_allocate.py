"""Spreading one global target over layers by sensitivity (error per parameter saved)."""
from __future__ import annotations

import pytest
import torch

from tnviz.errors import RankError
from tnviz.model.allocate import allocate


def test_allocation_meets_target_and_favours_sensitive_layers():
    g = torch.Generator().manual_seed(0)
    low = torch.randn(128, 4, generator=g) @ torch.randn(4, 128, generator=g)  # rank 4: cheap to compress
    full = torch.randn(128, 128, generator=g)  # flat spectrum: every parameter matters
    alloc = allocate({"low": low, "full": full}, target_ratio=2.0, device="cpu")
    assert alloc.total_after <= alloc.total_before / 2
    assert alloc.fractions["low"] < alloc.fractions["full"]
    assert alloc.predicted_error["low"] < 1e-6
    budget = allocate({"low": low, "full": full}, error_budget=0.3, device="cpu")
    rms = (sum(e * e for e in budget.predicted_error.values()) / 2) ** 0.5
    assert rms <= 0.3 and budget.total_after < budget.total_before
    with pytest.raises(RankError, match="exactly one target"):
        allocate({"low": low}, device="cpu")
