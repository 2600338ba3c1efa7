"""One process's access to the broker's SQLite file: a connection, a lock, retries.

Each ``Database`` keeps a single connection per process, opened lazily and guarded
by a lock, so the worker's lease-renewing thread and its main loop never share a
transaction. SQLite serialises writers per file anyway, so a connection per thread
would buy little beyond file descriptors.

Forks: SQLite forbids using a connection in a child process, and its per-process
lock bookkeeping is copied by ``fork`` too, so a child that merely opens a *new*
connection while the parent's is open may believe it holds file locks it does
not. Hence, before any ``os.fork`` (``multiprocessing`` included), every live
``Database`` waits for its transaction to finish and closes its connection; parent
and child both reopen lazily. Should a fork bypass those hooks, a pid check still
keeps the child off the inherited connection, which is then left unclosed (closing
it in the child could checkpoint or unlock the parent's file).
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from typing import TypeVar

from sergeant.errors import BrokerError, BrokerUnavailable

from .schema import configure

T = TypeVar("T")

# Primary result codes (the low byte of an extended code).
_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
# Errors that say the file cannot be reached, rather than that a statement failed.
_UNAVAILABLE_CODES = frozenset({10, 13, 14, 15})  # IOERR, FULL, CANTOPEN, PROTOCOL

_LIVE: weakref.WeakSet[Database] = weakref.WeakSet()
# Connections inherited across a fork that bypassed the hooks: kept referenced so
# the child never closes (and thereby checkpoints or unlocks) the parent's file.
_INHERITED: list[sqlite3.Connection] = []


def _error_code(error: sqlite3.Error) -> int:
    return int(getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF


def is_busy(error: sqlite3.Error) -> bool:
    """Whether ``error`` is SQLite's "database is locked/busy": worth a retry."""
    if _error_code(error) in _BUSY_CODES:
        return True
    text = str(error).lower()
    return "locked" in text or "busy" in text


def translate(error: sqlite3.Error) -> BrokerError:
    """The sergeant error for a driver error: unreachable file or failed operation."""
    if is_busy(error) or _error_code(error) in _UNAVAILABLE_CODES:
        return BrokerUnavailable(f"sqlite: {error}")
    return BrokerError(f"sqlite: {error}")


class Database:
    """A lazily opened, fork-aware, lock-guarded connection to one SQLite file.

    Args:
        path: the database file; created with its tables on first use.
        busy_timeout: seconds SQLite waits for another process's write lock.
        retries: extra attempts, with jittered exponential back-off, after SQLite
            still reports the file busy; then ``BrokerUnavailable``.
    """

    def __init__(self, path: str, *, busy_timeout: float, retries: int) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._retries = retries
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        _LIVE.add(self)

    def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one ``BEGIN IMMEDIATE`` transaction, retried when busy.

        ``work`` may run more than once (after a rollback), so it must read the
        clock and the rows itself rather than close over earlier reads.

        Raises:
            BrokerUnavailable: the file stayed locked, or cannot be opened.
            BrokerError: any other SQLite failure, a value the sqlite3 module
                cannot bind (see ``_attempt``), or the broker is closed.
        """
        return self._attempt(lambda connection: _in_transaction(connection, work))

    def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` (one read statement) outside any explicit transaction."""
        return self._attempt(work)

    def close(self) -> None:
        """Close this process's connection; every later call raises BrokerError."""
        with self._lock:
            self._closed = True
            self._drop_connection()
        _LIVE.discard(self)

    def connection_for_tests(self) -> sqlite3.Connection:
        """The current connection (opened if needed). Test-only: fork-safety checks."""
        with self._lock:
            return self._open()

    def _attempt(self, work: Callable[[sqlite3.Connection], T]) -> T:
        pause = 0.02
        for attempt in range(self._retries + 1):
            try:
                with self._lock:
                    return work(self._open())
            except sqlite3.Error as error:
                if not is_busy(error) or attempt == self._retries:
                    raise translate(error) from error
            except (ValueError, OverflowError) as error:
                # Raised by the sqlite3 module while binding a value, not by
                # SQLite: a str holding a lone surrogate cannot be encoded as
                # UTF-8 (UnicodeEncodeError is a ValueError), an int does not
                # fit in 64 bits. The port promises that no driver exception
                # escapes, and retrying the same values cannot help.
                raise BrokerError(f"sqlite: {type(error).__name__}: {error}") from error
            # Jitter so that processes that collided do not collide again.
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 1.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self) -> sqlite3.Connection:
        """The connection of this process, opened on first use (lock held)."""
        if self._pid != os.getpid():  # a fork that bypassed the at-fork hooks
            if self._connection is not None:
                _INHERITED.append(self._connection)
            self._connection, self._pid = None, os.getpid()
        if self._closed:
            raise BrokerError("sqlite: the broker is closed")
        if self._connection is None:
            connection = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # shared by threads, under self._lock
            )
            try:
                configure(connection, busy_timeout=self._busy_timeout)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._pid != os.getpid():
            _INHERITED.append(connection)
            return
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    def _before_fork(self) -> None:
        self._lock.acquire()
        self._drop_connection()

    def _after_fork_in_parent(self) -> None:
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        # The lock was taken by the forking thread; the child starts afresh.
        self._lock = threading.RLock()
        self._connection, self._pid = None, os.getpid()


def _in_transaction(
    connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]
) -> T:
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = work(connection)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise
    return result


# The databases locked by the before-fork hook; the after hooks unlock exactly
# these, even if another thread made or dropped a Database in between.
_FORKING: list[Database] = []


def _before_fork() -> None:
    _FORKING[:] = list(_LIVE)
    for database in _FORKING:
        database._before_fork()


def _after_fork_in_parent() -> None:
    for database in _FORKING:
        database._after_fork_in_parent()
    _FORKING.clear()


def _after_fork_in_child() -> None:
    for database in _FORKING:
        database._after_fork_in_child()
    _FORKING.clear()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
