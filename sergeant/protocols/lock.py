"""The Lock and key-value ports, which every broker adapter also provides.

A lock is named and shared by every process that uses the same broker; each ``Lock``
object holds its own random token, so only the object that acquired a lock can release
it or change its ttl. A ttl bounds how long a dead holder can block others.

Every implementation passes ``contract_tests/test_lock.py`` and ``test_keys.py``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from sergeant._numbers import finite_number


@runtime_checkable
class Lock(Protocol):
    """**Port**: a named distributed lock with a ttl, held by one token at a time."""

    @property
    def name(self) -> str:
        """The lock's name."""
        ...

    def acquire(
        self,
        *,
        timeout: float | None = None,
        check_interval: float = 0.05,
        ttl: float | None = 60.0,
    ) -> bool:
        """Take the lock, waiting up to ``timeout`` seconds (None: forever).

        Returns True when taken, False when the timeout passed. ``ttl`` (seconds)
        makes the lock lapse by itself; None keeps it until released.
        """
        ...

    def release(self) -> bool:
        """Release the lock if this object holds it; False (and no change) otherwise."""
        ...

    def is_locked(self) -> bool:
        """Whether anyone holds the lock now."""
        ...

    def get_ttl(self) -> float | None:
        """Seconds before the lock lapses; None when not held or held without ttl."""
        ...

    def set_ttl(self, ttl: float) -> bool:
        """Change the ttl if this object holds the lock; False otherwise."""
        ...


@runtime_checkable
class SupportsLocks(Protocol):
    """**Port** capability: the broker makes named locks."""

    def lock(self, name: str) -> Lock:
        """A new handle (with its own token) on the lock called ``name``."""
        ...


@runtime_checkable
class SupportsKeys(Protocol):
    """**Port** capability: a small key-value store beside the queues."""

    def get_key(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None (missing or expired)."""
        ...

    def set_key(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any; it lapses after ``ttl`` s."""
        ...

    def delete_key(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        ...


def check_ttl(ttl: float | None) -> None:
    """Raise ValueError unless ``ttl`` is None or a finite number of seconds > 0.

    For adapters, before acting on a lock's ttl: a lock taken with a ttl of 0 (or
    less, or NaN) would lapse as it is taken, and ``acquire`` would report a lock
    that nobody holds.
    """
    if ttl is None:
        return
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise ValueError(f"ttl must be a number of seconds or None, got {ttl!r}")
    if not (finite_number(ttl) and ttl > 0):
        raise ValueError(f"ttl must be > 0 seconds (finite) or None, got {ttl!r}")
