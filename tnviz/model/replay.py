"""Replaying recorded block outputs instead of recomputing the blocks before a layer.

A BERT- or LLaMA-style model runs its blocks one after another from an ``nn.ModuleList``; what a
layer of block ``b`` sees depends only on the output of block ``b - 1``.  Where that output was
recorded (per batch, in call order), a forward pass can skip blocks ``0..b-2`` and have block
``b - 1`` hand back its recording: the blocks from ``b`` on receive the very tensors they would
have computed from the start (the same numbers, bit for bit).  Used by sensitivity
(:mod:`tnviz.model.analysis`) and layer-wise healing (:mod:`tnviz.model.heal`).

>>> import torch
>>> from torch import nn
>>> class Net(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(4, 4)) for _ in range(3))
...     def forward(self, x):
...         for block in self.blocks:
...             x = block(x)
...         return x
>>> net, x = Net(), torch.randn(2, 4)
>>> prefix, blocks = find_blocks(net, ["blocks.2.0"])
>>> prefix, len(blocks)
('blocks', 3)
>>> recorded = [net.blocks[1](net.blocks[0](x))]
>>> with replaying(blocks, 2, recorded):
...     same = torch.equal(net(torch.zeros(2, 4)), net.blocks[2](recorded[0]))
>>> same
True
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

from torch import nn

from .plan import block_and_role


def find_blocks(model: nn.Module, names: Sequence[str]) -> tuple[str, nn.ModuleList] | None:
    """The ``(prefix, ModuleList)`` that holds the blocks of the layers of ``names`` that sit in
    blocks (``encoder.layer.3.output.dense`` -> ``encoder.layer``; names outside blocks are left
    to the caller), or ``None`` when those are in no block, or in more than one list, or the list
    is no ``nn.ModuleList``."""
    prefixes = set()
    for name in names:
        block, role = block_and_role(name)
        if block is not None:
            prefixes.add(name[:-len(role) - 1].rsplit(".", 1)[0])
    if len(prefixes) != 1:
        return None
    prefix = next(iter(prefixes))
    blocks = dict(model.named_modules()).get(prefix)
    return (prefix, blocks) if isinstance(blocks, nn.ModuleList) else None


def block_of(name: str, prefix: str) -> int | None:
    """The block number of layer ``name`` in the block list ``prefix`` (``None`` outside it)."""
    block, _ = block_and_role(name)
    return block if block is not None and name.startswith(f"{prefix}.{block}.") else None


@contextlib.contextmanager
def replaying(blocks: nn.ModuleList, block: int, recorded: list) -> Iterator[None]:
    """A context in which blocks ``0..block-2`` pass their input on unread and block ``block - 1``
    returns ``recorded`` (its outputs, one per call, in call order): a forward runs blocks
    ``block..`` only.  ``block`` 0 replays nothing."""
    if block <= 0:
        yield
        return
    kept = list(blocks[:block])
    try:
        for j in range(block - 1):
            blocks[j] = Skip()  # its output is never read: the next block is replayed
        blocks[block - 1] = Replay(recorded)
        yield
    finally:
        for j, b in enumerate(kept):
            blocks[j] = b


class Skip(nn.Module):
    """A block that passes its input on (it stands before the replayed one)."""

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return x


class Replay(nn.Module):
    """A block that returns ``recorded`` outputs in call order."""

    def __init__(self, recorded: list):
        super().__init__()
        self.recorded, self.calls = recorded, 0

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.recorded[self.calls - 1]
