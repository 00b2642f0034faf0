"""Small models shared by the model tests."""
from __future__ import annotations

import torch
from torch import nn


class FFN(nn.Module):
    """``down(relu(up(x)))`` with LLaMA's names, so ff_pairs finds the pair ``mlp``."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.up_proj = nn.Linear(16, 64, dtype=torch.float64)
        self.mlp.down_proj = nn.Linear(64, 16, dtype=torch.float64)

    def forward(self, x):
        return self.mlp.down_proj(torch.relu(self.mlp.up_proj(x)))
