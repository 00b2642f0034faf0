"""Leg factorizations: how ``in_features`` / ``out_features`` split into tensor legs.

>>> balanced_factors(4096, 4)
(8, 8, 8, 8)
>>> auto_legs(384, 1536)
((8, 8, 6), (16, 12, 8))
"""
from __future__ import annotations

import math

from .errors import InvalidNetworkError


def prime_factors(n: int) -> list[int]:
    """Prime factors of ``n`` with multiplicity, ascending."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise InvalidNetworkError(f"a feature count must be a positive integer; got {n!r}")
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


def balanced_factors(n: int, legs: int) -> tuple[int, ...]:
    """Split ``n`` into ``legs`` factors as equal as possible (descending order).

    Primes are placed largest first onto the currently smallest factor; a factor of 1 appears
    only when ``n`` has fewer prime factors than ``legs``.
    """
    if not isinstance(legs, int) or legs < 1:
        raise InvalidNetworkError(f"the number of legs must be a positive integer; got {legs!r}")
    factors = [1] * legs
    for p in sorted(prime_factors(n), reverse=True):
        k = min(range(legs), key=lambda j: factors[j])
        factors[k] *= p
    return tuple(sorted(factors, reverse=True))


def max_legs(n: int) -> int:
    """The most legs ``n`` can be split into without a leg of size 1."""
    return max(1, len(prime_factors(n)))


def imbalance(factors: tuple[int, ...]) -> float:
    """Ratio of the largest to the smallest factor (1.0 is perfectly balanced)."""
    return max(factors) / min(factors)


def propose_legs(
    in_features: int, out_features: int, *, max_count: int = 6, min_leg: int = 2
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Candidate ``(in_dims, out_dims)`` factorizations, best first.

    Candidates use between 1 and ``max_count`` legs per side with every leg at least ``min_leg``
    (when the count of prime factors allows); the score prefers equal leg counts on both sides,
    balanced legs and legs near 8, which keeps cores small and bonds useful.
    """
    def options(n: int) -> list[tuple[int, ...]]:
        out = []
        for k in range(1, min(max_count, max_legs(n)) + 1):
            f = balanced_factors(n, k)
            if min(f) >= min_leg or k == 1:
                out.append(f)
        return out

    def score(pair: tuple[tuple[int, ...], tuple[int, ...]]) -> float:
        a, b = pair
        legs_gap = abs(len(a) - len(b))
        size_pen = sum(abs(math.log2(d) - 3) for d in a + b) / len(a + b)
        return legs_gap * 1.5 + size_pen + math.log2(imbalance(a)) + math.log2(imbalance(b))

    pairs = [(a, b) for a in options(in_features) for b in options(out_features)]
    return sorted(pairs, key=score)


def auto_legs(in_features: int, out_features: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The best proposal of :func:`propose_legs`."""
    return propose_legs(in_features, out_features)[0]
