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
    rows = []
    for k, layer in enumerate(result.layers):
        if progress:
            progress(k, len(result.layers), layer.name)
        dense = originals[layer.name]
        set_module(scratch, layer.name, compressed[layer.name])
        try:
            metrics = subject.measure(scratch)
        finally:
            set_module(scratch, layer.name, dense)
        rows.append({"layer": layer.name, **metrics})
    if progress:
        progress(len(result.layers), len(result.layers), "done")
    return rows


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
