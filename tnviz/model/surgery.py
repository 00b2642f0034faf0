"""Module surgery: put ``tnviz.nn`` layers into a model in place of its Linear / Conv2d / Embedding
modules (and GPT-2's ``Conv1D``: a linear layer that stores its weight transposed, in x out), find
them again, and move batches to a device.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 4))
>>> set_module(model, "0", torch.nn.Identity())
>>> type(model[0]).__name__
'Identity'
"""
from __future__ import annotations

import sys
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import TnvizError
from ..nn import TNConv2d, TNEmbedding, TNLinear


def to_device(batch: Any, device: torch.device) -> Any:
    """Move a batch (tensor, tuple/list, dict) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def model_device(model: nn.Module) -> torch.device:
    """Where the model's first parameter lives (the CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is transformers' ``Conv1D`` (GPT-2): ``x @ weight + bias`` with ``weight``
    of shape ``(in, out)``.  Looked up only where transformers is already imported (a model that
    holds one was built by it)."""
    utils = sys.modules.get("transformers.pytorch_utils")
    cls = getattr(utils, "Conv1D", None)
    return cls is not None and isinstance(module, cls)


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The ``(out, in, ...)`` weight a module applies: its ``weight``, transposed for a ``Conv1D``."""
    return module.weight.t() if is_conv1d(module) else module.weight


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name``."""
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, leaf, module)


def build_layer(original: nn.Module, dec: Any, strategy: str = "auto") -> nn.Module:
    """The ``tnviz.nn`` module for ``original`` (Linear, Conv2d, Embedding) from a decomposition."""
    if isinstance(original, nn.Linear) or is_conv1d(original):
        bias = None if original.bias is None else original.bias.detach()
        return TNLinear.from_decomposition(dec, bias, device=original.weight.device, dtype=original.weight.dtype,
                                           strategy=strategy)
    if isinstance(original, nn.Conv2d):
        return TNConv2d.from_decomposition(dec, original, strategy=strategy)
    if isinstance(original, nn.Embedding):
        lin = TNLinear.from_decomposition(dec, None, device=original.weight.device, dtype=original.weight.dtype,
                                          strategy=strategy)
        return TNEmbedding(lin, original.padding_idx)
    raise TnvizError(f"a layer to tensorize must be Linear, Conv1D, Conv2d or Embedding; got {type(original).__name__}")


def tie_layer(model: nn.Module, alias: str, layer: nn.Module) -> None:
    """Put the tensor network of ``layer`` (a TN module built for a tied weight) at module path
    ``alias`` too, as one set of parameters: a tied ``lm_head`` (Linear) takes the TNLinear of a
    TNEmbedding; a tied Embedding takes a TNEmbedding of a TNLinear."""
    original = model.get_submodule(alias)
    if isinstance(original, nn.Embedding):
        set_module(model, alias, layer if isinstance(layer, TNEmbedding) else TNEmbedding(tn_linear(layer),
                                                                                         original.padding_idx))
        return
    if getattr(original, "bias", None) is not None:
        raise TnvizError(f"a weight tied to {alias!r} can share its network only where {alias!r} has no bias; it has one")
    set_module(model, alias, tn_linear(layer))


def tn_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The ``tnviz.nn`` layers of a model by module name (the TNLinear inside a TNConv2d or a
    TNEmbedding is not listed on its own)."""
    out: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if any(name.startswith(f"{parent}.") for parent in out):
            continue
        if isinstance(m, (TNConv2d, TNEmbedding, TNLinear)):
            out[name] = m
    return out


def tn_linear(module: nn.Module) -> TNLinear:
    """The TNLinear holding a TN module's tensors (the module itself, or its ``linear``)."""
    return module.linear if isinstance(module, (TNConv2d, TNEmbedding)) else module


def weight_shape(module: nn.Module) -> tuple[str, tuple[int, ...]]:
    """The kind ('Linear', 'Conv', 'Embedding') and the original weight shape a TN module stands for."""
    if isinstance(module, TNEmbedding):
        return "Embedding", (module.num_embeddings, module.embedding_dim)
    if isinstance(module, TNConv2d):
        return "Conv", (module.out_channels, module.in_channels, *module.kernel_size)
    return "Linear", (module.out_features, module.in_features)
