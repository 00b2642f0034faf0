"""Read model weights safely, one tensor at a time, never executing code from the file.

Accepted (checked by content, not only by extension):

* ``.safetensors``: the header read and checked by tnviz; each tensor read when asked, with a plain
  file read (never a memory map of the whole file: files larger than RAM open).
* ``.pt`` / ``.pth`` / ``.bin``: a PyTorch **state_dict** (nested dicts of tensors are flattened
  with dotted names), loaded with ``torch.load(weights_only=True, mmap=True)`` (legacy non-zip
  files without ``mmap``).
* ``.zip`` of a Hugging Face-format folder (``config.json`` + ``model.safetensors``, or shards
  named by ``model.safetensors.index.json``), extracted safely (no absolute paths, no ``..``, no
  links, size-capped), or such a folder given directly (:mod:`tnviz.model.hf_folder`).

The readers themselves are :mod:`tnviz.model.readers`; this module chooses one by content, lists
the weights a tensor network can replace (:func:`candidates`) and writes safetensors.

Refused with a :class:`~tnviz.errors.ModelFileError` naming the rule, the value and what to
upload instead: pickled modules, TorchScript archives, ``.pt2`` (torch.export) archives, unknown
extensions, files over the size cap, truncated or malformed files, files without a 2-D or 4-D
weight.

>>> import torch, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
>>> _ = save_safetensors({"fc.weight": torch.ones(3, 4), "fc.bias": torch.zeros(3)}, path)
>>> with open_weights(path) as weights:
...     [c.name for c in candidates(weights)], weights.shape("fc.weight")
(['fc.weight'], (3, 4))
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ModelFileError
from .hf_folder import HFFolderWeights, ShardedWeights, safe_extract
from .readers import (EXTENSIONS, MAX_FILE_BYTES, MAX_HEADER_BYTES, MAX_UPLOAD_BYTES, MAX_ZIP_BYTES,  # noqa: F401
                      MAX_ZIP_MEMBERS, STATE_DICT_EXTENSIONS, _REFUSALS, _WHAT_TO_UPLOAD, SafetensorsWeights,
                      StateDictWeights, WeightsFile, _check_size, sniff)

if TYPE_CHECKING:  # torch is imported where used
    import torch

# Names of weights that are normalisation parameters even when they are 2-D (rare, but e.g. some
# RMSNorm variants store (1, d)); biases are skipped by name and by being 1-D.
_NORM_PATTERN = re.compile(r"(^|[._])(norm|layernorm|layer_norm|ln(_\w+)?|bn\d*|batchnorm|rmsnorm)([._]|$)", re.I)
_EMBEDDING_PATTERN = re.compile(r"(embed|wte|wpe|tok_embeddings|word_embeddings|shared)", re.I)

__all__ = ["MAX_FILE_BYTES", "MAX_UPLOAD_BYTES", "EXTENSIONS", "WeightsFile", "SafetensorsWeights", "StateDictWeights",
           "HFFolderWeights", "ShardedWeights", "Candidate", "open_weights", "candidates", "candidate_kind",
           "save_safetensors", "safe_extract", "sniff", "state_dict_of"]


# --------------------------------------------------------------------------------------------
# Entry point


def open_weights(path: str | os.PathLike, max_bytes: int | None = None, require_weights: bool = True,
                 extract_to: str | os.PathLike | None = None) -> WeightsFile:
    """Open a weights file or Hugging Face folder for reading tensor by tensor.

    ``max_bytes`` caps the file (and a zip's uncompressed content); ``None`` (the default): no cap
    for safetensors, read tensor by tensor, and :data:`MAX_FILE_BYTES` for a file loaded or
    extracted whole (a pickled state dict, a zip). With ``require_weights`` the
    file must hold at least one 2-D or 4-D weight. A zip is extracted to ``extract_to`` (else a
    temporary folder removed by ``close()``). Raises :class:`ModelFileError` with the reason.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"a weights path must exist, got {str(path)!r}")
    if path.is_dir():
        weights: WeightsFile = HFFolderWeights(path, max_bytes=max_bytes)
    else:
        weights = _open_file(path, max_bytes, extract_to)
    if require_weights:
        try:
            if not candidates(weights):
                shapes = ", ".join(f"{n} {list(weights.shape(n))}" for n in weights.names()[:6])
                raise ModelFileError(
                    f"a model file must hold at least one 2-D (Linear/Embedding) or 4-D (Conv) weight; "
                    f"{path.name!r} has none ({shapes})"
                )
        except BaseException:
            weights.close()
            raise
    return weights


def _open_file(path: Path, max_bytes: int | None, extract_to: str | os.PathLike | None) -> WeightsFile:
    suffix = path.suffix.lower()
    if suffix == ".pt2":
        raise ModelFileError(f"{_REFUSALS['pt2']} (got {path.name!r})")
    if suffix not in EXTENSIONS:
        raise ModelFileError(
            f"a weights file must end in one of {', '.join(EXTENSIONS)}, got {path.name!r}; {_WHAT_TO_UPLOAD}"
        )
    kind = sniff(path)  # reads the first bytes only
    _check_size(path, max_bytes, streamed=kind == "safetensors")
    if kind in _REFUSALS:
        raise ModelFileError(f"{_REFUSALS[kind]} (got {path.name!r})")
    if kind == "unknown":
        raise ModelFileError(
            f"a weights file must be safetensors, a torch.save state_dict or a zip of a Hugging Face folder; "
            f"the content of {path.name!r} is none of these (truncated or another format); {_WHAT_TO_UPLOAD}"
        )
    if suffix == ".safetensors" and kind != "safetensors":
        raise ModelFileError(f"a .safetensors file must contain safetensors data, {path.name!r} contains {kind!r}")
    if suffix == ".zip" and kind != "hf_zip":
        raise ModelFileError(
            f"a .zip upload must be a Hugging Face folder (config.json + model.safetensors), "
            f"{path.name!r} contains {kind!r}; upload a .pt/.safetensors file directly instead"
        )
    if kind == "safetensors":
        return SafetensorsWeights(path)
    if kind in ("state_dict_zip", "pickle"):
        return StateDictWeights(path, kind)
    # hf_zip
    if extract_to is None:
        target = Path(tempfile.mkdtemp(prefix="tnviz-hf-"))
        cleanup: Path | None = target
    else:
        target, cleanup = Path(extract_to), None
    try:
        safe_extract(path, target, max_bytes=max_bytes if max_bytes is not None else MAX_ZIP_BYTES)
    except BaseException:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        raise
    return HFFolderWeights(target, cleanup=cleanup, max_bytes=max_bytes)


# --------------------------------------------------------------------------------------------
# Candidates and writing


@dataclass(frozen=True)
class Candidate:
    """A weight that a tensor network can replace: its name, shape, kind and parameter count."""

    name: str
    shape: tuple[int, ...]
    kind: str  # 'Linear' | 'Conv' | 'Embedding'
    params: int
    dtype: str = "float32"


_FLOAT_DTYPES = {"float64", "float32", "float16", "bfloat16"}


def candidate_kind(name: str, shape: tuple[int, ...]) -> str | None:
    """'Linear', 'Conv' or 'Embedding' for a compressible weight, ``None`` for biases, norms, buffers."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in ("bias", "running_mean", "running_var", "num_batches_tracked", "position_ids"):
        return None
    if _NORM_PATTERN.search(name):
        return None
    if len(shape) == 4:
        return "Conv"
    if len(shape) == 2 and min(shape) > 1:
        return "Embedding" if _EMBEDDING_PATTERN.search(name) else "Linear"
    return None


def candidates(weights: WeightsFile, pattern: str | None = None) -> list[Candidate]:
    """Compressible weights (2-D Linear/Embedding, 4-D Conv) whose names match ``pattern`` (regex search).

    Biases, norms, integer buffers and 1-D tensors are skipped; only shapes are read.
    """
    regex = None
    if pattern:
        try:
            regex = re.compile(pattern)
        except re.error as error:
            raise ModelFileError(f"a layer pattern must be a valid regular expression, got {pattern!r} ({error})") from error
    found = []
    for name in weights.names():
        if weights.dtype(name) not in _FLOAT_DTYPES:
            continue
        shape = weights.shape(name)
        kind = candidate_kind(name, shape)
        if kind is None or (regex is not None and not regex.search(name)):
            continue
        params = 1
        for size in shape:
            params *= size
        found.append(Candidate(name, shape, kind, params, weights.dtype(name)))
    return found


def save_safetensors(tensors: Mapping[str, "torch.Tensor"], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write tensors to ``path`` (CPU, contiguous, shared storage un-shared); atomic replace."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = {name: t.detach().to("cpu").contiguous().clone() for name, t in tensors.items()}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(plain, str(temporary), metadata=dict(metadata) if metadata else None)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def state_dict_of(weights: WeightsFile, device: Any = None) -> dict[str, "torch.Tensor"]:
    """All tensors as a dict (reads everything: for small models and tests)."""
    return {name: weights.get(name, device=device) for name in weights.names()}