"""Number, percent and duration formatting for tables, the report and config snippets."""

from __future__ import annotations

import math
from typing import Any

MISSING = "-"


def opt_float(value: Any) -> float | None:
    """Return value as a float, or None when it is missing, NaN or not a number."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def num(value: Any, digits: int = 1, *, grouping: bool = False) -> str:
    """`12.3`; `-` for missing or NaN, `inf` for infinity, other text as it is.

    With `grouping`, thousands are separated (`1,234.5`) and whole numbers of 1,000 or more
    lose their decimals, as the report shows them.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        return MISSING if value is None or value == "" else str(value)
    if math.isnan(number):
        return MISSING
    if math.isinf(number):
        return "inf"
    if not grouping:
        return f"{number:.{digits}f}"
    if digits == 0 or number.is_integer() and abs(number) >= 1000:
        return f"{number:,.0f}"
    return f"{number:,.{digits}f}"


def whole(value: Any) -> str:
    """A count with thousands separators: `1,234`."""
    return num(value, 0, grouping=True)


def pct(value: Any, digits: int = 2) -> str:
    """A fraction as a percent: `0.0123` -> `1.23%`; `-` for missing."""
    number = opt_float(value)
    return MISSING if number is None else f"{number:.{digits}%}"


def signed_pct(value: Any, digits: int = 1) -> str:
    """A change already in percent, with its sign: `+4.2%`."""
    number = opt_float(value)
    return MISSING if number is None else f"{number:+.{digits}f}%"


def duration(seconds: Any) -> str:
    """A duration: `850 ms`, `12.5 s`, `3 min 48 s`."""
    value = opt_float(seconds)
    if value is None:
        return MISSING
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s"
