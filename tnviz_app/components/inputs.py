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

#: Between entries: a comma or semicolon; inside one entry, numbers may be written "8 x 8" or "8 8".
_ENTRY_SEP = re.compile(r"[,;]")
_WITHIN = re.compile(r"\s*[x×*]\s*|\s+")


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
    """``"8,8,8,8"`` (commas, spaces or ``x`` between numbers) -> ``(8, 8, 8, 8)``.

    Every separator stands between two numbers: ``"4,x,4"`` (``x`` is no number) and ``"4,,4"``
    (an empty entry) are refused, naming what is wrong, rather than read as two legs."""
    raw = str(text).strip()
    if not raw:
        if allow_empty:
            return ()
        raise InvalidNetworkError(f"{what} need at least one number (e.g. '8,8,8,8'); got {text!r}")
    tokens: list[str] = []
    empty = False
    for entry in _ENTRY_SEP.split(raw):
        entry = entry.strip()
        if not entry:
            empty = True
            continue
        if not any(ch.isdigit() for ch in entry):
            _positive_int(entry, what, text)  # refuses it, by name
        for part in _WITHIN.split(entry):
            if part:
                tokens.append(part)
            else:
                empty = True
    for token in tokens:
        _positive_int(token, what, text)
    if empty:
        raise InvalidNetworkError(
            f"{what} must be positive whole numbers separated by commas (e.g. '8,8,8,8'); {text!r} has an empty "
            f"entry (two separators in a row, or one at an end)"
        )
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
