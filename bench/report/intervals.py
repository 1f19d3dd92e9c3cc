"""A ratio with its 95% interval, written the same way wherever one is printed (glance, tables, training and
inference alike): ``1.34x [0.95, 1.91]``, and, when the interval holds 1.00, ``no difference established`` after it,
so a reader never takes a ratio the data cannot tell from 1 for a gain or a loss.
"""
from __future__ import annotations

import math
from typing import Any

NO_DIFFERENCE = "no difference established"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def holds_one(lo: Any, hi: Any) -> bool:
    """Whether the interval [lo, hi] includes 1 (no difference established)."""
    return _finite(lo) and _finite(hi) and lo <= 1.0 <= hi


def ratio_ci(x: Any, lo: Any = None, hi: Any = None) -> str:
    """``1.34x [0.95, 1.91] (no difference established)``; ``1.34x [1.10, 1.60]``; ``1.34x`` without an interval
    (the caller says why there is none); blank when there is no ratio."""
    if not _finite(x):
        return ""
    text = f"{x:.2f}x"
    if not (_finite(lo) and _finite(hi)):
        return text
    text += f" [{lo:.2f}, {hi:.2f}]"
    return f"{text} ({NO_DIFFERENCE})" if holds_one(lo, hi) else text
