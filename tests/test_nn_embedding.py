"""``TNEmbedding`` (tnviz.nn.embedding): lookups equal ``nn.functional.embedding`` of the rebuilt
table, the padding row gets no gradient, and eval mode reuses the table until the weights change."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import tnviz
from tnviz.nn import TNEmbedding, TNLinear
from tnviz.nn.rebuild import dense_weight

F64 = torch.float64


def _embedding(padding_idx=None) -> TNEmbedding:
    torch.manual_seed(0)
    table = TNLinear(tnviz.mpo([2, 3], [5, 7], ranks=3), bias=False, dtype=F64)  # 35 rows of dimension 6
    return TNEmbedding(table, padding_idx)


def test_lookups_equal_the_embedding_of_the_rebuilt_table():
    emb = _embedding()
    assert (emb.num_embeddings, emb.embedding_dim) == (35, 6) and emb.network is emb.linear.network
    ids = torch.tensor([[0, 34, 7], [7, 3, 12]])
    torch.testing.assert_close(emb(ids), F.embedding(ids, emb.linear.to_dense()))


def test_gradients_reach_the_tensors_but_not_through_the_padding_row():
    emb = _embedding(padding_idx=4)
    ids = torch.tensor([4, 4, 9])
    emb(ids).sum().backward()
    leaves = [p.detach().clone().requires_grad_(True) for p in emb.linear.ordered_tensors()]
    table = dense_weight(emb.network, leaves)
    F.embedding(ids, table, padding_idx=4).sum().backward()
    for p, ref in zip(emb.linear.ordered_tensors(), leaves):
        assert float(p.grad.abs().max()) > 0
        torch.testing.assert_close(p.grad, ref.grad)


def test_eval_mode_reuses_the_table_until_the_weights_change():
    emb = _embedding().eval()
    ids = torch.tensor([1, 2])
    with torch.no_grad():
        first = emb(ids)
        table = emb.linear._cache["embedding-table"][1]
        emb(ids)
        assert emb.linear._cache["embedding-table"][1] is table  # reused, not rebuilt
        emb.linear.ordered_tensors()[0].mul_(2.0)
        second = emb(ids)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(second, F.embedding(ids, emb.linear.to_dense().detach()))
