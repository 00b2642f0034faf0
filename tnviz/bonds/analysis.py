"""Statistics of a bond: the entropy of its spectrum (:func:`bond_entropy`, the one place it is
computed), statistics of its activations and which of them a gauge move keeps (see
:mod:`tnviz.bonds`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import RankError, TnvizError


def bond_entropy(singular_values: Any) -> float:
    """Von Neumann entropy (nats) of ``p = s^2 / sum s^2`` over a bond's singular values: 0 for a
    product state (one value), ``log(n)`` for a flat spectrum of ``n`` values.  Takes a list, a
    numpy array or a torch tensor (read as float64 without importing torch).

    >>> import math
    >>> bond_entropy([3.0]), math.isclose(bond_entropy([1.0] * 4), math.log(4))
    (0.0, True)
    """
    values = singular_values
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().double().numpy()
    s = np.asarray(values if hasattr(values, "shape") else list(values), dtype=np.float64).reshape(-1)
    if s.size and (not np.all(np.isfinite(s)) or np.any(s < 0)):
        raise RankError(f"singular values must be finite and non-negative; got {s[:6].tolist()}...")
    p = s ** 2
    total = p.sum()
    if total <= 0:
        return 0.0
    p = p[p > 0] / total
    return float(-(p * np.log(p)).sum()) + 0.0  # + 0.0: one value gives 0.0, not -0.0


@dataclass(frozen=True)
class BondStats:
    """Statistics of ``(N, r)`` bond activations with class labels (see :func:`bond_stats`)."""

    classes: tuple[int, ...]
    class_means: np.ndarray  # (classes, r)
    selectivity: np.ndarray  # (classes, r): (mean in class - mean elsewhere) / std of the channel
    spectrum: np.ndarray  # eigenvalues of the covariance, descending
    rank: int  # numerical rank of the centred activations
    separation: np.ndarray  # eigenvalues of (within-class scatter)^-1 (between-class scatter), descending
    probe_accuracy: float  # least-squares linear read-out of the class (with bias), fit on half, scored on the other half
    total_variance: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def channels(self) -> int:
        return self.class_means.shape[1]

    @property
    def centred_means(self) -> np.ndarray:
        """Class means minus the mean over all samples: what tells the classes apart per channel."""
        return self.class_means - self.extra["overall_mean"]

    def channels_for(self, fraction: float = 0.9) -> int:
        """How many principal directions carry ``fraction`` of the variance."""
        if self.total_variance <= 0:
            return 0
        cum = np.cumsum(self.spectrum) / self.spectrum.sum()
        return int(np.searchsorted(cum, fraction - 1e-12) + 1)

    @property
    def participation_ratio(self) -> float:
        """``(sum λ)^2 / sum λ^2``: the effective number of channels carrying the variance."""
        s = self.spectrum
        return float(s.sum() ** 2 / max((s * s).sum(), 1e-300))

    def top_channels(self, k: int = 3) -> dict[int, list[int]]:
        """The ``k`` most selective channels of each class, most selective first."""
        order = np.argsort(-self.selectivity, axis=1, kind="stable")[:, :k]
        return {c: [int(j) for j in row] for c, row in zip(self.classes, order)}

    def values(self) -> dict[str, np.ndarray]:
        """Every quantity by its :data:`GAUGE_BEHAVIOUR` name."""
        return {
            "covariance spectrum": self.spectrum,
            "total variance": np.array([self.total_variance]),
            "rank": np.array([float(self.rank)]),
            "class-separation spectrum": self.separation,
            "linear probe accuracy": np.array([self.probe_accuracy]),
            "class means per channel": self.class_means,
            "selectivity per channel": self.selectivity,
        }


#: quantity -> (invariant under an orthogonal X, invariant under any invertible X, why).
GAUGE_BEHAVIOUR: dict[str, tuple[bool, bool, str]] = {
    "covariance spectrum": (True, False, "C -> MᵀCM: same eigenvalues only when M is orthogonal"),
    "total variance": (True, False, "trace(MᵀCM) = trace(C) only for orthogonal M"),
    "rank": (True, True, "H -> HM keeps the span of the activations (the subspace) and its dimension"),
    "class-separation spectrum": (True, True, "eig(W⁻¹B) -> eig(M⁻¹W⁻¹BM): similar matrices, same eigenvalues"),
    "linear probe accuracy": (True, True, "a linear read-out of HM is a linear read-out of H (held-out half)"),
    "class means per channel": (False, False, "each channel becomes a mixture of channels"),
    "selectivity per channel": (False, False, "per-channel, so it follows the mixing"),
}


def _one_hot(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    return (labels[:, None] == np.asarray(classes)[None, :]).astype(np.float64)


def bond_stats(acts: Any, labels: Any, classes: Sequence[int] | None = None, rtol: float = 1e-9,
               probe_seed: int = 0) -> BondStats:
    """Statistics of bond activations ``acts (N, r)`` with integer ``labels (N,)``, in float64.

    The linear probe is fit on a seeded, per-class half of the samples and scored on the other
    half (:func:`probe_split`); its accuracy on the fit half is ``extra['probe_fit_accuracy']``."""
    h = np.asarray(acts, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if h.ndim != 2 or h.shape[0] != y.shape[0] or h.shape[0] < 2:
        raise TnvizError(f"bond statistics need (N, channels) activations and N labels, N >= 2; got {h.shape} and {y.shape}")
    classes = tuple(int(c) for c in (np.unique(y) if classes is None else classes))
    onehot = _one_hot(y, classes)
    counts = onehot.sum(0)
    if np.any(counts == 0):
        raise TnvizError(f"every class needs samples; classes {[c for c, n in zip(classes, counts) if n == 0]} have none")
    means = (onehot.T @ h) / counts[:, None]
    overall = h.mean(0)
    centred = h - overall
    cov = centred.T @ centred / (len(h) - 1)
    spectrum = np.clip(np.linalg.eigvalsh(cov)[::-1], 0.0, None)
    sv = np.linalg.svd(centred, compute_uv=False)
    rank = int((sv > rtol * max(sv.max(initial=0.0), 1e-300)).sum())
    # selectivity (a d-prime): (class mean - mean of the rest) / std of the channel over all samples
    rest = (h.sum(0)[None, :] - means * counts[:, None]) / np.maximum(len(h) - counts, 1)[:, None]
    std = np.sqrt(np.maximum(np.diag(cov), 1e-300))
    selectivity = (means - rest) / std[None, :]
    # class-separation (Fisher) spectrum, computed in the span of the activations so a
    # rank-deficient bond does not make W singular
    within_c = h - onehot @ means
    between_c = (means - overall) * np.sqrt(counts)[:, None]
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    basis = vt[: rank].T  # (r, rank): the span of the centred activations
    W = basis.T @ (within_c.T @ within_c) @ basis
    B = basis.T @ (between_c.T @ between_c) @ basis
    if rank:
        L = np.linalg.cholesky(W + 1e-12 * np.trace(W) / rank * np.eye(rank))
        Linv = np.linalg.inv(L)
        separation = np.clip(np.linalg.eigvalsh(Linv @ B @ Linv.T)[::-1], 0.0, None)
    else:
        separation = np.zeros(0)
    fit, test = probe_split(y, seed=probe_seed)
    probe, probe_fit = linear_probe(h, onehot, fit, test, rtol)
    return BondStats(classes, means, selectivity, spectrum, rank, separation, probe, float(np.trace(cov)),
                     {"overall_mean": overall, "probe_fit_accuracy": probe_fit,
                      "probe_split": (int(len(fit)), int(len(test)))})


def probe_split(labels: Any, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(fit, test)``: each class's samples shuffled (seeded) and halved, so that the probe
    is scored on samples it was not fit on; a class with one sample goes to the fit half."""
    y = np.asarray(labels).reshape(-1)
    rng = np.random.default_rng(seed)
    fit, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        half = (len(idx) + 1) // 2
        fit.append(idx[:half])
        test.append(idx[half:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(test))


def linear_probe(h: np.ndarray, onehot: np.ndarray, fit: np.ndarray, test: np.ndarray,
                 rtol: float = 1e-9) -> tuple[float, float]:
    """Least-squares read-out of the class from ``h`` (with a bias), fit on rows ``fit``; returns the
    accuracy on rows ``test`` (NaN when empty) and on ``fit``.  The read-out works in the span of
    the fit rows' centred activations, so a gauge move ``H -> HM`` (M invertible) gives the same
    predictions wherever the fit rows span the bond."""
    mean = h[fit].mean(0)
    centred = h[fit] - mean
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    rank = int((s > rtol * max(s.max(initial=0.0), 1e-300)).sum())
    basis = vt[:rank].T

    def design(rows: np.ndarray) -> np.ndarray:
        return np.hstack([(h[rows] - mean) @ basis, np.ones((len(rows), 1))])

    coef, *_ = np.linalg.lstsq(design(fit), onehot[fit], rcond=None)

    def accuracy(rows: np.ndarray) -> float:
        if len(rows) == 0:
            return float("nan")
        return float(np.mean(np.argmax(design(rows) @ coef, 1) == np.argmax(onehot[rows], 1)))

    return accuracy(test), accuracy(fit)


def top_inputs(acts: Any, k: int = 5) -> np.ndarray:
    """``(channels, k)`` sample indices with the largest activation of each channel, largest first."""
    h = np.asarray(acts)
    k = min(k, h.shape[0])
    return np.argsort(-h, axis=0, kind="stable")[:k].T


def compare_stats(before: BondStats, after: BondStats) -> dict[str, float]:
    """Relative change ``max|after - before| / max|before|`` of every quantity of :meth:`BondStats.values`."""
    a, b = before.values(), after.values()
    out = {}
    for name in a:
        x, y = a[name], b[name]
        if x.shape != y.shape:
            out[name] = math.inf
            continue
        scale = max(float(np.max(np.abs(x), initial=0.0)), 1e-300)
        out[name] = float(np.max(np.abs(y - x), initial=0.0)) / scale
    return out
