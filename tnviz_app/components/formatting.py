"""Numbers for people: ``human(1.5e9) == '1.50 G'``, ``human_bytes(3 * 2**20) == '3.00 MiB'``,
and tables whose numbers fit the browser's integer columns (``arrow_safe``).

>>> human(2.68e9, "FLOPs"), human(3.2e21)
('2.68 GFLOPs', '3.20e+21')
>>> arrow_safe([{"FLOPs": 2**70, "size": 3}])
[{'FLOPs': 1.1805916207174113e+21, 'size': 3}]
"""
from __future__ import annotations

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
