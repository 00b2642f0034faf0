"""Bond spectra of a model's weights: per weight and bond the singular values and the bond entropy
(``tnviz spectra``), the model-wide table of layers at one common setting, and the calibration
covariances that make a spectrum data-aware.  The arithmetic on one spectrum is in :mod:`tnviz.decompose.spectra`.

>>> import os, tempfile, torch
>>> from tnviz.model.io import save_safetensors
>>> path = os.path.join(tempfile.mkdtemp(), "model.safetensors")
>>> _ = save_safetensors({"fc1.weight": torch.randn(64, 64)}, path)
>>> {name: len(bond["singular_values"]) for name, bond in spectra_file(path, layers="fc1")["layers"][0]["bonds"].items()}
{'b1': 64}
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Sequence

import torch

from ..errors import ModelFileError, TnvizError
from ..decompose.spectra import LayerRow, bond_entropy, layer_spectra
from .device import resolve_device
from .io import Candidate, WeightsFile, candidates, open_weights


def spectra_file(model: str | os.PathLike, *, layers: str | None = None, method: str = "mpo",
                 device: Any = "auto", **decompose_options: Any) -> dict[str, Any]:
    """Per selected weight and bond: singular values before truncation and the bond entropy."""
    from ..decompose import decompose

    dev = resolve_device(device)
    out = []
    with open_weights(model) as weights:
        chosen = candidates(weights, layers)
        if not chosen:
            raise ModelFileError(f"the layer pattern must select at least one 2-D or 4-D weight; {layers!r} selects none")
        for cand in chosen:
            try:
                dec = decompose(weights.get(cand.name, device=dev, dtype=torch.float32), method, **decompose_options)
            except TnvizError as exc:  # name the weight: a file may hold hundreds
                raise type(exc)(f"weight {cand.name!r}: {exc}") from None
            bonds = {}
            for bond, sv in dec.spectra.items():
                values = sv.to(torch.float64).cpu()
                bonds[bond] = {"singular_values": [float(v) for v in values], "entropy": bond_entropy(values.numpy()),
                               "size": int(dec.network.sizes[bond])}
            out.append({"name": cand.name, "shape": list(cand.shape), "method": method, "bonds": bonds})
    return {"layers": out, "device": str(dev)}


def model_table(
    weights: WeightsFile,
    method: str,
    *,
    setting: str = "rank",
    value: float = 8,
    layers: Sequence[Candidate] | None = None,
    device: Any = None,
    dtype: Any = None,
    progress: Callable[[int, int, str], None] | None = None,
    **options: Any,
) -> list[LayerRow]:
    """Every candidate weight (or ``layers``) decomposed by ``method`` at one common setting,
    read one at a time onto ``device``; a weight that cannot be decomposed gets a row with its
    message instead of stopping the table.  ``progress(done, total, name)`` after each weight."""
    from ..decompose.spectra import _truncation

    chosen = list(layers) if layers is not None else candidates(weights)
    _truncation(setting, value)  # refuse a bad setting before reading anything
    rows: list[LayerRow] = []
    for k, cand in enumerate(chosen):
        start = time.perf_counter()
        try:
            res = layer_spectra(weights.get(cand.name, device=device, dtype=dtype), method,
                                setting=setting, value=value, **options)
        except TnvizError as exc:
            rows.append(LayerRow.failed(cand, str(exc), time.perf_counter() - start))
        else:
            rows.append(LayerRow.of(cand, res, time.perf_counter() - start))
        if progress is not None:
            progress(k + 1, len(chosen), cand.name)
    return rows


def input_covariances(subject: Any, device: Any = None, layers: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """Input second moments ``E[x x^T]`` (float64) of the Linears of a subject's model, by weight
    name (``<module>.weight``), from its calibration batches (collected once per subject and layer,
    :meth:`~tnviz.model.subject.Subject.input_stats`).  ``layers``: weight or module names (default:
    every Linear); asking for one layer costs one pass that stops at that layer."""
    from torch import nn

    names = [n for n, m in subject.model.named_modules() if isinstance(m, nn.Linear)]
    if layers is not None:
        wanted = {str(n).removesuffix(".weight") for n in layers}
        unknown = sorted(wanted - set(names))
        if unknown:
            raise TnvizError(f"calibration statistics exist for the model's Linear layers; {unknown[:3]} are not among them")
        names = [n for n in names if n in wanted]
    stats = subject.input_stats(names, device)
    return {f"{name}.weight": st.second_moment for name, st in stats.items()}


def minilm_input_covariances(device: Any = None) -> dict[str, torch.Tensor]:
    """:func:`input_covariances` of the bundled MiniLM on its calibration sentences."""
    from .subject import demo_subject

    return input_covariances(demo_subject("minilm", device=device), device)


def search_weight(weight: torch.Tensor, budget: int, cov: Any = None, *, name: str = "weight",
                  kind: str = "Linear") -> dict[str, Any]:
    """The ``method="auto"`` search record (:meth:`tnviz.model.auto.Search.as_dict`) of one weight at ``budget``
    parameters, data-aware with the input second moment ``cov``: what a compression with
    ``method="auto"`` would try and choose for it (:func:`tnviz.model.apply.compress_layer`, the
    same code; one weight alone has no feed-forward pair, so its neuron order is the stored one).
    Refused with the reason when no candidate fits the budget or saves parameters."""
    from ..errors import RankError
    from .apply import Kept, compress_layer
    from .plan import LayerPlan

    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise RankError(f"the search's parameter budget must be a positive integer; got {budget!r}")
    lp = LayerPlan(name, kind, tuple(weight.shape), int(weight.numel()), "auto", {"target_params": budget})
    dec = compress_layer(weight, lp, cov)
    if isinstance(dec, Kept):
        raise RankError(f"{name}: {dec.reason}")
    return dec.extra["auto"]
