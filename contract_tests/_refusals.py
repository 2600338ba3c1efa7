"""A check the contract suites share: a call refuses each bad value with ValueError."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def refuses_each(
    call: Callable[[Any], object], values: Iterable[Any], what: str
) -> None:
    """``call(value)`` raises ValueError for every one of ``values``.

    Raises:
        AssertionError: naming ``what`` and the first value the call accepted.
    """
    for value in values:
        try:
            call(value)
        except ValueError:
            continue
        raise AssertionError(f"accepted {what} {value!r}")
