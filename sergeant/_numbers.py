"""Whether a value is a finite number, without tripping over big ints."""

from __future__ import annotations

import math


def finite_number(value: object) -> bool:
    """Whether ``value`` is an int or float (not a bool) that a float can hold,
    other than NaN and the infinities.

    ``math.isfinite`` raises OverflowError for an int past a float's range
    (``10**400``); such a number would fail later anyway, wherever it is added to
    a clock reading, so it counts as not finite here and is refused up front.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
