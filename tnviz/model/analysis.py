"""Questions asked of a compression: which layers tolerate it (:func:`sensitivity`), and how the
methods compare at equal parameters, plain and data-aware, before and after healing
(:func:`compare_methods`).

>>> from tnviz.model.compress import compress
>>> result = compress("digits-mlp", layers=r"fc[12]$", ratio=8)
>>> [row["layer"] for row in sensitivity(result)]
['fc1', 'fc2']
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

from ..errors import TnvizError
from .apply import apply_plan
from .device import resolve_device
from .heal import heal_layerwise
from .plan import Rule, make_plan
from .replay import block_of, find_blocks, replaying
from .subject import Subject
from .surgery import set_module

ProgressFn = Callable[[int, int, str], None]


def sensitivity(result: Any, subject: Subject | None = None, progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """The functional effect of compressing each layer of ``result`` alone (the others kept dense),
    measured by the subject's metric: one row per layer."""
    subject = subject or getattr(result, "subject", None)
    if subject is None or subject.metric is None or result.model is None:
        raise TnvizError("sensitivity needs a compressed model with an architecture and a metric (a demo or a "
                         "Hugging Face folder)")
    original = subject.model
    device = next(result.model.parameters()).device
    scratch = copy.deepcopy(original).to(device).eval()
    originals = dict(scratch.named_modules())
    compressed = dict(result.model.named_modules())
    replay = _BlockReplay.of(scratch, subject, [layer.name for layer in result.layers])
    rows = []
    for k, layer in enumerate(result.layers):
        if progress:
            progress(k, len(result.layers), layer.name)
        dense = originals[layer.name]
        set_module(scratch, layer.name, compressed[layer.name])
        try:
            with replay.before(layer.name):
                metrics = subject.measure(scratch)
        finally:
            set_module(scratch, layer.name, dense)
        rows.append({"layer": layer.name, **metrics})
    if progress:
        progress(len(result.layers), len(result.layers), "done")
    return rows


#: Most bytes of block outputs :class:`_BlockReplay` keeps (beyond it, every run is a full forward).
REPLAY_MAX_BYTES = 256 * 2**20


class _BlockReplay:
    """The blocks before a layer's own compute what the original does: their outputs, recorded
    once on the held-out inputs, are replayed instead of recomputed (a layer in block ``b`` runs
    blocks ``b..`` only).  Only for a model whose blocks sit in one ``nn.ModuleList``, are each
    called once per forward with a tensor out (BERT-style encoders); anything else, or outputs
    over :data:`REPLAY_MAX_BYTES`, runs every forward in full.  MiniLM: 1.99 -> 1.1 s for its 12
    feed-forward layers, the same numbers (tests/test_model_analysis.py)."""

    def __init__(self, blocks: Any = None, prefix: str = "", outputs: Any = None):
        self.blocks, self.prefix, self.outputs = blocks, prefix, outputs

    @classmethod
    def of(cls, model: Any, subject: Subject, names: Sequence[str]) -> "_BlockReplay":
        import torch

        found = find_blocks(model, names)
        if found is None:
            return cls()
        prefix, blocks = found
        outputs: list[list[Any]] = [[] for _ in blocks]
        handles = [b.register_forward_hook(lambda m, a, out, j=j: outputs[j].append(out)) for j, b in enumerate(blocks)]
        try:
            subject.measure(model)  # the original's own forward, recorded
        finally:
            for h in handles:
                h.remove()
        calls = {len(o) for o in outputs}
        tensors = all(isinstance(x, torch.Tensor) for o in outputs for x in o)
        size = sum(x.numel() * x.element_size() for o in outputs for x in o if isinstance(x, torch.Tensor))
        if len(calls) != 1 or not tensors or size > REPLAY_MAX_BYTES:
            return cls()
        return cls(blocks, prefix, outputs)

    def before(self, name: str) -> Any:
        """A context in which the blocks before ``name``'s replay their recorded outputs."""
        import contextlib

        block = None if self.blocks is None else block_of(name, self.prefix)
        if not block:
            return contextlib.nullcontext()
        return replaying(self.blocks, block, self.outputs[block - 1])


def compare_methods(subject: Subject, pattern: str, ratio: float, methods: Sequence[str] = ("svd", "mpo"), *,
                    heal_steps: int = 50, device: Any = None, progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Method x plain/data-aware x healed at the same parameters (``ratio`` on the layers matching
    ``pattern``): one row per (method, data-aware) with the subject's metric before and after
    layer-wise healing.  The calibration statistics are the subject's, collected once."""
    dev = resolve_device(device)
    names = make_plan(subject, [Rule(pattern, methods[0], {"ratio": ratio})]).names()
    stats = subject.input_stats(names, dev)
    rows, total, done = [], 2 * len(methods), 0
    metric = subject.metric
    for method in methods:
        plan = make_plan(subject, [Rule(pattern, method, {"ratio": ratio})])
        for aware in (False, True):
            if progress:
                progress(done, total, f"{method} {'data-aware' if aware else 'plain'}")
            result = apply_plan(subject.model, plan, data_aware=aware, stats=stats if aware else None, device=dev)
            before = subject.measure(result.model)
            heal_layerwise(result.model, subject.model, subject.calibration, steps=heal_steps)
            after = subject.measure(result.model)
            rows.append({"method": method, "data-aware": aware, "ratio": result.totals["ratio"],
                         f"{metric}": before[metric], f"{metric} healed": after[metric]})
            done += 1
    if progress:
        progress(total, total, "done")
    return rows
