"""Polling until something succeeds or a timeout passes.

``Lock.acquire(timeout=..., check_interval=...)`` has the same contract on every
broker, and on backends without notifications (SQLite, Redis ``SET NX``, MongoDB)
it is the same loop; adapters call this instead of each writing it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def poll(
    attempt: Callable[[], bool], *, timeout: float | None, check_interval: float
) -> bool:
    """Call ``attempt`` until it returns True (then True) or ``timeout`` passes.

    ``timeout`` None polls forever; a timeout of 0 tries exactly once. Waits
    ``check_interval`` seconds between attempts, never past the timeout.
    """
    give_up = None if timeout is None else time.monotonic() + timeout
    while not attempt():
        if give_up is None:
            time.sleep(check_interval)
            continue
        left = give_up - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(check_interval, left))
    return True
