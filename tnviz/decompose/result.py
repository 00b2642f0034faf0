"""The result of a decomposition: the network, its tensors, spectra, errors and timing."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..network import TensorNetwork


@dataclass
class MethodOutput:
    """What one method returns to :func:`tnviz.decompose.decompose` (before errors are measured).

    ``discarded`` is absolute here (sqrt of the sum of squared discarded singular values of the
    decomposed matrix); the public result divides it by that matrix's norm.
    """

    network: TensorNetwork
    tensors: dict[str, Any]
    spectra: dict[str, Any]
    discarded: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decomposition:
    """A weight decomposed into a tensor network.

    ``spectra`` holds per bond / rank index the singular values *before* truncation (cpu
    float64; the leading ones only when ``extra['randomized']`` lists the bond); ``discarded``
    the discarded weight per bond relative to the decomposed matrix's norm (``||W||``, or
    ``||W L||`` with an input covariance ``C = L L^T``); ``rel_error`` is measured,
    ``||W - W~||_F / ||W||_F``; ``data_error`` is ``||(W - W~) X|| / ||W X||`` under the input
    covariance when one was given.

    >>> import torch
    >>> from tnviz.decompose import decompose
    >>> W = torch.randn(16, 16, dtype=torch.float64)
    >>> res = decompose(W, "mpo", in_dims=[4, 4], out_dims=[4, 4])
    >>> res.rel_error < 1e-12, res.to_weight().shape
    (True, torch.Size([16, 16]))
    """

    method: str
    network: TensorNetwork
    tensors: dict[str, Any]
    spectra: dict[str, Any]
    discarded: dict[str, float]
    rel_error: float
    data_error: float | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    weight_shape: tuple[int, ...] = ()
    #: What ran, in words: e.g. ``"TT-SVD; randomized SVD on b2 (b2: 4 Krylov steps); exact SVD on
    #: b1, b3"`` or ``"HOOI from HOSVD, 6 sweeps (converged: ...)"``.
    algorithm: str = ""

    def to_dense(self):
        """The approximated matrix ``(out_features, in_features)``, contracted by :func:`tnviz.to_dense`."""
        from ..contract import to_dense

        return to_dense(self.network, self.tensors)

    def to_weight(self):
        """The approximated weight in the original shape (conv kernels come back 4-D)."""
        dense = self.to_dense()
        return dense.reshape(self.weight_shape) if self.weight_shape else dense

    @property
    def params(self) -> int:
        return self.network.params

    @property
    def dense_params(self) -> int:
        return self.network.dense_params

    @property
    def compression(self) -> float:
        return self.network.compression

    @property
    def compresses(self) -> bool:
        """Whether the network has fewer parameters than the dense weight.  A loose ``rtol`` on a
        weight with a flat spectrum can keep (nearly) every rank, and a Tucker or MPO network at
        full rank holds *more* numbers than the matrix; ``extra['note']`` then says so.  Callers
        that replace layers keep such a weight dense."""
        return self.params < self.dense_params

    @property
    def ranks(self) -> dict[str, int]:
        """Size of every bond / rank index (``b1..``, ``r1..``, ``r``)."""
        sizes = self.network.sizes
        return {k: sizes[k] for k in self.network.internal_indices}

    @property
    def entropies(self) -> dict[str, float]:
        """Bond entropy per bond, ``-sum p log p`` with ``p = s^2 / sum s^2`` over the spectrum
        before truncation (nats; 0 for a product state, ``log r`` for a flat spectrum of ``r``)."""
        out = {}
        for bond, s in self.spectra.items():
            p = s.double() ** 2
            total = float(p.sum())
            if total <= 0:
                out[bond] = 0.0
                continue
            p = p[p > 0] / total
            out[bond] = float(-(p * p.log()).sum())
        return out

    def bound(self) -> float:
        """The error bound from the discarded weight, ``sqrt(sum discarded^2)`` (TT, TR, Tucker, SVD)."""
        return math.sqrt(sum(v * v for v in self.discarded.values()))

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary (no arrays)."""
        return {
            "method": self.method, "params": self.params, "dense_params": self.dense_params,
            "ranks": self.ranks, "rel_error": self.rel_error, "data_error": self.data_error,
            "seconds": self.seconds, "discarded": dict(self.discarded),
            "randomized": self.extra.get("randomized", []), "algorithm": self.algorithm,
            "compresses": self.compresses,
        }
