"""The functional effect of a change to a model, measured on held-out inputs.

* :func:`digits_accuracy`: accuracy of a digits demo on the fixed held-out split.
* :func:`embedding_cosine`: per-sentence cosine of a sentence encoder's embeddings against the
  original's, on the held-out bundled sentences (or any list).
* :func:`neighbour_overlap`: how many of each sentence's ``k`` nearest neighbours (by cosine,
  among the same sentences) the compressed embeddings keep from the original's: what a search or
  clustering built on the encoder sees change.
* :func:`output_agreement`: for any model and sample inputs, how far its outputs are from a
  reference model's (relative error, worst absolute difference, cosine, top-1 agreement).
* :func:`causal_lm_report`: for a causal language model, the perplexity of held-out text and the
  mean next-token KL divergence from a reference model's predictions.

>>> import torch
>>> model = torch.nn.Linear(4, 3)
>>> output_agreement(model, model, [torch.randn(5, 4)]).rel_error
0.0
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from ..errors import TnvizError
from .calibrate import call_model
from .data import digits_split, sentences
from .device import resolve_device


def _model_device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def digits_accuracy(model: nn.Module, device: Any = None, split: str = "test") -> float:
    """Top-1 accuracy on the digits held-out split (``split='train'`` for the training part).

    ``device``: where to run (``None``: the model's own device). The model's mode is restored.
    """
    data = digits_split()
    if split not in ("train", "test"):
        raise TnvizError(f"a digits split must be 'train' or 'test', got {split!r}")
    x, y = (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)
    target = _model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for start in range(0, len(y), 512):
            logits = model(x[start:start + 512].to(target))
            correct += int((logits.argmax(dim=1).cpu() == y[start:start + 512]).sum())
    finally:
        model.train(was_training)
    return correct / len(y)


@dataclass(frozen=True)
class CosineReport:
    """Per-sentence cosine of embeddings against the original, with summary numbers."""

    per_sentence: torch.Tensor  # float64, (n,)
    mean: float
    min: float

    @classmethod
    def of(cls, cosines: torch.Tensor) -> "CosineReport":
        return cls(cosines, float(cosines.mean()), float(cosines.min()))


@torch.no_grad()
def embed(texts: Sequence[str], model: nn.Module, batch_size: int = 64) -> torch.Tensor:
    """Unit sentence embeddings ``(len(texts), hidden)`` as float32 on the CPU, from a sentence
    encoder (:class:`tnviz.model.demos.SentenceEncoder`: ``model.batches(texts, n)`` tokenizes,
    shortest texts first; the rows come back in the order of ``texts``)."""
    was_training = model.training
    model.eval()
    try:
        out = [model(**batch).float().cpu() for batch in model.batches(texts, batch_size)]
    finally:
        model.train(was_training)
    if not out:
        return torch.empty(0, model.config["hidden_size"])
    rows = torch.cat(out)
    placed = torch.empty_like(rows)
    placed[torch.tensor(model.length_order(texts), dtype=torch.long)] = rows
    return placed


def cosine_vs(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two ``(n, d)`` embedding matrices."""
    if reference.shape != other.shape:
        raise TnvizError(f"embeddings to compare must have the same shape, got {tuple(reference.shape)} and {tuple(other.shape)}")
    return torch.nn.functional.cosine_similarity(reference.double(), other.double(), dim=1)


def embedding_cosine(reference: nn.Module | torch.Tensor, other: nn.Module, texts: Sequence[str] | None = None,
                     batch_size: int = 64) -> CosineReport:
    """Cosine of ``other``'s sentence embeddings against ``reference``'s (a model or its precomputed embeddings).

    ``texts`` defaults to the held-out bundled sentences. Pass the reference's embeddings (from
    :func:`embed`) to avoid recomputing them for every compressed variant.
    """
    texts = sentences("heldout") if texts is None else list(texts)
    if not texts:
        raise TnvizError("embedding comparison needs at least one sentence, got none")
    reference_embeddings = reference if isinstance(reference, torch.Tensor) else embed(texts, reference, batch_size)
    return CosineReport.of(cosine_vs(reference_embeddings, embed(texts, other, batch_size)))


#: Neighbours per sentence of :func:`neighbour_overlap` as the subjects report it ("top-5 neighbours").
NEIGHBOURS = 5


def neighbour_overlap(reference: torch.Tensor, other: torch.Tensor, k: int = NEIGHBOURS) -> float:
    """Mean over rows of ``|N_k(reference, i) ∩ N_k(other, i)| / k``, where ``N_k(E, i)`` is the
    set of the ``k`` rows of ``E`` (other than ``i``) with the highest cosine to row ``i``: 1.0
    when the compressed embeddings rank every sentence's nearest neighbours as the original's do.

    >>> E = torch.eye(7)[:, :6] + 0.1
    >>> neighbour_overlap(E, E, k=2)
    1.0
    """
    if reference.shape != other.shape or reference.dim() != 2:
        raise TnvizError(f"embeddings to compare must be two (n, d) matrices of one shape; got "
                         f"{tuple(reference.shape)} and {tuple(other.shape)}")
    n = reference.shape[0]
    if not (isinstance(k, int) and 1 <= k < n):
        raise TnvizError(f"neighbour overlap needs 1 <= k < the number of rows ({n}); got k={k!r}")

    def top(E: torch.Tensor) -> torch.Tensor:
        unit = torch.nn.functional.normalize(E.double(), dim=1)
        sim = unit @ unit.T
        sim.fill_diagonal_(-math.inf)  # a sentence is not its own neighbour
        return sim.topk(k, dim=1).indices

    a, b = top(reference), top(other)
    shared = (a[:, :, None] == b[:, None, :]).any(dim=2).sum(dim=1)
    return float(shared.double().mean() / k)


@torch.no_grad()
def pooled_outputs(model: nn.Module, batches: Iterable[Any]) -> torch.Tensor:
    """One vector per sample of a text encoder: its main output (:func:`first_tensor`) averaged
    over the real tokens of the batch's ``attention_mask`` (the sentence-transformers mean
    pooling), ``(samples, hidden)`` float64 on the CPU."""
    rows = []
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            out = first_tensor(call_model(model, batch)).double()
            if out.dim() != 3:
                raise TnvizError(f"pooling needs per-token outputs (batch, tokens, hidden); got shape {tuple(out.shape)}")
            mask = position_mask(batch, out)
            mask = torch.ones_like(out[..., :1]) if mask is None else mask
            rows.append(((out * mask).sum(1) / mask.sum(1).clamp_min(1)).cpu())
    finally:
        model.train(was_training)
    if not rows:
        raise TnvizError("pooling needs at least one batch, got none")
    return torch.cat(rows)


@dataclass(frozen=True)
class Agreement:
    """How close ``other``'s outputs are to ``reference``'s on sample inputs (all over the concatenated outputs)."""

    rel_error: float  # ||y_other - y_ref||_F / ||y_ref||_F
    max_abs: float  # largest absolute difference
    cosine: float  # mean row-wise cosine of flattened outputs per sample
    top1: float | None  # fraction of samples whose argmax over the last dimension agrees (None for 1 output)
    samples: int


def first_tensor(output: Any) -> torch.Tensor:
    """The main output of a model call: a tensor, the first of a tuple, or ``last_hidden_state``."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if isinstance(output, dict):
        for value in output.values():
            if isinstance(value, torch.Tensor):
                return value
    raise TnvizError(f"a model's output must be a tensor, a tuple starting with one, or have last_hidden_state; got {type(output).__name__}")


def position_mask(batch: Any, output: torch.Tensor) -> torch.Tensor | None:
    """The batch's ``attention_mask`` (``(batch, tokens)``) shaped to broadcast over ``output``
    when the output has those leading axes (per-token outputs of a padded text batch), else ``None``:
    padding positions are not part of what a model computes for its inputs."""
    mask = batch.get("attention_mask") if isinstance(batch, dict) else None
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or output.dim() < 2 or output.shape[:2] != mask.shape:
        return None
    return mask.to(device=output.device, dtype=output.dtype).reshape(*mask.shape, *([1] * (output.dim() - 2)))


@torch.no_grad()
def output_agreement(reference: nn.Module, other: nn.Module, batches: Iterable[Any]) -> Agreement:
    """Compare two models' outputs on the same batches (tensors, tuples or keyword dicts).

    ``top1`` compares the argmax over the last dimension at every leading position (classes for a
    classifier, hidden units for an encoder); ``None`` when the last dimension has size 1.
    """
    ref_rows, other_rows, ref_top, other_top = [], [], [], []
    modes = (reference.training, other.training)
    reference.eval()
    other.eval()
    try:
        for batch in batches:
            a = first_tensor(call_model(reference, batch)).double().cpu()
            b = first_tensor(call_model(other, batch)).double().cpu()
            if a.shape != b.shape:
                raise TnvizError(f"models to compare must give outputs of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
            mask = position_mask(batch, a)
            if mask is not None:  # padding tokens are zeroed in both and left out of top-1
                a, b = a * mask, b * mask
            a2, b2 = (a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)) if a.dim() > 1 else (a[:, None], b[:, None])
            ref_rows.append(a2)
            other_rows.append(b2)
            if a.dim() >= 1 and a.shape[-1] > 1:
                keep = slice(None) if mask is None else mask.reshape(mask.shape[:2]).bool().reshape(-1)
                ref_top.append(a.argmax(dim=-1).reshape(-1)[keep])
                other_top.append(b.argmax(dim=-1).reshape(-1)[keep])
    finally:
        reference.train(modes[0])
        other.train(modes[1])
    if not ref_rows:
        raise TnvizError("output comparison needs at least one sample batch, got none")
    # per batch: text batches are padded to their own length, so their flattened rows differ in width
    top1 = float((torch.cat(ref_top) == torch.cat(other_top)).double().mean()) if ref_top else None
    ref_sq = diff_sq = 0.0
    worst, cosines = 0.0, []
    for y_ref, y_other in zip(ref_rows, other_rows):
        difference = y_other - y_ref
        ref_sq += float((y_ref ** 2).sum())
        diff_sq += float((difference ** 2).sum())
        worst = max(worst, float(difference.abs().max()))
        cosines.append(torch.nn.functional.cosine_similarity(y_ref, y_other, dim=1))
    rel = math.sqrt(diff_sq / ref_sq) if ref_sq > 0 else math.sqrt(diff_sq)
    cosine = torch.cat(cosines)
    return Agreement(rel, worst, float(cosine.mean()), top1, int(cosine.shape[0]))


@dataclass(frozen=True)
class CausalReport:
    """A causal LM on held-out token batches: ``perplexity`` = exp(mean next-token negative
    log-likelihood), ``kl`` = mean over the same positions of KL(reference || model) of the
    next-token distributions (nats), ``top1`` = the fraction of positions whose most likely next
    token is the reference's, over ``tokens`` predicted positions."""

    perplexity: float
    kl: float
    top1: float
    tokens: int

    def as_dict(self) -> dict[str, float]:
        return {"perplexity": self.perplexity, "next-token KL": self.kl, "top-1 agreement": self.top1}


def _logits(model: nn.Module, batch: Any) -> torch.Tensor:
    out = call_model(model, batch)
    logits = getattr(out, "logits", None)
    if logits is None and isinstance(out, torch.Tensor):
        logits = out
    if logits is None:
        raise TnvizError(f"a causal LM's output must hold logits; got {type(out).__name__}")
    return logits


@torch.no_grad()
def causal_lm_report(reference: nn.Module, model: nn.Module, batches: Iterable[Any]) -> CausalReport:
    """Perplexity of ``model`` on ``batches`` (dicts with ``input_ids`` and ``attention_mask``:
    position ``t`` predicts token ``t + 1`` where both are real tokens) and its next-token KL
    divergence from ``reference`` at those positions (0 when ``model is reference``).  The
    reference's logits are recomputed batch by batch, not kept: a vocabulary of 150k tokens makes
    them the largest tensors of the run."""
    nll = kl = 0.0
    agree = count = 0
    modes = (reference.training, model.training)
    reference.eval()
    model.eval()
    try:
        for batch in batches:
            ids = batch["input_ids"]
            mask = batch.get("attention_mask", torch.ones_like(ids)).bool()
            valid = (mask[:, 1:] & mask[:, :-1]).cpu()
            targets = ids[:, 1:].cpu()
            got = _logits(model, batch)[:, :-1]
            ref = got if model is reference else _logits(reference, batch)[:, :-1]
            for row in range(ids.shape[0]):  # one sequence at a time in float64
                keep = valid[row]
                if not keep.any():
                    continue
                log_q = torch.log_softmax(got[row][keep.to(got.device)].double().cpu(), dim=-1)
                nll -= float(log_q.gather(1, targets[row][keep][:, None]).sum())
                if model is not reference:
                    log_p = torch.log_softmax(ref[row][keep.to(ref.device)].double().cpu(), dim=-1)
                    kl += float((log_p.exp() * (log_p - log_q)).sum())
                    agree += int((log_p.argmax(-1) == log_q.argmax(-1)).sum())
                else:
                    agree += int(keep.sum())
                count += int(keep.sum())
    finally:
        reference.train(modes[0])
        model.train(modes[1])
    if not count:
        raise TnvizError("perplexity needs held-out batches with at least two real tokens in a row; got none")
    return CausalReport(math.exp(nll / count), max(kl / count, 0.0), agree / count, count)
