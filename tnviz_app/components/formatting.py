r"""Numbers for people: ``human(1.5e9) == '1.50 G'``, ``human_bytes(3 * 2**20) == '3.00 MiB'``,
and tables whose numbers fit the browser's integer columns (``arrow_safe``).

>>> human(2.68e9, "FLOPs"), human(3.2e21)
('2.68 GFLOPs', '3.20e+21')
>>> arrow_safe([{"FLOPs": 2**70, "size": 3}])
[{'FLOPs': 1.1805916207174113e+21, 'size': 3}]

Metric tiles take :func:`count` and :func:`times` (short enough for a narrow tile, exact where
that fits); user-provided text inside markdown goes through :func:`md_escape`:

>>> count(2560), count(16_777_216), times(6553.6), times(12.8), times(1.004)
('2,560', '16.8 M', '6,554x', '12.8x', '1.00x')
>>> print(md_escape("__main__.Net *a* (x)"))
\_\_main\_\_.Net \*a\* (x)
"""
from __future__ import annotations

import re
from typing import Any, Iterable

_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
#: Above this a count is written in scientific notation (no prefix reads well past peta).
_SCIENTIFIC = 1e18
#: Arrow (st.dataframe) stores integers as int64.
_INT64_MAX = 2**63 - 1


def _three_digits(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"


def human(value: float, unit: str = "") -> str:
    """A count with an SI prefix and about three significant digits (scientific beyond 10^18)."""
    if abs(value) >= _SCIENTIFIC:
        return f"{float(value):.2e} {unit}".rstrip()
    for factor, prefix in _PREFIXES:
        if abs(value) >= factor:
            return f"{_three_digits(value / factor)} {prefix}{unit}"
    text = f"{value:,.0f}" if float(value).is_integer() else _three_digits(value)
    return f"{text} {unit}".rstrip()


def count(n: float) -> str:
    """A count for a metric tile: exact with separators below 100,000 (six characters), else
    :func:`human` ("16.8 M"), so a value never needs more than a narrow tile."""
    return f"{n:,.0f}" if abs(n) < 100_000 and float(n).is_integer() else human(n)


def times(ratio: float) -> str:
    """A ratio such as a compression ("6,554x", "12.8x", "1.00x")."""
    if abs(ratio) >= _SCIENTIFIC:
        return f"{ratio:.2e}x"
    if abs(ratio) >= 1e5:
        return f"{human(ratio)}x".replace(" ", "")
    return f"{ratio:,.0f}x" if abs(ratio) >= 100 else f"{_three_digits(ratio)}x"


#: Characters that make markdown syntax anywhere in a line in Streamlit's renderer (CommonMark
#: emphasis, code, links, HTML, tables, strikethrough, LaTeX); ``()``, ``.``, ``-`` only matter
#: after ``]`` or at the start of a line, handled below.
_MD_SPECIAL = set("\\`*_[]<#$~|")
#: Emoji / icon shortcodes (":smile:", ":material/x:") and colour directives (":red[...]").
_SHORTCODE = re.compile(r":(?=[A-Za-z0-9_+/-]+:)")
#: A line that would start a list, a quote or a heading.
_LINE_START = re.compile(r"^(\s*)([-+=>]|\d+[.)])", re.M)


def md_escape(text: object) -> str:
    """``text`` (a file, layer or network name, an error message) shown literally inside
    ``st.markdown``/``st.info``/``st.error``...: markdown characters are backslash-escaped, so a
    refusal naming ``__main__.Net`` does not turn "main" bold; plain words, spaces, commas,
    colons and brackets that cannot start syntax stay as they are."""
    out = "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in str(text))
    out = _SHORTCODE.sub(r"\\:", out)
    # a backslash escapes punctuation only: "1." becomes "1\\.", "-" becomes "\\-"
    return _LINE_START.sub(lambda m: m.group(1) + m.group(2)[:-1] + "\\" + m.group(2)[-1], out)


def human_bytes(n: int) -> str:
    """Bytes in binary units (B, KiB, MiB, GiB, TiB)."""
    if n < 1024:
        return f"{n:,} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.2f} {unit}"


def arrow_safe(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows whose integer columns fit int64: a column holding a larger count (FLOPs of a
    network with many legs pass 2^63) becomes float in every row, so Arrow can store it."""
    rows = [dict(r) for r in rows]
    wide = {k for r in rows for k, v in r.items()
            if isinstance(v, int) and not isinstance(v, bool) and abs(v) > _INT64_MAX}
    for r in rows:
        for k in wide:
            if isinstance(r.get(k), int) and not isinstance(r[k], bool):
                r[k] = float(r[k])
    return rows
