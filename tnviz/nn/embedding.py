"""``TNEmbedding``: an embedding table held as a tensor network.

>>> import torch, tnviz
>>> from tnviz.nn import TNLinear
>>> table = TNLinear(tnviz.mpo([2, 4], [5, 10], ranks=3), bias=False)   # 50 rows of dimension 8
>>> emb = TNEmbedding(table, padding_idx=0)
>>> emb(torch.tensor([[1, 2], [3, 0]])).shape
torch.Size([2, 2, 8])
>>> bool(torch.equal(emb(torch.tensor([3])), table.to_dense()[3:4]))
True
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TNEmbedding(nn.Module):
    """An embedding table ``(num_embeddings, dim)`` held as a tensor network (a TNLinear with
    ``out_features = num_embeddings``); lookups gather rows of the rebuilt table (cached while
    the weights are unchanged, in eval mode)."""

    def __init__(self, linear: nn.Module, padding_idx: int | None = None) -> None:
        super().__init__()
        self.linear = linear
        self.padding_idx = padding_idx
        self.num_embeddings, self.embedding_dim = linear.out_features, linear.in_features

    @property
    def network(self):
        return self.linear.network

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        table = self.linear.cached("embedding-table", self.linear.to_dense)
        return F.embedding(ids, table, self.padding_idx)
