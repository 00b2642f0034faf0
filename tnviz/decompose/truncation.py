"""Truncation settings and rank choice from a spectrum.

Exactly one of ``max_rank`` (one int for every bond, or a per-bond list/dict), ``rtol``
(relative Frobenius error of the whole result; MPO, TR and SVD turn it into a per-bond threshold
that guarantees the total, Tucker picks per-mode ranks on its measured HOSVD error), ``energy``
(kept fraction of the squared spectrum on each bond) or ``target_params`` (the largest uniform
rank whose network fits the count; Tucker spends it on per-mode ranks, see
:mod:`tnviz.decompose.tucker`); none means exact.

>>> import torch
>>> s = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64)
>>> choose_rank(s, Truncation("energy", 0.9), bond="b1")
2
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import RankError

KINDS = ("max_rank", "rtol", "energy", "target_params")


@dataclass(frozen=True)
class Truncation:
    """One truncation rule. ``kind`` is ``'exact'`` or one of :data:`KINDS`.

    For ``max_rank`` the value is an int or a per-bond mapping (resolved per method with
    :meth:`caps`); for ``rtol`` the value is the relative error of the whole result and
    ``delta`` (set by the method) the absolute per-bond threshold.
    """

    kind: str = "exact"
    value: Any = None
    delta: float | None = None

    def caps(self, bonds: Sequence[str]) -> dict[str, int | None]:
        """Per-bond rank caps (``None`` = uncapped) for the ``max_rank`` kind."""
        if self.kind != "max_rank":
            return {b: None for b in bonds}
        v = self.value
        if isinstance(v, int):
            return {b: v for b in bonds}
        if isinstance(v, Mapping):
            unknown = [k for k in v if k not in bonds]
            if unknown:
                raise RankError(f"max_rank keys must be bonds of the network {list(bonds)}; got {unknown[0]!r}")
            return {b: v.get(b) for b in bonds}
        v = list(v)
        if len(v) != len(bonds):
            raise RankError(
                f"a per-bond max_rank needs one value per bond {list(bonds)}; got {len(v)} values: {v}"
            )
        return dict(zip(bonds, v))


def _check_rank(r: Any, what: str) -> int:
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise RankError(f"{what} must be a positive integer; got {r!r}")
    return r


def parse_truncation(
    max_rank: Any = None, rtol: Any = None, energy: Any = None, target_params: Any = None
) -> Truncation:
    """Validate the user's truncation arguments (exactly one, or none for exact)."""
    given = {k: v for k, v in zip(KINDS, (max_rank, rtol, energy, target_params)) if v is not None}
    if len(given) > 1:
        raise RankError(f"give at most one truncation (max_rank, rtol, energy, target_params); got {sorted(given)}")
    if not given:
        return Truncation()
    kind, value = next(iter(given.items()))
    if kind == "max_rank":
        if isinstance(value, Mapping):
            value = {k: _check_rank(v, f"max_rank[{k!r}]") for k, v in value.items()}
        elif isinstance(value, (list, tuple)):
            value = [_check_rank(v, "every max_rank entry") for v in value]
        else:
            value = _check_rank(value, "max_rank")
    elif kind in ("rtol", "energy"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RankError(f"{kind} must be a number; got {value!r}")
        value = float(value)
        if kind == "rtol" and not 0.0 <= value < 1.0:
            raise RankError(f"rtol is a relative error in [0, 1); got {value}")
        if kind == "energy" and not 0.0 < value <= 1.0:
            raise RankError(f"energy is a kept fraction in (0, 1]; got {value}")
    else:
        value = _check_rank(value, "target_params")
    return Truncation(kind, value)


def tail_squares(s, total_sq: float | None = None) -> list[float]:
    """``tail[r]`` = sum of squared singular values discarded when keeping ``r`` (r = 0..len(s)).

    With a full spectrum the tails are summed from the small end (accurate); with a partial one
    (randomized), ``total_sq`` = ||A||_F^2 gives the exact discarded weight of the projection.
    """
    sq = [float(x) ** 2 for x in s.double().cpu().tolist()]
    if total_sq is None:
        tails = [0.0] * (len(sq) + 1)
        for k in range(len(sq) - 1, -1, -1):
            tails[k] = tails[k + 1] + sq[k]
        return tails
    tails, kept = [], 0.0
    for k in range(len(sq) + 1):
        tails.append(max(total_sq - kept, 0.0))
        if k < len(sq):
            kept += sq[k]
    return tails


def choose_rank(s, trunc: Truncation, *, bond: str, cap: int | None = None, total_sq: float | None = None) -> int:
    """The rank kept on one bond from its singular values ``s`` (descending).

    ``cap`` limits the result (from ``max_rank``); the result is at least 1 and at most ``len(s)``.
    For ``rtol`` the absolute threshold ``trunc.delta`` is used: the smallest rank whose discarded
    weight is at most ``delta``.  Returns ``len(s)`` when a partial spectrum is not long enough.
    """
    n = int(s.shape[0])
    if n == 0:
        raise RankError(f"a bond needs at least one singular value; bond {bond!r} has none")
    r = n
    if trunc.kind in ("rtol", "energy"):
        tails = tail_squares(s, total_sq)
        total = tails[0]
        if trunc.kind == "rtol":
            limit = (trunc.delta or 0.0) ** 2
        else:
            limit = (1.0 - trunc.value) * total
        # Relative slack so that a threshold equal to the exact tail is not lost to rounding.
        limit = limit * (1 + 1e-12)
        r = next((k for k in range(1, n + 1) if tails[k] <= limit), n)
    if cap is not None:
        r = min(r, cap)
    return max(1, min(r, n))
