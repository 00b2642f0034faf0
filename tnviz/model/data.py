"""The data that ships with tnviz, nothing downloaded: scikit-learn's digits and the bundled sentences.

* :func:`digits_split`: the 1797 8x8 digits of ``sklearn.datasets.load_digits`` split once by a
  fixed permutation (75 % training / calibration, 25 % held out);
* :func:`sentences`: the English sentences in ``tnviz/model/sentences.txt``; ``'calibration'`` takes 3 of
  every 4, ``'heldout'`` every 4th, so calibration and evaluation never share a sentence.

>>> len(sentences("heldout")) * 3 <= len(sentences("calibration")) + 3
True
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ModelFileError
from .device import resolve_device


@dataclass(frozen=True)
class DigitsSplit:
    """Images as ``(N, 1, 8, 8)`` float32 in [0, 1] and labels ``(N,)`` int64; fixed 75/25 split."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits_file() -> Path | None:
    """scikit-learn's ``datasets/data/digits.csv.gz``, found without importing scikit-learn (None if absent)."""
    spec = importlib.util.find_spec("sklearn")  # a top-level name: finding it runs none of its code
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as ``load_digits`` gives them: images ``(1797, 8, 8)`` float64 and labels int64.

    Read from the file ``load_digits`` reads (64 pixel columns then the label): importing
    scikit-learn for it took 1-2 s on a 2-core CPU (scipy.stats and the rest), the file 6 ms."""
    path = digits_file()
    if path is None:
        from sklearn.datasets import load_digits  # a layout this reader does not know: ask scikit-learn

        data = load_digits()
        return data.images, data.target
    flat = np.loadtxt(path, delimiter=",")
    return flat[:, :-1].reshape(-1, 8, 8), flat[:, -1].astype(np.int64)


@functools.lru_cache(maxsize=1)
def digits_split() -> DigitsSplit:
    """scikit-learn's bundled digits (1797 images), split once by a fixed permutation (seed 0)."""
    images, target = _digits_arrays()
    x = torch.tensor(images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(target, dtype=torch.int64)
    # RandomState is numpy's frozen legacy generator: the same permutation on every version.
    order = torch.from_numpy(np.random.RandomState(0).permutation(len(y)))
    n_test = len(y) // 4
    test, train = order[:n_test], order[n_test:]
    return DigitsSplit(x[train], y[train], x[test], y[test])


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


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices from the shortest item to the longest (stable).  Batches cut in this order pad
    little: the bundled sentences as MiniLM tokens are 3,766 rows padded in their own order and
    2,941 sorted, for 2,851 real tokens.  Statistics and metrics summed over the real rows (input
    moments, perplexity, KL, mean cosines) do not depend on the order, up to rounding."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


def sentences_path() -> Path:
    return Path(__file__).resolve().parent / "sentences.txt"


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
