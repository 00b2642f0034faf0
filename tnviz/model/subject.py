"""A subject: what is compressed, with what measures it.

:func:`open_subject` takes what a user brings — a bundled demo name (``digits-mlp``,
``digits-cnn``, ``minilm``), a Hugging Face folder or zip, or a weights-only file
(``.safetensors``, a state_dict ``.pt/.pth``) — and gives one :class:`Subject`:

* ``model``: the model with its architecture (``None`` for a weights-only file, whose tensors are
  then read from ``weights`` one at a time);
* ``calibration`` / ``heldout``: input batches (calibration statistics and healing use the first,
  the metric the second; they never overlap);
* ``measure(model) -> dict``: the functional metric of a (compressed) model against the original:
  held-out digits accuracy, embedding cosine on held-out sentences, or output agreement;
* ``source``: every tensor of the input by name, so that the compressed folder holds each one,
  compressed or copied bit for bit (:mod:`tnviz.model.folder`);
* ``input_stats(names)``: the calibration statistics of those layers, collected once per subject
  and reused by every later plan, method and page.

>>> subject = open_subject("digits-mlp", "cpu")                 # doctest: +SKIP
>>> subject.measure(subject.model)                               # doctest: +SKIP
{'accuracy': 0.97...}
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..errors import ModelFileError, TnvizError
from .device import resolve_device
from .surgery import to_device

#: How a subject's effect is measured: the metric names, the one a summary shows first, and
#: whether a larger value is better.
METRICS: dict[str, tuple[str, bool]] = {
    "digits": ("accuracy", True),
    "sentences": ("cosine", True),
    "outputs": ("output cosine", True),
    "causal": ("perplexity", False),
}

#: The files of a Hugging Face folder besides its weights that a dense export copies (read when
#: the folder is opened, so a zip's temporary extraction may go): config, generation settings,
#: tokenizer.  Nothing else is copied: a folder's Python files are code, never taken along.
HF_SIDE_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt",
                 "tokenizer.model", "spiece.model", "chat_template.jinja", "chat_template.json")
#: Largest total of those files read (bytes).
MAX_SIDE_BYTES = 64 * 2**20


@dataclass
class Source:
    """The input's tensors: their names in file order, and how to get each one's exact value.

    ``key_map`` maps the model's state_dict names to the input's names (equal for the demos; a
    Hugging Face checkpoint may prefix them); ``extra`` holds the input tensors the model does not
    (a BERT pooler, ``position_ids``), read once so they can be copied bit for bit.
    """

    names: list[str]
    dtypes: dict[str, str]
    shapes: dict[str, tuple[int, ...]]
    key_map: dict[str, str] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    path: str = ""
    side_files: dict[str, bytes] = field(default_factory=dict, repr=False)  # a HF folder's config and tokenizer

    @classmethod
    def of_weights(cls, weights: Any, model: nn.Module | None = None, key_map: Mapping[str, str] | None = None) -> "Source":
        """The tensors of an open weights file; with ``model``, those the model does not hold are read now."""
        names = list(weights.names())
        keys = dict(key_map) if key_map is not None else (
            {n: n for n in model.state_dict() if n in weights} if model is not None else {})
        held = set(keys.values())
        extra = {} if model is None else {n: weights.get(n).clone() for n in names if n not in held}
        return cls(names, {n: weights.dtype(n) for n in names}, {n: tuple(weights.shape(n)) for n in names},
                   keys, extra, str(getattr(weights, "path", "")))

    @classmethod
    def of_model(cls, model: nn.Module) -> "Source":
        """A model's own state_dict as its input (a model that did not come from a file)."""
        state = model.state_dict()
        return cls(list(state), {n: str(t.dtype).removeprefix("torch.") for n, t in state.items()},
                   {n: tuple(t.shape) for n, t in state.items()}, {n: n for n in state})


@dataclass
class Subject:
    """A model (or a weights-only file) with its inputs and its metric; see the module doc."""

    name: str
    kind: str  # 'digits' | 'sentences' | 'outputs' (a metric of :data:`METRICS`), 'model' (no metric), 'weights' (no model)
    model: nn.Module | None
    calibration: list = field(default_factory=list, repr=False)
    heldout: list = field(default_factory=list, repr=False)
    inputs: str = ""
    source: Source | None = field(default=None, repr=False)
    weights: Any = field(default=None, repr=False)  # the open WeightsFile of a weights-only subject
    neighbours: bool = False  # 'outputs' of a text encoder on real sentences: also the top-k neighbour overlap
    _stats: dict = field(default_factory=dict, repr=False)
    _reference: Any = field(default=None, repr=False)
    _original: dict | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ inputs
    @property
    def samples(self) -> list:
        """The held-out batches (the name the output-agreement metric gives them)."""
        return self.heldout

    @property
    def has_model(self) -> bool:
        return self.model is not None

    @property
    def device(self) -> torch.device:
        if self.model is None:
            return torch.device("cpu")
        parameter = next(self.model.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    def input_stats(self, names: Sequence[str], device: Any = None) -> dict:
        """Calibration statistics (:class:`tnviz.model.calibrate.InputStats`) of the Linear/Conv2d
        layers ``names``, collected in one pass for the names not seen before and kept: a later
        plan, method or page asking for the same layers reuses them, bit for bit."""
        if self.model is None:
            raise TnvizError(f"calibration needs a model with an architecture; {self.name!r} holds weights only")
        from .apply import calibration_stats

        dev = resolve_device(device) if device is not None else self.device
        missing = [n for n in names if (n, str(dev)) not in self._stats]
        if missing:
            batches = [to_device(b, self.device) for b in self.calibration]
            found = calibration_stats(self.model, batches, missing, dev)
            for n in missing:
                self._stats[(n, str(dev))] = found.get(n)
        return {n: self._stats[(n, str(dev))] for n in names if self._stats.get((n, str(dev))) is not None}

    # ------------------------------------------------------------------ metric
    @property
    def metric(self) -> str | None:
        """The name of the metric a summary shows first (``None`` for a weights-only subject)."""
        return METRICS[self.kind][0] if self.kind in METRICS else None

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.kind][1] if self.kind in METRICS else True

    def better(self, a: Mapping[str, float], b: Mapping[str, float]) -> bool:
        """Whether measurements ``a`` are strictly better than ``b`` on the subject's metric."""
        m = self.metric
        if m is None:
            return False
        return a[m] > b[m] if self.higher_is_better else a[m] < b[m]

    def measure_original(self) -> dict[str, float]:
        """:meth:`measure` of the original model, computed once per subject."""
        if self._original is None:
            self._original = self.measure(self.model)
        return dict(self._original)

    @torch.no_grad()
    def measure(self, model: nn.Module) -> dict[str, float]:
        """The functional effect of ``model`` (the original or a compressed copy) on held-out inputs."""
        from .evaluate import (NEIGHBOURS, CosineReport, cosine_vs, digits_accuracy, embed, neighbour_overlap,
                               output_agreement)
        from .data import sentences

        if self.model is None:
            raise TnvizError(f"a functional metric needs a model with an architecture; {self.name!r} holds weights only")
        if self.kind == "digits":
            return {"accuracy": digits_accuracy(model)}
        if self.kind == "causal":
            from .evaluate import causal_lm_report

            return causal_lm_report(self.model, model, self.heldout).as_dict()
        if self.kind == "sentences":
            if self._reference is None:
                self._reference = embed(sentences("heldout"), self.model)
            # the original against itself: its embeddings are the reference
            other = self._reference if model is self.model else embed(sentences("heldout"), model)
            rep = CosineReport.of(cosine_vs(self._reference, other))
            return {"cosine": rep.mean, "cosine min": rep.min,
                    f"top-{NEIGHBOURS} neighbours": neighbour_overlap(self._reference, other)}
        if not self.heldout:
            raise TnvizError("output agreement needs sample input batches; got none")
        agree = output_agreement(self.model, model, self.heldout)
        out = {"output cosine": agree.cosine, "output rel. error": agree.rel_error}
        if agree.top1 is not None:
            out["top-1 agreement"] = agree.top1
        if self.neighbours:  # mean-pooled held-out sentences, as a sentence encoder would embed them
            from .evaluate import pooled_outputs

            if self._reference is None:
                self._reference = pooled_outputs(self.model, self.heldout)
            other = self._reference if model is self.model else pooled_outputs(model, self.heldout)
            out[f"top-{NEIGHBOURS} neighbours"] = neighbour_overlap(self._reference, other)
        return out

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Release a weights-only subject's open file (models need nothing)."""
        if self.weights is not None:
            self.weights.close()
            self.weights = None

    def __enter__(self) -> "Subject":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- opening
def demo_subject(name: str, device: Any = None) -> Subject:
    """A bundled demo (:data:`tnviz.model.demos.DEMOS`) with its calibration and held-out batches."""
    from .demos import DEMOS, load_demo
    from .io import open_weights

    model = load_demo(name, device)
    demo = DEMOS[name]
    path = demo.file()
    if path is not None and Path(path).is_file():
        with open_weights(path) as weights:
            source = Source.of_weights(weights, model)
    else:
        source = Source.of_model(model)
    return Subject(name, demo.metric, model, demo.calibration(model, device=device),
                   demo.heldout(model, device=device), demo.inputs, source)


#: How a Hugging Face subject's inputs begin when its own tokenizer encoded the bundled sentences.
TOKENIZED = "the bundled sentences tokenized by the upload's tokenizer.json"


def hf_subject(path: str | os.PathLike, device: Any = None, *, max_bytes: int | None = None, samples: int = 8,
               tokens: int = 16, seed: int = 0, batch_size: int = 32, max_tokens: int = 128) -> Subject:
    """A Hugging Face folder or zip built as a model (no remote code), with its inputs.

    With a ``tokenizer.json`` in the upload, the bundled sentences tokenized by it (calibration
    split for calibration and healing, held-out split for the metric; ``batch_size`` per batch, at
    most ``max_tokens`` tokens); without one, random token ids (``samples`` sequences of
    ``tokens`` ids, seeded), which exercise every weight but not the statistics of real text.

    A causal language model (:func:`tnviz.model.hf.is_causal_lm`) is measured by the perplexity
    of the held-out sentences and the mean next-token KL divergence from the original
    (:func:`tnviz.model.evaluate.causal_lm_report`); without a tokenizer its fallback is
    :func:`byte_batches`: the same sentence splits, each sentence's UTF-8 bytes as token ids.
    """
    from .hf import load_hf_model
    from .io import HFFolderWeights, open_weights

    weights = open_weights(path, max_bytes=max_bytes)
    try:
        if not isinstance(weights, HFFolderWeights):
            raise ModelFileError(f"a model with an architecture must be a Hugging Face folder or zip "
                                 f"(config.json + model.safetensors); {Path(path).name!r} holds weights only")
        model, keys = load_hf_model(weights, device)
        source = Source.of_weights(weights, model, keys)
        if Path(path).is_file():  # a zip: its extraction is temporary, the zip is what must not be overwritten
            source.path = str(path)
        source.side_files = side_files(Path(weights.folder))
        kind, calibration, held_out, inputs = hf_inputs(weights, next(model.parameters()).device, samples=samples,
                                                        tokens=tokens, seed=seed, batch_size=batch_size,
                                                        max_tokens=max_tokens)
    finally:
        weights.close()
    subject = Subject(Path(path).name, kind, model, calibration, held_out, inputs, source)
    # a text encoder given real sentences (its own tokenizer): the top-5 neighbour overlap applies
    subject.neighbours = kind == "outputs" and inputs.startswith(TOKENIZED) and first_dims(model, held_out) == 3
    return subject


def hf_inputs(weights: Any, dev: Any, *, samples: int = 8, tokens: int = 16, seed: int = 0, batch_size: int = 32,
              max_tokens: int = 128) -> tuple[str, list, list, str]:
    """The metric kind, calibration and held-out batches, and their description in words, of an
    open Hugging Face folder (see :func:`hf_subject`; the block-by-block path asks for them
    without building the model)."""
    from .data import length_order, sentences
    from .hf import is_causal_lm, load_tokenizer

    config = weights.config or {}
    vocab = int(config.get("vocab_size") or 100)
    tokenizer, reason = load_tokenizer(Path(weights.folder), config, max_tokens)
    causal = is_causal_lm(config, weights)
    kind = "causal" if causal else "outputs"
    if tokenizer is not None:
        def encode(texts: Sequence[str]) -> list[dict[str, torch.Tensor]]:
            texts = [texts[i] for i in length_order([sum(e.attention_mask) for e in tokenizer.encode_batch(list(texts))])]
            out = []
            for start in range(0, len(texts), batch_size):
                enc = tokenizer.encode_batch(list(texts[start:start + batch_size]))
                ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
                mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
                out.append({"input_ids": ids.to(dev), "attention_mask": mask.to(dev)})
            return out

        calibration, held_out = encode(sentences("calibration")), encode(sentences("heldout"))
        largest = max(int(b["input_ids"].max()) for b in calibration + held_out)
        if largest < vocab:
            return kind, calibration, held_out, (
                f"{TOKENIZED} ({len(calibration)} calibration batches, {len(held_out)} held-out)")
        reason = (f"its tokenizer.json gives token ids up to {largest}, beyond the config's vocab_size={vocab}, "
                  f"so it does not belong to this model")
    if causal:
        positions = int(config.get("max_position_embeddings") or config.get("n_positions") or max_tokens)
        length = min(max_tokens, positions)
        return (kind, byte_batches(sentences("calibration"), vocab, length, batch_size, dev),
                byte_batches(sentences("heldout"), vocab, length, batch_size, dev),
                f"the bundled sentences as UTF-8 bytes (token id = byte value mod vocab_size={vocab}; "
                f"{reason}, so perplexity is of this byte encoding; add one to measure real text)")
    generator = torch.Generator().manual_seed(seed)

    def batch() -> dict[str, torch.Tensor]:
        ids = torch.randint(0, vocab, (samples, tokens), generator=generator).to(dev)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    return kind, [batch(), batch()], [batch()], f"random token ids ({reason}; add one to calibrate on real text)"


@torch.no_grad()
def first_dims(model: nn.Module, batches: Sequence[Any]) -> int:
    """The number of axes of the model's main output on the first batch (3: per-token outputs)."""
    from .calibrate import call_model
    from .evaluate import first_tensor

    try:
        return first_tensor(call_model(model, {k: v[:1] for k, v in batches[0].items()})).dim()
    except TnvizError:
        return 0


def byte_batches(texts: Sequence[str], vocab: int, max_tokens: int, batch_size: int = 32,
                 device: Any = None) -> list[dict[str, torch.Tensor]]:
    """The deterministic fallback tokenization of a model without a tokenizer: each text's UTF-8
    bytes as token ids (``byte % vocab``), at most ``max_tokens`` per text, padded with id 0 to the
    longest of its batch (``attention_mask`` 0 there); the shortest texts first
    (:func:`tnviz.model.data.length_order`)."""
    from .data import length_order

    every = [[b % vocab for b in t.encode("utf-8")][:max_tokens] for t in texts]
    every = [every[i] for i in length_order([len(r) for r in every])]
    out = []
    for start in range(0, len(every), batch_size):
        rows = every[start:start + batch_size]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long)
        out.append({"input_ids": ids.to(device), "attention_mask": mask.to(device)})
    return out


def side_files(folder: Path) -> dict[str, bytes]:
    """The :data:`HF_SIDE_FILES` of a Hugging Face folder that are plain files, read (a dense
    export writes them back beside its weights)."""
    out, total = {}, 0
    for name in HF_SIDE_FILES:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
            if total > MAX_SIDE_BYTES:
                raise ModelFileError(f"a Hugging Face folder's config and tokenizer files may hold at most "
                                     f"{MAX_SIDE_BYTES:,} bytes in all; {folder.name!r} has more")
            out[name] = path.read_bytes()
    return out


def file_subject(path: str | os.PathLike, *, max_bytes: int | None = None) -> Subject:
    """A weights-only file, kept open (memory-mapped) for reading one tensor at a time."""
    from .io import open_weights

    weights = open_weights(path, max_bytes=max_bytes)
    return Subject(Path(path).name, "weights", None, inputs="weights only: no architecture, so no calibration "
                   "inputs and no functional metric", source=Source.of_weights(weights), weights=weights)


def has_architecture(source: str | os.PathLike) -> bool:
    """A bundled demo name, or a Hugging Face folder / zipped folder (config.json + weights)."""
    from .demos import DEMOS

    text = str(source)
    return text in DEMOS or Path(text).is_dir() or text.lower().endswith(".zip")


def open_subject(source: Any, device: Any = None, *, max_bytes: int | None = None) -> Subject:
    """What a user brings, as a :class:`Subject` (a subject passes through unchanged): a demo name,
    a Hugging Face folder or zip (built as a model), or a weights-only file."""
    if isinstance(source, Subject):
        return source
    if isinstance(source, nn.Module):
        return Subject(type(source).__name__, "model", source, source=Source.of_model(source),
                       inputs="a model given in code: calibration batches only if passed")
    if not isinstance(source, (str, os.PathLike)):
        raise TnvizError(f"a model to compress is a demo name, a Hugging Face folder or zip, or a weights file; "
                         f"got {type(source).__name__}")
    from .demos import DEMOS

    if str(source) in DEMOS:
        return demo_subject(str(source), device)
    path = Path(source)
    if path.is_dir() or str(source).lower().endswith(".zip"):
        return hf_subject(path, device, max_bytes=max_bytes)
    return file_subject(path, max_bytes=max_bytes)

