"""Clocks, injected so that tests control time instead of sleeping.

Two kinds are used on purpose: *wall* time (``time.time``) for anything that crosses a
process or machine boundary (a task's eta, a lease deadline stored in a broker), and
*monotonic* time for durations measured inside one process (starvation, back-off).
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]

wall: Clock = time.time
monotonic: Clock = time.monotonic


class FakeClock:
    """A clock that only moves when told to; for tests of time-based behaviour.

    Attributes:
        now: the current reading, in seconds.
    """

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds
