"""Hugging Face folders as models: built from ``config.json`` without remote code, checked against
the weights before anything is allocated, and tokenized by the folder's own ``tokenizer.json``.

A config is data from an upload, so it is checked before it is trusted:

1. a config that asks for remote code (``auto_map``, ``trust_remote_code``) is refused;
2. every layer count it names (``num_hidden_layers``, ``n_layer`` ...) must be one the weights
   hold (a 14 KB zip asking for a million layers is refused in milliseconds, not after minutes);
3. the model is built on the ``meta`` device (no memory), and its tensors' names and shapes must
   be in the weights file, and its parameter count within what the file holds;

only then is it built for real and loaded.  ``BERT`` configs use the built-in :class:`Bert` (no
extra dependency); other architectures need ``transformers`` (offline): a causal language model
(LLaMA, Mistral, Qwen2, GPT-2 ... whose ``architectures`` name a ``...ForCausalLM`` /
``...LMHeadModel``, or whose weights hold an ``lm_head``) by ``AutoModelForCausalLM.from_config``,
anything else by ``AutoModel.from_config``.  Tied weights (an ``lm_head`` sharing the input
embedding's table) stay one tensor: a checkpoint may leave the alias out, as ``save_pretrained``
does, and the model is loaded tied (:func:`tied_aliases`).

>>> import json, tempfile, pathlib, torch
>>> from tnviz.model.bert import Bert
>>> from tnviz.model.io import open_weights, save_safetensors
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> config = {"model_type": "bert", "vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 1,
...           "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 16}
>>> _ = (folder / "config.json").write_text(json.dumps(config))
>>> _ = save_safetensors(Bert(config).state_dict(), folder / "model.safetensors")
>>> with open_weights(folder) as weights:
...     model, keys = load_hf_model(weights, "cpu")
>>> type(model).__name__, keys["encoder.layer.0.intermediate.dense.weight"]
('Bert', 'encoder.layer.0.intermediate.dense.weight')
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import ModelFileError
from .bert import Bert
from .device import resolve_device
from .hf_folder import HFFolderWeights

#: Config keys that count layers (blocks); each must be one the weights hold.
LAYER_COUNT_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "num_decoder_layers",
                    "num_encoder_layers")

#: A built model may hold this many more parameters than the file (buffers, tied copies of 1-D tensors).
PARAMETER_SLACK = 1.05

_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def check_config(config: Mapping[str, Any], weights: HFFolderWeights) -> None:
    """Refuse a config that asks for remote code or for more layers than the weights hold."""
    for key in ("auto_map", "trust_remote_code"):
        if config.get(key):
            raise ModelFileError(
                f"config.json must describe an architecture built without remote code; it sets {key!r} "
                f"(uploads are data, never code)")
    indices = {int(m.group(1)) for name in weights.names() for m in [_LAYER_INDEX.search(name)] if m}
    held = max(indices) + 1 if indices else 0
    for key in LAYER_COUNT_KEYS:
        value = config.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ModelFileError(f"config.json's {key!r} must be a non-negative integer; got {value!r}")
        if value > max(held, 1):
            raise ModelFileError(
                f"config.json's {key!r} must be a layer count the weights hold; it asks for {value:,} but "
                f"model.safetensors holds weights for {held} numbered layer{'s' * (held != 1)}")


def is_causal_lm(config: Mapping[str, Any], names: Any = ()) -> bool:
    """Whether a config (and the weights' ``names``) describe a causal language model: its
    ``architectures`` name a ``...ForCausalLM`` / ``...LMHeadModel``, or, without architectures,
    the weights hold an ``lm_head.weight``."""
    architectures = config.get("architectures") or []
    if architectures:
        return any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    return config.get("model_type") != "bert" and "lm_head.weight" in names


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """State-dict names that are the same tensor as an earlier name (``lm_head.weight`` ->
    ``model.embed_tokens.weight`` in a tied LLaMA): alias -> the name kept."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            out[name] = first[id(p)]
        else:
            first[id(p)] = name
    return out


def _meta_model(config: Mapping[str, Any], causal: bool = False) -> nn.Module:
    """The architecture of ``config`` on the meta device (shapes only, nothing allocated)."""
    with torch.device("meta"):
        return _build(config, causal)


def _build(config: Mapping[str, Any], causal: bool = False) -> nn.Module:
    if config.get("model_type") == "bert":
        return Bert(config)
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import transformers
    except ImportError as error:
        raise ModelFileError(
            f"a Hugging Face model of type {config.get('model_type')!r} needs the package transformers to be "
            f"built (pip install transformers); only 'bert' is built in; its weights can still be compressed alone"
        ) from error
    try:
        hf_config = transformers.AutoConfig.for_model(**config)
        auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
        return auto.from_config(hf_config, trust_remote_code=False)
    except Exception as error:  # transformers raises many types for configs it cannot build
        raise ModelFileError(
            f"config.json must describe an architecture transformers knows without remote code; "
            f"model_type {config.get('model_type')!r} failed ({str(error).splitlines()[0][:200] if str(error) else type(error).__name__})"
        ) from None


def _key_map(model: nn.Module, weights: HFFolderWeights) -> dict[str, str]:
    """Each of the model's state_dict names -> the weights file's name for it.  A checkpoint saved
    from a model with a head prefixes the base model's names (``transformer.h.0...``)."""
    prefix = getattr(model, "base_model_prefix", "")
    out = {}
    for name in model.state_dict():
        for key in (name, f"{prefix}.{name}", name.split(".", 1)[-1]):
            if key in weights:
                out[name] = key
                break
    return out


def check_architecture(meta: nn.Module, weights: HFFolderWeights, config: Mapping[str, Any]) -> dict[str, str]:
    """Check an architecture built without memory (parameters on the meta device) against the
    weights: every tensor of it held with its shape, and no more parameters than the file holds.
    Returns the name of each of its tensors in the file (model name -> file name)."""
    keys = _key_map(meta, weights)
    own = meta.state_dict()
    aliases = tied_aliases(meta)
    missing = [name for name in own if name not in keys and not (name in aliases and aliases[name] in keys)]
    if config.get("model_type") == "bert":  # the built-in encoder has no pooler, and position ids are a buffer
        missing = [name for name in missing if not name.endswith("position_ids")]
    if missing:
        raise ModelFileError(f"model.safetensors must hold every tensor of the architecture; missing {missing[:5]} "
                             f"({len(missing)} in all)")
    for name, tensor in own.items():
        if name in keys and tuple(weights.shape(keys[name])) != tuple(tensor.shape):
            raise ModelFileError(f"tensor {keys[name]!r} must have shape {tuple(tensor.shape)} for this config.json; "
                                 f"model.safetensors has {tuple(weights.shape(keys[name]))}")
    wanted = sum(p.numel() for p in meta.parameters())
    held = sum(weights.numel(n) for n in weights.names())
    if wanted > PARAMETER_SLACK * held + 100_000:
        raise ModelFileError(f"config.json must describe the model the weights hold; it describes {wanted:,} parameters, "
                             f"model.safetensors holds {held:,} values")
    return keys


def load_hf_model(weights: HFFolderWeights, device: Any = None) -> tuple[nn.Module, dict[str, str]]:
    """The model of an uploaded Hugging Face folder with its weights loaded, and the name of every
    one of its tensors in the file (model name -> file name); refusals name the rule and the value."""
    config = dict(weights.config or {})
    check_config(config, weights)
    if config.get("model_type") == "bert":
        from .bert import check_bert_config

        check_bert_config(config)
    causal = is_causal_lm(config, weights)
    meta = _meta_model(config, causal)
    keys = check_architecture(meta, weights, config)
    del meta
    model = _build(config, causal)
    aliases = tied_aliases(model)
    state = {name: weights.get(keys[name]) for name in model.state_dict() if name in keys}
    if isinstance(model, Bert):
        model.load_weights(state)
    else:
        # a tied alias the checkpoint left out is the same tensor as the name it is tied to
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [n for n in missing if n not in aliases]
        if missing or unexpected:
            raise ModelFileError(f"model.safetensors must hold every tensor of the architecture; missing "
                                 f"{missing[:5]}, unexpected {unexpected[:5]}")
        for alias, kept in aliases.items():
            if alias in keys and kept in keys and not torch.equal(weights.get(keys[alias]), weights.get(keys[kept])):
                raise ModelFileError(f"config.json ties {alias!r} to {kept!r}, but model.safetensors holds different "
                                     f"values for them (set tie_word_embeddings to false in config.json)")
    return model.to(resolve_device(device)).eval(), keys


def build_hf_model(weights: HFFolderWeights, device: Any = None) -> nn.Module:
    """The model of an uploaded Hugging Face folder, its weights loaded (see :func:`load_hf_model`)."""
    return load_hf_model(weights, device)[0]


def load_tokenizer(folder: str | os.PathLike, config: Mapping[str, Any], max_tokens: int) -> tuple[Any, str]:
    """The folder's ``tokenizer.json`` (``tokenizers`` package), padding to the longest sentence
    and truncating at ``max_tokens`` (and the model's positions), or ``None`` and why not."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None, "the upload has no tokenizer.json"
    try:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # a file this library cannot read: calibrate on random ids, say why
        return None, f"its tokenizer.json could not be read ({str(error)[:120]})"
    pad_id = int(config.get("pad_token_id") or 0)
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "[PAD]")
    positions = int(config.get("max_position_embeddings") or max_tokens)
    tokenizer.enable_truncation(max_length=min(max_tokens, positions))
    return tokenizer, ""
