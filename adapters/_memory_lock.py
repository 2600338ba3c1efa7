"""Named locks and the key-value store of ``MemoryBroker``.

Kept apart from the queues so each half stays small. Both measure ttls with the
broker's injected wall clock, so a test's fake clock makes them lapse without
sleeping; lock *timeouts* are waits of the calling thread and use real time.
"""

from __future__ import annotations

import threading
import time
import uuid

from sergeant.clock import Clock
from sergeant.protocols.lock import check_ttl


class LockTable:
    """Every lock of one broker: name -> (holder token, lapse time or None)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.cond = threading.Condition()
        self._held: dict[str, tuple[str, float | None]] = {}

    def holder(self, name: str) -> tuple[str, float | None] | None:
        """The live (token, lapse time) of ``name``; drops it if lapsed. Hold cond."""
        entry = self._held.get(name)
        if entry is not None and entry[1] is not None and entry[1] <= self.clock():
            del self._held[name]
            return None
        return entry

    def take(self, name: str, token: str, ttl: float | None) -> bool:
        """Take ``name`` for ``token`` if free. Hold cond."""
        if self.holder(name) is not None:
            return False
        self._held[name] = (token, None if ttl is None else self.clock() + ttl)
        return True

    def give_back(self, name: str, token: str) -> bool:
        """Free ``name`` if ``token`` holds it. Hold cond."""
        entry = self.holder(name)
        if entry is None or entry[0] != token:
            return False
        del self._held[name]
        self.cond.notify_all()
        return True

    def retime(self, name: str, token: str, ttl: float) -> bool:
        """Make ``name`` lapse ``ttl`` s from now if ``token`` holds it. Hold cond."""
        entry = self.holder(name)
        if entry is None or entry[0] != token:
            return False
        self._held[name] = (token, self.clock() + ttl)
        return True


class MemoryLock:
    """A handle on one named lock of a ``MemoryBroker``, with its own token.

    Args:
        table: the broker's lock table.
        name: the lock's name; handles with the same name exclude each other.
    """

    def __init__(self, table: LockTable, name: str) -> None:
        self._table = table
        self._name = name
        self._token = uuid.uuid4().hex

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._name

    def acquire(
        self,
        *,
        timeout: float | None = None,
        check_interval: float = 0.05,
        ttl: float | None = 60.0,
    ) -> bool:
        """Take the lock, waiting up to ``timeout`` real seconds (None: forever).

        A release wakes waiters at once; ``check_interval`` bounds how late a waiter
        notices a lock whose ttl lapsed (nothing signals a lapse).
        """
        check_ttl(ttl)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._table.cond:
            while not self._table.take(self._name, self._token, ttl):
                left = check_interval
                if deadline is not None:
                    left = min(left, deadline - time.monotonic())
                    if left <= 0:
                        return False
                self._table.cond.wait(left)
            return True

    def release(self) -> bool:
        """Release the lock if this handle holds it; False otherwise."""
        with self._table.cond:
            return self._table.give_back(self._name, self._token)

    def is_locked(self) -> bool:
        """Whether any handle holds the lock now."""
        with self._table.cond:
            return self._table.holder(self._name) is not None

    def get_ttl(self) -> float | None:
        """Seconds before the lock lapses; None when free or held without ttl."""
        with self._table.cond:
            entry = self._table.holder(self._name)
            if entry is None or entry[1] is None:
                return None
            return entry[1] - self._table.clock()

    def set_ttl(self, ttl: float) -> bool:
        """Make the lock lapse ``ttl`` s from now if this handle holds it."""
        check_ttl(ttl)
        with self._table.cond:
            return self._table.retime(self._name, self._token, ttl)


class KeyStore:
    """A bytes key-value store whose entries lapse after an optional ttl."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._mutex = threading.Lock()
        self._values: dict[str, tuple[bytes, float | None]] = {}

    def _live(self, key: str) -> bytes | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[1] is not None and entry[1] <= self._clock():
            del self._values[key]
            return None
        return entry[0]

    def get(self, key: str) -> bytes | None:
        """The value under ``key``, or None when missing or lapsed."""
        with self._mutex:
            return self._live(key)

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store ``value``, replacing any value and ttl."""
        with self._mutex:
            expires = None if ttl is None else self._clock() + ttl
            self._values[key] = (bytes(value), expires)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed (and had not lapsed)."""
        with self._mutex:
            found = self._live(key) is not None
            self._values.pop(key, None)
            return found


class LocksAndKeys:
    """The ``SupportsLocks`` and ``SupportsKeys`` half of ``MemoryBroker``."""

    def __init__(self, clock: Clock) -> None:
        self._locks = LockTable(clock)
        self._keys = KeyStore(clock)

    def lock(self, name: str) -> MemoryLock:
        """A new handle, with its own token, on the lock called ``name``."""
        return MemoryLock(self._locks, name)

    def get_key(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None (missing or lapsed)."""
        return self._keys.get(key)

    def set_key(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any; it lapses after ``ttl`` s."""
        check_ttl(ttl)
        self._keys.set(key, value, ttl)

    def delete_key(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        return self._keys.delete(key)
