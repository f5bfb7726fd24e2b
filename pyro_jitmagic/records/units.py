"""Durations and counts in words, as every record and reason says them."""

from __future__ import annotations

# (unit, its length in seconds, the first figure that goes to the next unit)
_UNITS = (("µs", 1e-6, 1000.0), ("ms", 1e-3, 1000.0), ("s", 1.0, 120.0), ("min", 60.0, 120.0),
          ("h", 3600.0, float("inf")))


def seconds(value: float | None) -> str:
    """A duration with a unit that keeps about three significant figures.

    The unit is chosen after rounding: 0.9996 s shows as ``1 s``, not ``1e+03 ms``.
    """
    if value is None or value != value:
        return "n/a"
    sign, size = ("-" if value < 0 else ""), abs(value)
    for unit, length, limit in _UNITS:
        shown = f"{size / length:.3g}"
        if float(shown) < limit:
            return f"{sign}{shown} {unit}"
    return f"{sign}{size / 3600:.3g} h"  # (inf)


def plural(n: int, word: str) -> str:
    """``"1 step"``, ``"3 steps"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"
