"""Tucker decomposition by truncated HOSVD (De Lathauwer et al. 2000), optionally refined by
HOOI (``hooi_iters``).

One factor ``U_k[leg_k, r_k]`` per leg (outputs first, then inputs, as
:func:`tnviz.builders.tucker` orders them) from the leading left singular vectors of the mode-k
unfolding; the core ``G = T ×_k U_k^T``.  The error obeys ``||T - T~||^2 <= sum_k discarded_k^2``
(HOOI only lowers it), so ``rtol`` uses ``delta = rtol·||W||/sqrt(N)`` per mode.
"""
from __future__ import annotations

import math
from typing import Any

from ..builders import tucker
from .legs import Legs
from .randomized import truncated_svd
from .result import MethodOutput
from .truncation import Truncation


def unfold(T, mode: int):
    """The mode-``mode`` unfolding ``(d_mode, prod(other dims))``."""
    return T.movedim(mode, 0).reshape(T.shape[mode], -1)


def mode_product(T, M, mode: int):
    """``T ×_mode M``: contract axis ``mode`` of ``T`` with the columns of ``M`` (``M[new, old]``)."""
    import torch

    return torch.movedim(torch.tensordot(M, T, dims=([1], [mode])), 0, mode)


def project(T, factors, skip: int | None = None):
    """``T ×_k U_k^T`` over every mode except ``skip``."""
    G = T
    for k, U in enumerate(factors):
        if k != skip:
            G = mode_product(G, U.mT, k)
    return G


def tucker_network(legs: Legs, ranks):
    return tucker(legs.in_dims, legs.out_dims, list(ranks), in_names=legs.in_names, out_names=legs.out_names)


def hosvd(T, legs: Legs, trunc: Truncation, *, norm: float, randomized: Any = "auto", seed: int = 0,
          oversample: int = 10, power_iters: int = 2, hooi_iters: int = 0) -> MethodOutput:
    """Truncated HOSVD (+ ``hooi_iters`` HOOI sweeps) of ``T`` (axes ``legs.names``)."""
    N = T.ndim
    bonds = [f"r{k + 1}" for k in range(N)]
    caps = trunc.caps(bonds)
    if trunc.kind == "rtol":
        trunc = Truncation("rtol", trunc.value, trunc.value * norm / math.sqrt(N))
    factors, spectra, discarded, used_random = [], {}, {}, []
    for k, bond in enumerate(bonds):
        res = truncated_svd(unfold(T, k), trunc, bond=bond, cap=caps[bond], randomized=randomized,
                            seed=seed + k, oversample=oversample, power_iters=power_iters)
        factors.append(res.U)
        spectra[bond], discarded[bond] = res.spectrum, res.discarded
        if res.randomized:
            used_random.append(bond)
    history = []
    for _ in range(int(hooi_iters)):
        for k in range(N):
            Y = project(T, factors, skip=k)
            r = factors[k].shape[1]
            res = truncated_svd(unfold(Y, k), Truncation("max_rank", r), bond=bonds[k], cap=r,
                                randomized=randomized, seed=seed + k, oversample=oversample,
                                power_iters=power_iters)
            factors[k] = res.U
        G = project(T, factors)
        history.append(math.sqrt(max(norm ** 2 - float(G.double().pow(2).sum()), 0.0)) / norm if norm else 0.0)
    G = project(T, factors)
    net = tucker_network(legs, [U.shape[1] for U in factors])
    tensors = {"G": G.contiguous()}
    tensors.update({f"U{k + 1}": U.contiguous() for k, U in enumerate(factors)})
    extra = {"randomized": used_random}
    if hooi_iters:
        extra["hooi_history"] = history
    return MethodOutput(net, tensors, spectra, discarded, extra)
