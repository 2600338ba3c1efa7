"""SqliteBroker: the embedded default broker, one SQLite file shared by processes.

Any number of producer and worker processes on one machine may open the same
file. Every read-modify-write is one short ``BEGIN IMMEDIATE`` transaction, so
a task is never handed out twice under a live lease nor lost; busy files are
retried with back-off and then reported as ``BrokerUnavailable``. See
``schema.py`` for how ready, delayed and leased tasks map to one ``due_at``
column, and ``database.py`` for connections, threads and forks.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator, Sequence

from sergeant.clock import Clock
from sergeant.errors import ConfigError
from sergeant.protocols.broker import (
    DeadLetter,
    Delivery,
    QueueLengths,
    check_eta,
    check_limit,
    check_reserve,
    check_seconds,
)
from sergeant.protocols.lock import check_ttl
from sergeant.task import Priority

from .database import Database
from .locks_keys import KeyStore, SqliteLock
from .schema import LENGTHS, QUEUES
from .url import MAX_BUSY_TIMEOUT, parse_url

_PRIORITIES = tuple(sorted(int(p) for p in Priority))  # HIGH (0) first
_CHUNK = 500  # ids per IN (...) list: far below SQLite's variable limit
_FIRST_POLL, _MAX_POLL = 0.005, 0.1  # reserve(wait=...) polling pauses, seconds
# Seconds between the due times of tasks released together (ahead of the line):
# far above the float resolution of epoch seconds, so each keeps its place.
_STEP = 1e-3

_RESERVE_IDS = (
    "SELECT id FROM tasks WHERE queue = ? AND priority = ? AND due_at <= ?"
    " ORDER BY due_at, id LIMIT ?"
)
# Statements on a list of row ids leased under one token (the ``leases`` count the
# reserve gave them, see ``_leased``): a receipt acts only on the lease it came
# with, never on a later holder's. "+queue" keeps the planner off the queue
# indexes: with many ids it would otherwise scan the whole queue, not the rowids.
_HELD = "+queue = ? AND leases = ? AND lease_owner IS NOT NULL AND id IN ({marks})"
BY_ID_SQL = {
    "ack": f"DELETE FROM tasks WHERE {_HELD}",
    # due_at per priority (HIGH, NORMAL): the head of its line, or a delay's end.
    "release": "UPDATE tasks SET lease_owner = NULL,"
    " due_at = CASE priority WHEN 0 THEN ? ELSE ? END,"
    f" deliveries = max(deliveries - 1, 0) WHERE {_HELD}",
    "extend": f"UPDATE tasks SET due_at = ? WHERE {_HELD}",
}
_ANY_READY = " OR ".join(
    f"EXISTS (SELECT 1 FROM tasks WHERE queue = :q AND priority = {p}"
    " AND due_at <= :now)"
    for p in _PRIORITIES
)


def _leased_in_order(deliveries: Sequence[Delivery]) -> list[tuple[int, int]]:
    """Leased receipts (``<row id>:<token>``) as ``(row id, token)``, in order.

    The token is the row's ``leases`` count as that reserve set it. Every reserve
    of the row raises it and nothing ever lowers it (unlike ``deliveries``, which
    a release takes back), and row ids are never reused, so no two leases share a
    receipt: a stale one (its lease lapsed, or it was released, and another
    reserve retook the row) matches nothing. Receipts of tasks popped without
    lease (a bare row id: the row is gone) and receipts this broker cannot have
    issued are skipped.
    """
    pairs = []
    for d in deliveries:
        row, sep, token = d.receipt.partition(":")
        if sep and _small_int(row) and _small_int(token):
            pairs.append((int(row), int(token)))
    return pairs


def _leased(deliveries: Sequence[Delivery]) -> dict[int, list[int]]:
    """The leased receipts as token -> row ids (one statement per token)."""
    by_token: dict[int, list[int]] = {}
    for row, token in _leased_in_order(deliveries):
        by_token.setdefault(token, []).append(row)
    return by_token


def _storable(text: str) -> str:
    """``text`` with any lone surrogate written as a ``\\udcxx`` escape.

    Python puts lone surrogates in a str decoded with ``surrogateescape``, such as
    a file name from ``os.fsdecode`` that is not UTF-8, so an exception's message
    can hold one; SQLite stores UTF-8, which cannot encode them. A dead letter's
    reason is kept this way rather than refused, so the task is still recorded.
    Any other text is returned unchanged.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _small_int(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) < 19


def _chunks(ids: list[int]) -> Iterator[tuple[str, list[int]]]:
    """``(placeholders, ids)`` per slice of ``ids`` short enough for one statement."""
    for start in range(0, len(ids), _CHUNK):
        part = ids[start : start + _CHUNK]
        yield ",".join("?" * len(part)), part


class SqliteBroker:
    """A broker, lock maker and key-value store in one SQLite file (WAL mode).

    Safe for many threads and many processes of one machine at once; not for
    network filesystems (SQLite's locking is unreliable there). Wall-clock times
    (etas, leases, ttls) come from ``clock``, so processes sharing a file must
    share a reasonably synchronised clock, which one machine does.

    Args:
        path: the database file; created, with its tables, on first use.
        clock: wall-clock seconds since the epoch.
        busy_timeout: seconds to wait for another process's write lock before a
            retry; after ``retries`` retries the call raises ``BrokerUnavailable``.
        retries: extra attempts after SQLite reports the file busy.
    """

    def __init__(
        self,
        path: str,
        *,
        clock: Clock = time.time,
        busy_timeout: float = 5.0,
        retries: int = 4,
    ) -> None:
        if sqlite3.sqlite_version_info < (3, 35):
            raise ConfigError(
                f"SqliteBroker needs SQLite >= 3.35 (RETURNING); this Python links"
                f" {sqlite3.sqlite_version}"
            )
        if not (
            isinstance(busy_timeout, int | float)
            and not isinstance(busy_timeout, bool)
            and math.isfinite(busy_timeout)
            and 0 <= busy_timeout <= MAX_BUSY_TIMEOUT
        ):
            raise ConfigError(
                f"SqliteBroker.busy_timeout must be a number of seconds from 0 to "
                f"{MAX_BUSY_TIMEOUT:,}, got {busy_timeout!r}"
            )
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(
                f"SqliteBroker.retries must be an int >= 0, got {retries!r}"
            )
        if path in ("", ":memory:"):
            # Each connection would get its own private in-memory database.
            raise ConfigError("SqliteBroker needs a file path, not an in-memory db")
        self._clock = clock
        self._db = Database(path, busy_timeout=busy_timeout, retries=retries)
        self._keys = KeyStore(self._db, clock)

    @classmethod
    def from_url(cls, url: str, *, clock: Clock = time.time) -> SqliteBroker:
        """A broker for ``sqlite:///relative.db`` or ``sqlite:////abs.db`` (see
        ``parse_url``)."""
        path, options = parse_url(url)
        return cls(path, clock=clock, busy_timeout=options.get("busy_timeout", 5.0))

    @property
    def path(self) -> str:
        """The database file."""
        return self._db.path

    def push(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        priority: Priority = Priority.NORMAL,
        eta: float | None = None,
    ) -> None:
        """Store ``payloads`` in one transaction (one ``executemany``).

        A ready task is due at its push time, a delayed one at its eta; FIFO
        within a priority is (due time, row id) order, which is push order as
        long as the wall clock does not step backwards between pushes.
        """
        check_eta(eta)
        level = int(Priority(priority))  # ValueError for anything else
        if not payloads:
            return

        def insert(connection: sqlite3.Connection) -> None:
            now = self._clock()
            due = now if eta is None else max(eta, now)
            connection.executemany(
                "INSERT INTO tasks (queue, priority, payload, due_at) VALUES (?,?,?,?)",
                ((queue, level, payload, due) for payload in payloads),
            )

        self._db.write(insert)

    def reserve(
        self,
        queue: str,
        *,
        owner: str,
        count: int = 1,
        lease: float | None = 60.0,
        wait: float = 0.0,
        ack: Sequence[Delivery] = (),
    ) -> list[Delivery]:
        """Ack ``ack``, then lease up to ``count`` due tasks, HIGH first, atomically.

        SQLite cannot notify, so ``wait`` is spent polling: a cheap read-only
        check after pauses of 5 ms doubling up to 100 ms, and a reserving
        transaction only once something is due. A push is thus seen within
        about 100 ms.
        """
        check_reserve(count, lease, wait)
        acks = _leased(ack)
        got = self._db.write(
            lambda c: self._reserve_in(
                c, queue, owner=owner, count=count, lease=lease, acks=acks
            )
        )
        if got or wait <= 0 or count < 1:
            return got
        deadline = time.monotonic() + wait
        pause = _FIRST_POLL
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _MAX_POLL)
            if self._db.read(lambda c: self._any_ready(c, queue)):
                got = self._db.write(
                    lambda c: self._reserve_in(
                        c, queue, owner=owner, count=count, lease=lease, acks={}
                    )
                )
                if got:
                    return got
        return []

    def _any_ready(self, connection: sqlite3.Connection, queue: str) -> bool:
        params = {"q": queue, "now": self._clock()}
        return bool(connection.execute(f"SELECT {_ANY_READY}", params).fetchone()[0])

    def _reserve_in(
        self,
        connection: sqlite3.Connection,
        queue: str,
        *,
        owner: str,
        count: int,
        lease: float | None,
        acks: dict[int, list[int]],
    ) -> list[Delivery]:
        _delete(connection, queue, acks)
        now = self._clock()
        ids: list[int] = []
        for level in _PRIORITIES:
            if len(ids) >= count:
                break
            rows = connection.execute(
                _RESERVE_IDS, (queue, level, now, count - len(ids))
            )
            ids.extend(row[0] for row in rows)
        rows_by_id: dict[int, tuple[bytes, int, int]] = {}
        for marks, part in _chunks(ids):
            if lease is None:  # at-most-once: gone as it is handed out
                sql = f"DELETE FROM tasks WHERE id IN ({marks})"
                sql += " RETURNING id, payload, deliveries + 1, 0"
                params: list[object] = [*part]
            else:
                # ``leases`` is the receipt's token: raised by every reserve,
                # never lowered, so this lease's receipt is one no earlier
                # holder of the row was given (see ``_leased_in_order``).
                sql = "UPDATE tasks SET lease_owner = ?, due_at = ?,"
                sql += " deliveries = deliveries + 1, leases = leases + 1"
                sql += f" WHERE id IN ({marks})"
                sql += " RETURNING id, payload, deliveries, leases"
                params = [owner, now + lease, *part]
            for row_id, payload, deliveries, token in connection.execute(sql, params):
                rows_by_id[row_id] = (payload, deliveries, token)
        # RETURNING order is unspecified: restore the FIFO order of the SELECT.
        if lease is None:
            return [
                Delivery(receipt=str(i), payload=row[0], deliveries=row[1])
                for i in ids
                if (row := rows_by_id.get(i)) is not None
            ]
        return [
            Delivery(receipt=f"{i}:{row[2]}", payload=row[0], deliveries=row[1])
            for i in ids
            if (row := rows_by_id.get(i)) is not None
        ]

    def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Delete the tasks (one DELETE per 500); unknown or stale receipts are
        no-ops."""
        held = _leased(deliveries)
        if held:
            self._db.write(lambda c: _delete(c, queue, held))

    def release(
        self, queue: str, deliveries: Sequence[Delivery], *, delay: float = 0.0
    ) -> None:
        """Unlease the tasks: at the head of their line, or due after ``delay``;
        the delivery is un-counted (``leases``, the receipt token, is not, so the
        next holder's receipt differs from this one)."""
        check_seconds("delay", delay, zero=True)
        held = _leased_in_order(deliveries)

        def unlease(connection: sqlite3.Connection) -> None:
            now = self._clock()
            if delay > 0:
                due = [now + delay] * len(_PRIORITIES)
                step = 0.0  # they are delayed: their etas order them
            else:
                # Stepping up from before the head, in the order given: the first
                # given is first in line (a shared due time would fall back to row
                # id order, which is push order, not the order they were taken).
                heads = _heads(connection, queue, now)
                due = [head - _STEP * len(held) for head in heads]
                step = _STEP
            connection.executemany(
                BY_ID_SQL["release"].format(marks="?"),
                (
                    (*(d + i * step for d in due), queue, token, row)
                    for i, (row, token) in enumerate(held)
                ),
            )

        if held:
            self._db.write(unlease)

    def extend(
        self, queue: str, deliveries: Sequence[Delivery], *, lease: float
    ) -> None:
        """Move the lease ends of tasks still leased to ``lease`` s from now."""
        check_seconds("lease", lease)
        held = _leased(deliveries)

        def renew(connection: sqlite3.Connection) -> None:
            until = self._clock() + lease
            for token, ids in held.items():
                for marks, part in _chunks(ids):
                    connection.execute(
                        BY_ID_SQL["extend"].format(marks=marks),
                        [until, queue, token, *part],
                    )

        if held:
            self._db.write(renew)

    def release_owner(self, queue: str, owner: str) -> int:
        """Put every task leased to ``owner`` at the head of its line (in push
        order); delivery counts stand."""

        def reclaim(connection: sqlite3.Connection) -> int:
            due = _heads(connection, queue, self._clock())
            return connection.execute(
                "UPDATE tasks SET lease_owner = NULL,"
                " due_at = CASE priority WHEN 0 THEN ? ELSE ? END"
                " WHERE queue = ? AND lease_owner = ?",
                (*due, queue, owner),
            ).rowcount

        return self._db.write(reclaim)

    def dead_letter(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Move the task to the dead-letter store, in one transaction.

        A leased task is moved only while its receipt's lease holds (a holder
        whose lease lapsed, or a retried call, records nothing); a task reserved
        with ``lease=None`` is already gone, so its delivery's payload is kept.
        A lone surrogate in ``reason`` is stored escaped (see ``_storable``).
        """
        held = _leased([delivery])
        reason = _storable(reason)

        def move(connection: sqlite3.Connection) -> None:
            payload = delivery.payload
            for token, ids in held.items():
                row = connection.execute(
                    "DELETE FROM tasks WHERE +queue = ? AND leases = ?"
                    " AND lease_owner IS NOT NULL AND id = ? RETURNING payload",
                    (queue, token, ids[0]),
                ).fetchone()
                if row is None:
                    return  # not held any more: its holder now settles it
                payload = row[0]
            connection.execute(
                "INSERT INTO dead_letters (queue, payload, reason, dead_at)"
                " VALUES (?, ?, ?, ?)",
                (queue, payload, reason, self._clock()),
            )

        self._db.write(move)

    def lengths(self, queue: str) -> QueueLengths:
        """Count ready (lapsed leases included), delayed, in-flight and dead tasks."""
        params = {"q": queue, "now": self._clock()}
        ready, delayed, in_flight, dead = self._db.read(
            lambda c: c.execute(LENGTHS, params).fetchone()
        )
        return QueueLengths(
            ready=ready, delayed=delayed, in_flight=in_flight, dead=dead
        )

    def purge(self, queue: str) -> int:
        """Delete the queue's live tasks; dead letters stay."""
        return self._db.write(
            lambda c: c.execute("DELETE FROM tasks WHERE queue = ?", (queue,)).rowcount
        )

    def queues(self) -> list[str]:
        """Sorted names of queues holding any task or dead letter."""
        return self._db.read(lambda c: [row[0] for row in c.execute(QUEUES)])

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``queue``, oldest first."""
        check_limit(limit)
        rows = self._db.read(
            lambda c: c.execute(
                "SELECT payload, reason, dead_at FROM dead_letters WHERE queue = ?"
                " ORDER BY id LIMIT ?",
                (queue, limit),
            ).fetchall()
        )
        return [DeadLetter(payload=p, reason=r, dead_at=t) for p, r, t in rows]

    def replay_dead(self, queue: str, *, limit: int | None = None) -> int:
        """Move the oldest dead letters back as ready NORMAL tasks, atomically."""
        check_limit(limit)

        def replay(connection: sqlite3.Connection) -> int:
            rows = connection.execute(
                "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters"
                " WHERE queue = ? ORDER BY id LIMIT ?) RETURNING id, payload",
                (queue, -1 if limit is None else limit),
            ).fetchall()
            rows.sort()  # RETURNING order is unspecified; keep the oldest first
            now, level = self._clock(), int(Priority.NORMAL)
            connection.executemany(
                "INSERT INTO tasks (queue, priority, payload, due_at) VALUES (?,?,?,?)",
                ((queue, level, payload, now) for _, payload in rows),
            )
            return len(rows)

        return self._db.write(replay)

    def purge_dead(self, queue: str) -> int:
        """Delete the queue's dead letters; return how many."""
        return self._db.write(
            lambda c: (
                c.execute("DELETE FROM dead_letters WHERE queue = ?", (queue,)).rowcount
            )
        )

    def lock(self, name: str) -> SqliteLock:
        """A new handle, with its own token, on the lock called ``name``."""
        return SqliteLock(self._db, name, self._clock)

    def get_key(self, key: str) -> bytes | None:
        """The value under ``key``, or None when missing or expired."""
        return self._keys.get(key)

    def set_key(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any; it lapses after ``ttl`` s."""
        check_ttl(ttl)
        self._keys.set(key, value, ttl=ttl)

    def delete_key(self, key: str) -> bool:
        """Remove ``key``; True when it existed and had not expired."""
        return self._keys.delete(key)

    def close(self) -> None:
        """Close this process's connection; the broker is unusable afterwards."""
        self._db.close()


def _delete(
    connection: sqlite3.Connection, queue: str, held: dict[int, list[int]]
) -> None:
    for token, ids in held.items():
        for marks, part in _chunks(ids):
            connection.execute(
                BY_ID_SQL["ack"].format(marks=marks), [queue, token, *part]
            )


def _heads(connection: sqlite3.Connection, queue: str, now: float) -> list[float]:
    """Per priority (HIGH, NORMAL), a due time ahead of every task of the queue.

    Reserve takes ready rows in (due_at, id) order, so tasks given this due time
    go back to the head of their line, in row id (push) order among themselves,
    and ahead of what an earlier release put back, as a push to the front would.
    """
    heads = []
    for level in _PRIORITIES:
        (first,) = connection.execute(
            "SELECT min(due_at) FROM tasks WHERE queue = ? AND priority = ?",
            (queue, level),
        ).fetchone()
        heads.append(min(now, now if first is None else first) - 1.0)
    return heads
