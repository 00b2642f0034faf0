"""The dense export of a compression: a plain Hugging Face folder that ``transformers`` loads
without tnviz (``tnviz compress ... --dense``, ``tnviz.compress(..., dense=True)``).

It holds ``model.safetensors`` with every tensor of the input under its own name, shape and dtype:
each compressed weight rebuilt from its factors (contracted in float64, then cast to the input's
dtype; a GPT-2 ``Conv1D`` weight back in its ``(in, out)`` layout; a tied alias the input held
written with the same values), every other tensor as in the compressed folder (bit for bit, or
healed); beside it the input's ``config.json`` and tokenizer files
(:data:`tnviz.model.subject.HF_SIDE_FILES`), and a short ``tnviz.json`` (format ``tnviz.dense``)
saying what was compressed, so a later run may replace the folder with ``--overwrite``.  Each
weight is rebuilt only when the writer reaches it: one dense weight in memory at a time.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..contract import to_dense
from .folder import DENSE_FORMAT, Item, write_folder
from .surgery import tn_linear

if TYPE_CHECKING:
    from .compress import Compression


def _rebuild(network: Any, tensors: dict[str, torch.Tensor], shape: tuple[int, ...], dtype: str,
             transposed: bool) -> torch.Tensor:
    dense = to_dense(network, {k: v.detach().to("cpu", torch.float64) for k, v in tensors.items()}, budget=None)
    dense = dense.reshape(shape).to(getattr(torch, dtype))
    return dense.t().contiguous() if transposed else dense


def dense_items(result: "Compression") -> list[Item]:
    """The tensors of the dense export, in the input's order (see the module doc)."""
    src = result.subject.source
    rebuilt: dict[str, Item] = {}
    modules = dict(result.model.named_modules()) if result.model is not None else {}
    for r in result.layers:
        dtype = result._dtype_of(r)
        if result.model is not None:
            lin = tn_linear(modules[r.name])
            network, tensors = lin.network, lin.named_network_tensors()
        else:  # a weights-only file: the factors read when the weight is rebuilt (they may be on disk)
            network, tensors = r.network, None
        stored = tuple(r.shape)[::-1] if r.transposed else tuple(r.shape)

        # decomposed in the searched neuron order: back to the input's (as every other tensor is written)
        records = [p for p in result.applied.permutations if r.weight_name in p.tensors]

        def get(n=network, t=tensors, s=tuple(r.shape), d=dtype, tr=r.transposed, w=r.weight_name,
                rec=records) -> torch.Tensor:
            dense = _rebuild(n, result.applied.factors[w] if t is None else t, s, d, tr)
            for p in reversed(rec):
                dense = dense.index_select(p.tensors[w], torch.argsort(torch.as_tensor(p.perm, dtype=torch.long)))
            return dense.contiguous()

        for name in (r.weight_name, *r.tied):
            file_name = result._file_name(name) if result.model is not None else name
            rebuilt[file_name] = Item(file_name, dtype, stored, get)
    others = {it.name: it for it in result._items() if "::" not in it.name}
    names = src.names if src is not None else list(rebuilt) + list(others)
    return [rebuilt.get(n) or others[n] for n in names if n in rebuilt or n in others]


def write_dense(result: "Compression", folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the dense export of ``result`` to ``folder`` (atomically, never over the input)."""
    src = result.subject.source
    protect = [src.path] if src is not None else []
    doc = result.manifest()
    summary = {"source": doc["source"], "settings": doc["settings"], "totals": doc["totals"],
               "compressed": [{"name": e["name"], "method": e["method"], "rel_error": e["rel_error"]}
                              for e in doc["layers"]],
               "note": "dense weights rebuilt from the tensor networks: load with transformers"}
    if "functional" in doc:
        summary["functional"] = doc["functional"]
    side = dict(src.side_files) if src is not None else {}
    return write_folder(folder, dense_items(result), summary, overwrite=overwrite, protect=protect,
                        format=DENSE_FORMAT, extra_files=side)
