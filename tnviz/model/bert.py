"""A compact BERT encoder in plain torch, with module names equal to Hugging Face's tensor names.

Every projection is a real ``nn.Linear`` (``encoder.layer.3.intermediate.dense`` ...), so a TN
layer can replace it by name, and ``load_state_dict`` reads a Hugging Face ``model.safetensors``
directly. Checked against ``transformers.BertModel`` in ``tests/test_demos.py`` (when installed).

>>> import torch
>>> config = {"vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
...           "intermediate_size": 16, "max_position_embeddings": 16}
>>> bert = Bert(config).eval()
>>> bert(torch.tensor([[2, 5, 3]]), torch.ones(1, 3, dtype=torch.long)).shape
torch.Size([1, 3, 8])
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelFileError

_ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def _option(config: Mapping[str, Any], key: str, default: Any) -> Any:
    value = config.get(key, default)
    return default if value is None else value


def _embedding(count: int, dim: int, device: Any, padding_idx: int | None = None) -> nn.Embedding:
    """``nn.Embedding``; on the meta device with an empty weight given, not drawn: ``normal_`` on
    meta imports ``torch._dynamo`` (0.9 s, measured with torch 2.13), and the values are loaded next."""
    if device is not None and torch.device(device).type == "meta":
        return nn.Embedding(count, dim, padding_idx=padding_idx, _weight=torch.empty(count, dim, device=device))
    return nn.Embedding(count, dim, padding_idx=padding_idx, device=device)


class _Embeddings(nn.Module):
    def __init__(self, c: Mapping[str, Any], device: Any = None):
        super().__init__()
        hidden = c["hidden_size"]
        self.word_embeddings = _embedding(c["vocab_size"], hidden, device, padding_idx=_option(c, "pad_token_id", 0))
        self.position_embeddings = _embedding(_option(c, "max_position_embeddings", 512), hidden, device)
        self.token_type_embeddings = _embedding(_option(c, "type_vocab_size", 2), hidden, device)
        self.LayerNorm = nn.LayerNorm(hidden, eps=_option(c, "layer_norm_eps", 1e-12), device=device)
        self.dropout = nn.Dropout(_option(c, "hidden_dropout_prob", 0.1))

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None] + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class _SelfAttention(nn.Module):
    def __init__(self, c: Mapping[str, Any], device: Any = None):
        super().__init__()
        hidden = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.query = nn.Linear(hidden, hidden, device=device)
        self.key = nn.Linear(hidden, hidden, device=device)
        self.value = nn.Linear(hidden, hidden, device=device)
        self.dropout_p = _option(c, "attention_probs_dropout_prob", 0.1)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, hidden // self.heads).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(hidden // self.heads) + additive_mask
        probs = F.dropout(scores.softmax(dim=-1), p=self.dropout_p, training=self.training)
        return (probs @ v).transpose(1, 2).reshape(batch, length, hidden)


class _Output(nn.Module):
    """dense -> dropout -> residual -> LayerNorm (the 'output' blocks of BERT)."""

    def __init__(self, c: Mapping[str, Any], inner: int, device: Any = None):
        super().__init__()
        self.dense = nn.Linear(inner, c["hidden_size"], device=device)
        self.LayerNorm = nn.LayerNorm(c["hidden_size"], eps=_option(c, "layer_norm_eps", 1e-12), device=device)
        self.dropout = nn.Dropout(_option(c, "hidden_dropout_prob", 0.1))

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, c: Mapping[str, Any], device: Any = None):
        super().__init__()
        # 'self' is a keyword only in Python code, not as a module name: HF's tensors are 'attention.self.query'.
        self.add_module("self", _SelfAttention(c, device))
        self.output = _Output(c, c["hidden_size"], device)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self._modules["self"](x, additive_mask), x)


class _Intermediate(nn.Module):
    def __init__(self, c: Mapping[str, Any], device: Any = None):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["intermediate_size"], device=device)
        self.activation = _ACTIVATIONS[_option(c, "hidden_act", "gelu")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, c: Mapping[str, Any], device: Any = None):
        super().__init__()
        self.attention = _Attention(c, device)
        self.intermediate = _Intermediate(c, device)
        self.output = _Output(c, c["intermediate_size"], device)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        attended = self.attention(x, additive_mask)
        return self.output(self.intermediate(attended), attended)


class _Encoder(nn.Module):
    def __init__(self, c: Mapping[str, Any], device: Any = None):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(c, device) for _ in range(c["num_hidden_layers"]))

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


class Bert(nn.Module):
    """BERT encoder (post-LayerNorm, absolute positions); ``forward`` returns the last hidden states.

    ``device``: where the parameters are made (``"meta"``: shapes only, for a model whose every
    tensor is loaded next with ``load_weights(..., assign=True)``: no random initialization, 0.08 s
    of MiniLM's 22 M parameters)."""

    def __init__(self, config: Mapping[str, Any], device: Any = None):
        super().__init__()
        check_bert_config(config)
        self.config = dict(config)
        self.embeddings = _Embeddings(config, device)
        self.encoder = _Encoder(config, device)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        # Padding keys get the dtype's most negative value (as transformers does), not -inf,
        # so that no softmax row is ever all -inf.
        additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        return self.encoder(x, additive)

    def load_weights(self, state: Mapping[str, torch.Tensor], assign: bool = False) -> None:
        """Load HF tensors by name; ignores the pooler and ``position_ids`` buffers, refuses missing ones.
        ``assign``: the given tensors become the parameters (for a model made on the meta device;
        they must have the parameters' dtype) instead of being copied into them."""
        own = self.state_dict()
        missing = [name for name in own if name not in state]
        if missing:
            raise ModelFileError(f"a BERT checkpoint must have every encoder tensor; missing {missing[:5]} ({len(missing)} in all)")
        for name, tensor in own.items():
            if tuple(state[name].shape) != tuple(tensor.shape):
                raise ModelFileError(
                    f"tensor {name!r} must have shape {tuple(tensor.shape)} for this config, got {tuple(state[name].shape)}"
                )
        self.load_state_dict({name: state[name] for name in own}, strict=True, assign=assign)


def check_bert_config(config: Mapping[str, Any]) -> None:
    """Refuse BERT variants this compact encoder does not implement, naming the setting."""
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not isinstance(config.get(key), int):
            raise ModelFileError(f"a BERT config.json must give an integer {key!r}, got {config.get(key)!r}")
    if config["hidden_size"] % config["num_attention_heads"]:
        raise ModelFileError(
            f"hidden_size must be divisible by num_attention_heads, got {config['hidden_size']} and {config['num_attention_heads']}"
        )
    activation = _option(config, "hidden_act", "gelu")
    if activation not in _ACTIVATIONS:
        raise ModelFileError(f"hidden_act must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    position = _option(config, "position_embedding_type", "absolute")
    if position != "absolute":
        raise ModelFileError(f"position_embedding_type must be 'absolute' for the built-in BERT, got {position!r}")
