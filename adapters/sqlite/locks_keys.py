"""Named locks and the key-value store of the SQLite broker.

A lock is a row ``(name, token, expires_at)``: taking it is one upsert that
succeeds only when no row exists or the existing one has expired, so two
processes can never both win. Each handle carries a random token, and release
or set_ttl only touch a row holding that token. Expiry is checked against the
broker's wall clock on every read, so a lapsed lock or key needs no sweeper.
"""

from __future__ import annotations

import sqlite3
import uuid

from sergeant.clock import Clock
from sergeant.protocols.lock import check_ttl
from sergeant.waiting import poll

from .database import Database

_LIVE = "(expires_at IS NULL OR expires_at > ?)"


class SqliteLock:
    """A handle on the lock ``name`` with its own token (see ``SupportsLocks``).

    Waiting in ``acquire`` polls every ``check_interval`` seconds of real time;
    expiry uses the broker's wall clock.
    """

    def __init__(self, database: Database, name: str, clock: Clock) -> None:
        self._db = database
        self._name = name
        self._clock = clock
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
        """Take the lock, polling up to ``timeout`` s (None: forever); True if taken.

        Not re-entrant: a handle that already holds the lock waits like any other.
        """
        check_ttl(ttl)
        return poll(
            lambda: self._db.write(lambda c: self._try_take(c, ttl)),
            timeout=timeout,
            check_interval=check_interval,
        )

    def _try_take(self, connection: sqlite3.Connection, ttl: float | None) -> bool:
        now = self._clock()
        expires = None if ttl is None else now + ttl
        taken = connection.execute(
            "INSERT INTO locks (name, token, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET token = excluded.token,"
            " expires_at = excluded.expires_at"
            " WHERE locks.expires_at IS NOT NULL AND locks.expires_at <= ?",
            (self._name, self._token, expires, now),
        )
        return taken.rowcount == 1

    def release(self) -> bool:
        """Release the lock if this handle holds it (and it has not lapsed)."""

        def drop(connection: sqlite3.Connection) -> bool:
            now = self._clock()
            row = connection.execute(
                "DELETE FROM locks WHERE name = ? AND token = ? RETURNING expires_at",
                (self._name, self._token),
            ).fetchone()
            # A lapsed row of ours is deleted too (it is free anyway) but the
            # caller no longer held the lock: False, as the port says.
            return row is not None and (row[0] is None or row[0] > now)

        return self._db.write(drop)

    def is_locked(self) -> bool:
        """Whether any handle holds the lock now."""
        return self._expiry() is not None

    def get_ttl(self) -> float | None:
        """Seconds before the lock lapses; None when free or held without ttl."""
        found = self._expiry()
        if found is None or found[0] is None:
            return None
        return max(found[0] - self._clock(), 0.0)

    def set_ttl(self, ttl: float) -> bool:
        """Make the lock lapse ``ttl`` s from now, if this handle holds it."""
        check_ttl(ttl)

        def renew(connection: sqlite3.Connection) -> bool:
            now = self._clock()
            changed = connection.execute(
                "UPDATE locks SET expires_at = ?"
                f" WHERE name = ? AND token = ? AND {_LIVE}",
                (now + ttl, self._name, self._token, now),
            )
            return changed.rowcount == 1

        return self._db.write(renew)

    def _expiry(self) -> tuple[float | None] | None:
        """``(expires_at,)`` of the live lock row, or None when the lock is free."""
        row: tuple[float | None] | None = self._db.read(
            lambda c: c.execute(
                f"SELECT expires_at FROM locks WHERE name = ? AND {_LIVE}",
                (self._name, self._clock()),
            ).fetchone()
        )
        return row


class KeyStore:
    """The ``SupportsKeys`` half of the broker: bytes values with optional ttls."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def get(self, key: str) -> bytes | None:
        """The live value under ``key``, or None."""
        row = self._db.read(
            lambda c: c.execute(
                f"SELECT value FROM keys WHERE key = ? AND {_LIVE}",
                (key, self._clock()),
            ).fetchone()
        )
        return None if row is None else bytes(row[0])

    def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Upsert ``key``; expired rows are swept by the same transaction."""

        def upsert(connection: sqlite3.Connection) -> None:
            now = self._clock()
            # Cheap (a range of the partial expiry index) and keeps the table
            # from growing with keys nobody reads again.
            connection.execute("DELETE FROM keys WHERE expires_at <= ?", (now,))
            connection.execute(
                "INSERT INTO keys (key, value, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
                " expires_at = excluded.expires_at",
                (key, bytes(value), None if ttl is None else now + ttl),
            )

        self._db.write(upsert)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True when it existed and had not expired."""

        def drop(connection: sqlite3.Connection) -> bool:
            now = self._clock()
            row = connection.execute(
                "DELETE FROM keys WHERE key = ? RETURNING expires_at", (key,)
            ).fetchone()
            return row is not None and (row[0] is None or row[0] > now)

        return self._db.write(drop)
