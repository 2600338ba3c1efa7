"""The SQLite schema of the broker, and the settings every connection gets.

One table holds every live task of every queue. Its key design choice is a single
``due_at`` column: the wall-clock time from which a row may be reserved. A fresh
task is due at its push time (or its eta), a released task at ``now + delay`` or,
released without delay, just before the first task of its line (so it goes back to
the head; ``release_owner`` does the same), and a leased task at the end of its
lease (a lapsed one rejoins the line by that time). So "ready" is always
``due_at <= now`` and reserve is one range scan of ``tasks_reserve`` per priority;
delayed tasks are promoted and lapsed leases reclaimed by that same scan, with no
separate sweep.
``lease_owner`` tells a leased row (in flight, or lapsed) from a delayed one.

``tasks.id`` is AUTOINCREMENT so that a row id is never reused after a delete. A
leased task's receipt is ``<row id>:<leases>``, ``leases`` counting the row's
reserves: every reserve raises it and nothing lowers it, so no two leases of any
row ever share a receipt, and a receipt whose lease lapsed, or that was released,
cannot ack, release, extend or dead-letter the task under the lease of whoever
reserved it next. ``deliveries`` is only the count the worker sees: a release
takes its delivery back, which is why it cannot serve as the token (schema
version 1 used it and re-issued a released task's receipt to its next holder).
"""

from __future__ import annotations

import sqlite3

# Bump when the tables change; kept in PRAGMA user_version so a file written by a
# newer layout is refused instead of misread, and an older one is migrated by
# ``_migrate``. 2: ``tasks.leases`` added as the receipt token.
SCHEMA_VERSION = 2

TABLES = (
    """
    CREATE TABLE IF NOT EXISTS tasks (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        queue       TEXT    NOT NULL,
        priority    INTEGER NOT NULL,  -- Priority value: 0 HIGH, 1 NORMAL
        payload     BLOB    NOT NULL,
        due_at      REAL    NOT NULL,  -- reservable once due_at <= now
        lease_owner TEXT,              -- NULL unless reserved under a lease
        deliveries  INTEGER NOT NULL DEFAULT 0,  -- handouts; a release undoes one
        leases      INTEGER NOT NULL DEFAULT 0   -- reserves; the receipt token
    )
    """,
    # FIFO per priority: rows with due_at <= now, in (due_at, id) order; the rowid
    # is the index's implicit last column, so the scan needs no sort and no lookup.
    "CREATE INDEX IF NOT EXISTS tasks_reserve ON tasks (queue, priority, due_at)",
    # release_owner: only leased rows are indexed, so the index stays small.
    """
    CREATE INDEX IF NOT EXISTS tasks_owner ON tasks (queue, lease_owner)
    WHERE lease_owner IS NOT NULL
    """,
    """
    CREATE TABLE IF NOT EXISTS dead_letters (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        queue   TEXT NOT NULL,
        payload BLOB NOT NULL,
        reason  TEXT NOT NULL,
        dead_at REAL NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, id)",
    """
    CREATE TABLE IF NOT EXISTS locks (
        name       TEXT PRIMARY KEY,
        token      TEXT NOT NULL,
        expires_at REAL              -- NULL: held until released
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE IF NOT EXISTS keys (
        key        TEXT PRIMARY KEY,
        value      BLOB NOT NULL,
        expires_at REAL              -- NULL: kept until deleted
    ) WITHOUT ROWID
    """,
    """
    CREATE INDEX IF NOT EXISTS keys_expiry ON keys (expires_at)
    WHERE expires_at IS NOT NULL
    """,
)


# Read-only queries shared by the broker.
LENGTHS = """
    SELECT coalesce(sum(due_at <= :now), 0),
           coalesce(sum(due_at > :now AND lease_owner IS NULL), 0),
           coalesce(sum(due_at > :now AND lease_owner IS NOT NULL), 0),
           (SELECT count(*) FROM dead_letters WHERE queue = :q)
    FROM tasks WHERE queue = :q
"""


def _distinct_queues(table: str) -> str:
    # A loose index scan: one index seek per distinct queue instead of a full scan.
    return f"""
        WITH RECURSIVE names(name) AS (
            SELECT min(queue) FROM {table}
            UNION ALL
            SELECT (SELECT min(queue) FROM {table} WHERE queue > name)
            FROM names WHERE name IS NOT NULL)
        SELECT name FROM names WHERE name IS NOT NULL
    """


QUEUES = (
    f"SELECT name FROM ({_distinct_queues('tasks')}) UNION"
    f" SELECT name FROM ({_distinct_queues('dead_letters')}) ORDER BY 1"
)


def configure(connection: sqlite3.Connection, *, busy_timeout: float) -> None:
    """Apply the per-connection settings and create the tables if they are missing.

    WAL lets readers run beside the one writer, and with ``synchronous=NORMAL`` a
    commit does not fsync (a power cut may lose the last commits, never corrupt
    the file). ``busy_timeout`` makes SQLite itself wait for a busy write lock
    before reporting "database is locked".

    Raises:
        sqlite3.Error: on any failure; the caller translates it.
    """
    connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        # e.g. a filesystem without shared memory: refusing beats silently
        # running with a rollback journal that serialises readers and writers.
        raise sqlite3.OperationalError(f"cannot enable WAL (journal_mode={mode})")
    connection.execute("PRAGMA synchronous = NORMAL")
    if connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
        # Up to date: a read, no write lock. Opening (a count, a listing, the
        # `sergeant queues` command) must not wait behind a writer, nor fail on a
        # file it may only read. Only a new or older file takes the lock below.
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {version} is newer than this sergeant's "
                f"{SCHEMA_VERSION}"
            )
        for statement in TABLES:
            connection.execute(statement)
        _migrate(connection)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring the tables of a file written by an older layout up to this one.

    Runs inside ``configure``'s ``BEGIN IMMEDIATE``, so processes opening one old
    file at once migrate it once. It looks at the columns, not at
    ``user_version``, so on a file already up to date it changes nothing.

    Version 1 had no ``leases``: its receipts used the delivery count, which a
    release lowers. The column is added with 0 for every row; the next reserve of
    a row makes it 1, a token no receipt of this layout has used for that row.
    Processes still running the old code must be stopped first: they neither
    raise ``leases`` nor match on it (and they refuse to reopen the file).
    """
    columns = {row[1] for row in connection.execute("PRAGMA table_info(tasks)")}
    if "leases" not in columns:
        connection.execute(
            "ALTER TABLE tasks ADD COLUMN leases INTEGER NOT NULL DEFAULT 0"
        )
