"""Parsers for the text fields of the pages.  Each rejects bad text with a
``tnviz.InvalidNetworkError`` whose message names the rule and repeats the text.

>>> parse_int_list("8, 8 x 8", "input leg sizes")
(8, 8, 8)
>>> parse_ranks("4"), parse_ranks("4,8")
(4, (4, 8))
>>> parse_sizes("i=8, a=2")
{'i': 8, 'a': 2}
"""
from __future__ import annotations

import re

from tnviz import InvalidNetworkError

#: Most values one list field takes (legs per side, ranks).
MAX_ENTRIES = 16
#: Largest single size a field takes.
MAX_SIZE = 1 << 20

_SEP = re.compile(r"[\s,;x×*]+")


def _positive_int(token: str, what: str, text: str) -> int:
    if not token.isdigit() or int(token) <= 0:
        raise InvalidNetworkError(
            f"{what} must be positive whole numbers separated by commas (e.g. '8,8,8,8'); "
            f"{token!r} in {text!r} is not one"
        )
    value = int(token)
    if value > MAX_SIZE:
        raise InvalidNetworkError(f"{what} may be at most {MAX_SIZE:,} each; got {value:,} in {text!r}")
    return value


def parse_int_list(text: str, what: str, *, allow_empty: bool = False) -> tuple[int, ...]:
    """``"8,8,8,8"`` (commas, spaces or ``x`` between numbers) -> ``(8, 8, 8, 8)``."""
    tokens = [t for t in _SEP.split(str(text).strip()) if t]
    if not tokens and not allow_empty:
        raise InvalidNetworkError(f"{what} need at least one number (e.g. '8,8,8,8'); got {text!r}")
    if len(tokens) > MAX_ENTRIES:
        raise InvalidNetworkError(f"{what} take at most {MAX_ENTRIES} numbers; got {len(tokens)} in {text!r}")
    return tuple(_positive_int(t, what, text) for t in tokens)


def parse_ranks(text: str, what: str = "ranks") -> int | tuple[int, ...]:
    """One number (the same rank everywhere) -> ``int``; several -> a tuple, one per bond."""
    values = parse_int_list(text, what)
    return values[0] if len(values) == 1 else values


def parse_sizes(text: str) -> dict[str, int] | int:
    """Einsum index sizes: one number for every index, or ``"i=8, j=8, a=4"``."""
    stripped = str(text).strip()
    if stripped.isdigit():
        return _positive_int(stripped, "index sizes", text)
    out: dict[str, int] = {}
    for item in [t for t in re.split(r"[\s,;]+", stripped) if t]:
        key, eq, value = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z]", key.strip()):
            raise InvalidNetworkError(
                f"index sizes are one number or letter=size pairs (e.g. 'i=8, a=4'); {item!r} in {text!r} is not"
            )
        if key in out:
            raise InvalidNetworkError(f"each index is sized once; {key!r} is sized twice in {text!r}")
        out[key] = _positive_int(value.strip(), "index sizes", text)
    if not out:
        raise InvalidNetworkError(f"index sizes are one number or letter=size pairs (e.g. 'i=8, a=4'); got {text!r}")
    return out


def parse_letters(text: str, what: str) -> list[str]:
    """Einsum letters, written ``"ij"`` or ``"i, j"``."""
    letters = [c for c in str(text) if not c.isspace() and c != ","]
    bad = [c for c in letters if not re.fullmatch(r"[A-Za-z]", c)]
    if bad:
        raise InvalidNetworkError(f"{what} are einsum letters a-z, A-Z (e.g. 'ij'); {bad[0]!r} in {text!r} is not one")
    return letters
