"""MPO / tensor-train decomposition by TT-SVD (Oseledets 2011): sequential truncated SVDs.

The weight tensor ``T[outputs..., inputs...]`` is permuted so that each core's legs are
adjacent, in chain order, exactly as :func:`tnviz.builders.mpo` places them (``in_cores`` /
``out_cores`` choose which core holds which leg), then split left to right.  Cores come out
left-orthogonal with the singular values pushed right.  ``rtol`` uses the per-bond threshold
``delta = rtol/sqrt(d-1)·||W||`` which guarantees ``||W - W~|| <= rtol·||W||``.
"""
from __future__ import annotations

import math
from typing import Any

from ..builders import mpo
from .legs import Legs, generic_to_legs, renamed
from .randomized import POWER_ITERS, describe, truncated_svd
from .result import MethodOutput
from .truncation import Truncation


def core_legs(net, legs: Legs) -> list[list[str]]:
    """The open legs of each core, in the core's index order."""
    open_ = set(legs.names)
    return [[i for i in t.indices if i in open_] for t in net.tensors]


def permuted(T, net, legs: Legs):
    """``T`` with its axes reordered core by core; returns the tensor and the per-core leg shapes."""
    per_core = core_legs(net, legs)
    pos = {n: k for k, n in enumerate(legs.names)}
    perm = [pos[n] for names in per_core for n in names]
    sizes = dict(zip(legs.names, legs.dims))
    shapes = [tuple(sizes[n] for n in names) for names in per_core]
    return T.permute(perm).contiguous(), shapes


def chain_network(legs: Legs, ring: bool):
    from ..builders import tensor_ring

    build = tensor_ring if ring else mpo
    net = build(legs.in_dims, legs.out_dims, 1, in_cores=legs.in_cores, out_cores=legs.out_cores)
    return renamed(net, generic_to_legs(legs))


def tt_svd(T, legs: Legs, trunc: Truncation, *, norm: float, randomized: Any = "auto", seed: int = 0,
           oversample: int = 10, power_iters: int | None = POWER_ITERS) -> MethodOutput:
    """TT-SVD of the weight tensor ``T`` (axes ``legs.names``)."""
    net = chain_network(legs, ring=False)
    X, shapes = permuted(T, net, legs)
    n = len(shapes)
    bonds = [f"b{k + 1}" for k in range(n - 1)]
    caps = trunc.caps(bonds)
    if trunc.kind == "rtol":
        trunc = Truncation("rtol", trunc.value, trunc.value * norm / math.sqrt(max(n - 1, 1)))
    cores, spectra, discarded, svds = [], {}, {}, {}
    C = X.reshape(-1)
    r_prev = 1
    for c, bond in enumerate(bonds):
        d = math.prod(shapes[c])
        C = C.reshape(r_prev * d, -1)
        res = truncated_svd(C, trunc, bond=bond, cap=caps[bond], randomized=randomized, seed=seed + c,
                            oversample=oversample, power_iters=power_iters)
        r = res.U.shape[1]
        core = res.U.reshape(r_prev, *shapes[c], r)
        cores.append(core[0] if c == 0 else core)
        C = res.s_vh()
        spectra[bond], discarded[bond] = res.spectrum, res.discarded
        svds[bond] = res
        r_prev = r
    last = C.reshape(r_prev, *shapes[-1])
    cores.append(last[0] if n == 1 else last)
    ranks = {b: cores[k].shape[-1] for k, b in enumerate(bonds)}
    net = net.with_sizes(**ranks) if ranks else net
    tensors = dict(zip(net.tensor_names, cores))
    return MethodOutput(net, tensors, spectra, discarded, describe(svds))
