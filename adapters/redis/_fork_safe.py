"""A lock that a forked child gets afresh.

A ``threading.Lock`` that another thread holds at the moment of a ``fork`` stays
held for ever in the child, where that thread does not exist: the child's first
call that takes it hangs. The process executor forks the worker, broker and all,
while the lease keeper's thread may be inside the broker; so the broker's own
locks are made new in every child.
"""

from __future__ import annotations

import os
import threading
import weakref
from types import TracebackType


class ForkSafeLock:
    """A ``threading.Lock`` (``with`` only) renewed in the child after a fork."""

    __slots__ = ("__weakref__", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _LIVE.add(self)

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._lock.release()


_LIVE: weakref.WeakSet[ForkSafeLock] = weakref.WeakSet()


def _renew_in_child() -> None:
    for lock in list(_LIVE):
        lock._lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_in_child)
