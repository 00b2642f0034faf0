"""Numbers for people: ``human(1.5e9) == '1.50 G'``, ``human_bytes(3 * 2**20) == '3.00 MiB'``."""
from __future__ import annotations

_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _three_digits(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"


def human(value: float, unit: str = "") -> str:
    """A count with an SI prefix and about three significant digits."""
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
