"""Locks and keys for ``MongoBroker``: one small document each.

A lock is ``{name, token, expires_at, expire_on}`` in ``<prefix>.locks`` with a
unique index on ``name``; a key is ``{key, value, expires_at, expire_on}`` in
``<prefix>.keys``. ``expires_at`` (the broker's wall clock, or null for "never") is
what every query checks. ``expire_on`` is only for the TTL index, which deletes
lapsed documents eventually (its monitor runs every 60 s), so it is set from the
real clock with a margin and correctness never depends on it.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from bson import Binary
from pymongo.errors import DuplicateKeyError

from sergeant.clock import Clock
from sergeant.protocols.lock import check_ttl
from sergeant.waiting import poll

from ._guard import Guard

__all__ = ["MongoKeys", "MongoLock"]

_GC_MARGIN = 60.0  # seconds the TTL monitor waits past expires_at (clock skew)


def _ttl_fields(now: float, ttl: float | None) -> dict[str, Any]:
    """``$set`` and ``$unset`` for a ttl (None: never lapses)."""
    if ttl is None:
        return {"$set": {"expires_at": None}, "$unset": {"expire_on": ""}}
    collect = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        seconds=ttl + _GC_MARGIN
    )
    return {"$set": {"expires_at": now + ttl, "expire_on": collect}}


def _live(now: float) -> dict[str, Any]:
    """Matches documents that have not lapsed at ``now``."""
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


class MongoLock:
    """A named lock held by one token at a time (implements the ``Lock`` port).

    Acquiring is one upsert whose filter matches only a *lapsed* lock document:
    when the lock is free and never made, the upsert inserts it; when it lapsed, it
    takes it over; when it is held, the filter matches nothing, the upsert tries to
    insert a second document with the same name, and the unique index refuses
    (``DuplicateKeyError``): not acquired. Releasing and changing the ttl match on
    this handle's token, so no other handle can do either.

    Args:
        locks: the locks collection.
        guard: runs (and retries, and translates) each driver call.
        clock: the wall clock for ttls.
        name: the lock's name.
    """

    def __init__(self, locks: Any, guard: Guard, clock: Clock, name: str) -> None:
        self._locks = locks
        self._guard = guard
        self._clock = clock
        self._name = name
        self._token = os.urandom(16).hex()

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
        """Take the lock, trying every ``check_interval`` s for up to ``timeout`` s."""
        check_ttl(ttl)
        return poll(
            lambda: self._try_acquire(ttl),
            timeout=timeout,
            check_interval=check_interval,
        )

    def _try_acquire(self, ttl: float | None) -> bool:
        now = self._clock()
        update = _ttl_fields(now, ttl)
        update["$set"]["token"] = self._token

        free: dict[str, Any] = {"name": self._name, "expires_at": {"$lte": now}}
        calls = 0

        def upsert() -> bool:
            nonlocal calls
            calls += 1
            # A repeat is the guard retrying after a fault: the first attempt may
            # have taken the lock and lost its reply, so this handle's own token
            # counts as free (else the lock stays taken by nobody who knows it).
            wanted = (
                free
                if calls == 1
                else {
                    "name": self._name,
                    "$or": [{"expires_at": {"$lte": now}}, {"token": self._token}],
                }
            )
            try:
                self._locks.update_one(wanted, update, upsert=True)
            except DuplicateKeyError:
                return False  # held by someone: the unique index said no
            return True

        return self._guard.run("lock acquire", upsert)

    def release(self) -> bool:
        """Delete the lock document if this handle holds it and it has not lapsed."""
        mine = {"name": self._name, "token": self._token, **_live(self._clock())}
        calls = 0

        def delete() -> bool:
            nonlocal calls
            calls += 1
            if self._locks.delete_one(mine).deleted_count:
                return True
            # A repeat is the guard retrying after a fault: the first attempt may
            # have deleted it and lost the reply. A lock nobody holds counts as
            # released by this handle.
            return (
                calls > 1
                and self._locks.find_one({"name": self._name, **_live(self._clock())})
                is None
            )

        return self._guard.run("lock release", delete)

    def is_locked(self) -> bool:
        """Whether any handle holds the lock now."""
        held = {"name": self._name, **_live(self._clock())}
        doc = self._guard.run("is_locked", lambda: self._locks.find_one(held))
        return doc is not None

    def get_ttl(self) -> float | None:
        """Seconds left on the lock, whoever holds it; None if free or ttl-less."""
        now = self._clock()
        doc = self._guard.run(
            "lock get_ttl",
            lambda: self._locks.find_one({"name": self._name}, {"expires_at": 1}),
        )
        expires_at = None if doc is None else doc.get("expires_at")
        if expires_at is None or expires_at <= now:
            return None
        return float(expires_at - now)

    def set_ttl(self, ttl: float) -> bool:
        """Make the lock lapse ``ttl`` s from now if this handle holds it."""
        check_ttl(ttl)
        now = self._clock()
        mine = {"name": self._name, "token": self._token, **_live(now)}
        result = self._guard.run(
            "lock set_ttl",
            lambda: self._locks.update_one(mine, _ttl_fields(now, ttl)),
        )
        return bool(result.matched_count)


class MongoKeys:
    """The key-value store (``SupportsKeys``) over the keys collection.

    Args:
        keys: the keys collection.
        guard: runs (and retries, and translates) each driver call.
        clock: the wall clock for ttls.
    """

    def __init__(self, keys: Any, guard: Guard, clock: Clock) -> None:
        self._keys = keys
        self._guard = guard
        self._clock = clock

    def get(self, key: str) -> bytes | None:
        """The value under ``key`` unless missing or lapsed."""
        live = {"key": key, **_live(self._clock())}
        doc = self._guard.run(
            "get_key", lambda: self._keys.find_one(live, {"value": 1})
        )
        return None if doc is None else bytes(doc["value"])

    def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Upsert ``value`` under ``key`` with ``ttl`` (None clears an old one)."""
        update = _ttl_fields(self._clock(), ttl)
        update["$set"]["value"] = Binary(bytes(value))
        self._guard.run(
            "set_key",
            lambda: self._keys.update_one({"key": key}, update, upsert=True),
        )

    def delete(self, key: str) -> bool:
        """Delete ``key``, lapsed or not; True only when it was live."""
        now = self._clock()
        doc = self._guard.run(
            "delete_key",
            lambda: self._keys.find_one_and_delete(
                {"key": key}, projection={"expires_at": 1}
            ),
        )
        if doc is None:
            return False
        expires_at = doc.get("expires_at")
        return expires_at is None or expires_at > now
