"""Tensor-ring decomposition by TR-SVD (Zhao et al. 2016, "Tensor ring decomposition", Alg. 1).

The first unfolding ``T(d1, rest)`` is split by one truncated SVD of rank ``R = r0·r1``; the
rank is factored into the ring bond ``r0`` (index ``bN``, closing the ring) and ``r1`` (``b1``)
as evenly as the caps allow (``ring_rank`` fixes ``r0``), and the ``r0`` leg is carried to the
end of the remainder, which is then split by TT-SVD.  ``rtol`` uses ``delta = rtol·||W||/sqrt(d)``
per SVD and ``sqrt(2)·delta`` for the first, which guarantees ``||W - W~|| <= rtol·||W||``.
The first SVD's spectrum describes the joint bond ``(bN, b1)``: it is reported on ``b1`` and
repeated on ``bN``, whose own discarded weight is 0.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import RankError
from .legs import Legs
from .randomized import POWER_ITERS, describe, truncated_svd
from .result import MethodOutput
from .truncation import Truncation
from .tt import chain_network, permuted


def split_rank(R: int, cap0: int | None, cap1: int | None, ring_rank: int | None = None) -> tuple[int, int]:
    """Factor ``R`` into ``r0 · r1`` (``r0`` the ring bond) with ``r0 <= cap0``, ``r1 <= cap1``,
    ``r0 <= r1`` and as balanced as possible; lowers ``R`` when no factorization fits."""
    cap0 = cap0 or R
    cap1 = cap1 or R
    if ring_rank is not None:
        r0 = min(ring_rank, R, cap0)
        return r0, max(1, min(R // r0, cap1))
    for total in range(R, 0, -1):
        best = None
        for r0 in range(1, int(math.isqrt(total)) + 1):
            if total % r0 == 0 and r0 <= cap0 and total // r0 <= cap1:
                best = (r0, total // r0)
        if best is None:
            # Try r0 > r1 when the caps force it.
            for r0 in range(int(math.isqrt(total)) + 1, total + 1):
                if total % r0 == 0 and r0 <= cap0 and total // r0 <= cap1:
                    best = (r0, total // r0)
                    break
        if best is not None:
            return best
    return 1, 1


def tr_svd(T, legs: Legs, trunc: Truncation, *, norm: float, randomized: Any = "auto", seed: int = 0,
           oversample: int = 10, power_iters: int | None = POWER_ITERS, ring_rank: int | None = None) -> MethodOutput:
    """TR-SVD of the weight tensor ``T`` (axes ``legs.names``)."""
    net = chain_network(legs, ring=True)
    X, shapes = permuted(T, net, legs)
    n = len(shapes)
    bonds = [f"b{k + 1}" for k in range(n)]
    ring = bonds[-1]
    caps = trunc.caps(bonds)
    if ring_rank is not None and (not isinstance(ring_rank, int) or ring_rank < 1):
        raise RankError(f"ring_rank (the size of the closing bond) must be a positive integer; got {ring_rank!r}")
    delta = trunc.value * norm / math.sqrt(n) if trunc.kind == "rtol" else None
    first_trunc = Truncation("rtol", trunc.value, delta * math.sqrt(2)) if delta is not None else trunc
    rest_trunc = Truncation("rtol", trunc.value, delta) if delta is not None else trunc
    first_cap = caps[ring] * caps["b1"] if caps[ring] is not None and caps["b1"] is not None else None
    if ring_rank is not None and caps["b1"] is not None:
        first_cap = ring_rank * caps["b1"] if first_cap is None else min(first_cap, ring_rank * caps["b1"])

    d0 = math.prod(shapes[0])
    C = X.reshape(d0, -1)
    res = truncated_svd(C, first_trunc, bond="b1", cap=first_cap, randomized=randomized, seed=seed,
                        oversample=oversample, power_iters=power_iters)
    R = res.U.shape[1]
    r0, r1 = split_rank(R, caps[ring], caps["b1"], ring_rank)
    keep = r0 * r1  # may be below R when the caps cannot factor R
    U, SVh = res.U[:, :keep], res.s_vh()[:keep]
    spectra = {"b1": res.spectrum, ring: res.spectrum}
    extra_disc = float((res.S[keep:].double() ** 2).sum()) if keep < R else 0.0
    discarded = {"b1": math.sqrt(res.discarded ** 2 + extra_disc), ring: 0.0}
    svds = {"b1": res}
    core0 = U.reshape(*shapes[0], r0, r1)
    nl = len(shapes[0])
    core0 = core0.permute(nl, *range(nl), nl + 1).contiguous()          # (r0, legs..., r1)
    cores = [core0]
    C = SVh.reshape(r0, r1, -1).permute(1, 2, 0).contiguous()  # (r1, rest, r0)
    r_prev = r1
    for c in range(1, n - 1):
        bond = bonds[c]
        d = math.prod(shapes[c])
        C = C.reshape(r_prev * d, -1)
        res = truncated_svd(C, rest_trunc, bond=bond, cap=caps[bond], randomized=randomized, seed=seed + c,
                            oversample=oversample, power_iters=power_iters)
        r = res.U.shape[1]
        cores.append(res.U.reshape(r_prev, *shapes[c], r))
        C = res.s_vh()
        spectra[bond], discarded[bond] = res.spectrum, res.discarded
        svds[bond] = res
        r_prev = r
    cores.append(C.reshape(r_prev, *shapes[-1], r0))
    ranks = {"b1": r1, ring: r0}
    for c in range(1, n - 1):
        ranks[bonds[c]] = cores[c].shape[-1]
    net = net.with_sizes(**ranks)
    ordered = {b: spectra[b] for b in bonds}
    return MethodOutput(net, dict(zip(net.tensor_names, cores)), ordered, {b: discarded[b] for b in bonds},
                        {**describe(svds), "ring_split": (r0, r1)})
