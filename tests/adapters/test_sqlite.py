"""SQLite-specific behaviour: WAL, indexes, errors, forks, many processes, URLs.

What every broker must do is in ``contract_tests/``; this file covers only what
is particular to the SQLite file: its settings and query plans, how driver
errors are translated, fork safety, and contention between real processes.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sergeant.adapters.sqlite import SqliteBroker, parse_url
from sergeant.adapters.sqlite import database as database_module
from sergeant.adapters.sqlite.broker import _RESERVE_IDS, BY_ID_SQL

from sergeant.clock import FakeClock
from sergeant.errors import BrokerError, BrokerUnavailable, ConfigError
from sergeant.protocols import Delivery, QueueLengths

PRODUCERS, CONSUMERS, PER_PRODUCER = 4, 4, 5_000


def _plan(broker: SqliteBroker, sql: str, params: tuple[object, ...]) -> str:
    connection = broker._db.connection_for_tests()
    rows = connection.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    return " | ".join(row[-1] for row in rows)


def test_file_is_in_wal_mode_with_normal_sync(sqlite_broker: SqliteBroker) -> None:
    """The broker switches its file to WAL and its connection to synchronous=NORMAL."""
    sqlite_broker.push("q", [b"x"])

    outsider = sqlite3.connect(sqlite_broker.path)
    mode = outsider.execute("PRAGMA journal_mode").fetchone()[0]
    outsider.close()
    own = sqlite_broker._db.connection_for_tests()
    synchronous = own.execute("PRAGMA synchronous").fetchone()[0]

    assert mode == "wal"
    assert synchronous == 1  # NORMAL


def test_schema_has_its_indexes(sqlite_broker: SqliteBroker) -> None:
    """The tables exist with the indexes reserve, release_owner and inspection use."""
    sqlite_broker.lengths("q")

    connection = sqlite_broker._db.connection_for_tests()
    names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}

    assert {"tasks", "dead_letters", "locks", "keys"} <= names
    assert {"tasks_reserve", "tasks_owner", "dead_letters_queue"} <= names


def test_reserve_is_an_index_range_scan(sqlite_broker: SqliteBroker) -> None:
    """Reserve's selection reads a range of the covering index with no sort step."""
    sqlite_broker.push("q", [b"%d" % i for i in range(200)])
    connection = sqlite_broker._db.connection_for_tests()
    connection.execute("ANALYZE")

    plan = _plan(sqlite_broker, _RESERVE_IDS, ("q", 1, time.time(), 50))

    assert "USING COVERING INDEX tasks_reserve" in plan
    assert "due_at<?" in plan.replace(" ", "")
    assert "TEMP B-TREE" not in plan


@pytest.mark.parametrize("name", sorted(BY_ID_SQL))
def test_batch_statements_look_rows_up_by_id(
    sqlite_broker: SqliteBroker, name: str
) -> None:
    """Ack, release and extend of 100 receipts seek rowids, never scan the queue."""
    sqlite_broker.lengths("q")
    sql = BY_ID_SQL[name].format(marks=",".join("?" * 100))

    plan = _plan(sqlite_broker, sql, (1,) * sql.count("?"))

    assert plan == "SEARCH tasks USING INTEGER PRIMARY KEY (rowid=?)"


def test_release_owner_uses_the_owner_index(sqlite_broker: SqliteBroker) -> None:
    """Finding one owner's leased rows reads the partial owner index, not the table."""
    sqlite_broker.lengths("q")

    plan = _plan(
        sqlite_broker,
        "SELECT id FROM tasks WHERE queue = ? AND lease_owner = ?",
        ("q", "w1"),
    )

    assert "tasks_owner" in plan


def test_injected_clock_drives_leases_and_etas(tmp_path: Path) -> None:
    """Leases and etas follow the injected clock, so time can be moved, not waited."""
    clock = FakeClock()
    broker = SqliteBroker(str(tmp_path / "b.db"), clock=clock)
    broker.push("q", [b"later"], eta=clock() + 100)
    broker.push("q", [b"now"])
    held = broker.reserve("q", owner="w1", lease=10)

    clock.advance(11)
    lapsed = broker.reserve("q", owner="w2", lease=10)
    clock.advance(100)
    due = broker.reserve("q", owner="w2", count=5, lease=10)
    broker.close()

    assert [d.payload for d in held] == [b"now"]
    assert [(d.payload, d.deliveries) for d in lapsed] == [(b"now", 2)]
    assert sorted(d.payload for d in due) == [b"later", b"now"]


def test_a_released_tasks_next_holder_gets_a_receipt_of_its_own(
    tmp_path: Path,
) -> None:
    """A release takes the delivery back but never the receipt token: each holder
    of a row gets a receipt no earlier holder had, so an earlier holder's stale
    ack, extend, release or dead-letter leaves the current lease alone."""
    clock = FakeClock()
    broker = SqliteBroker(str(tmp_path / "b.db"), clock=clock)
    broker.push("q", [b"a"])
    stale: list[Delivery] = []
    for _ in range(3):
        stale += broker.reserve("q", owner="w1", lease=10)
        broker.release("q", stale[-1:])
    (current,) = broker.reserve("q", owner="w2", lease=10)

    broker.ack("q", stale)
    broker.extend("q", stale, lease=100)
    broker.release("q", stale)
    for delivery in stale:
        broker.dead_letter("q", delivery, "late verdict of an earlier holder")
    lengths = broker.lengths("q")
    clock.advance(11)  # w2's lease lapses: no stale extend renewed it
    again = broker.reserve("q", owner="w3", lease=10)
    broker.close()

    receipts = [d.receipt for d in [*stale, current]]
    assert len(set(receipts)) == len(receipts)
    assert [d.deliveries for d in [*stale, current]] == [1, 1, 1, 1]
    assert lengths == QueueLengths(in_flight=1)
    assert [(d.payload, d.deliveries) for d in again] == [(b"a", 2)]


# The tasks table of schema version 1, whose receipts used the delivery count.
_V1_TASKS = """
    CREATE TABLE tasks (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        queue       TEXT    NOT NULL,
        priority    INTEGER NOT NULL,
        payload     BLOB    NOT NULL,
        due_at      REAL    NOT NULL,
        lease_owner TEXT,
        deliveries  INTEGER NOT NULL DEFAULT 0
    )
"""


def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    """A file of schema version 1 gets the ``leases`` column on first open and
    keeps its tasks: a ready one, and one leased before the upgrade."""
    path = str(tmp_path / "old.db")
    clock = FakeClock()
    old = sqlite3.connect(path, isolation_level=None)
    old.execute(_V1_TASKS)
    old.executemany(
        "INSERT INTO tasks (queue, priority, payload, due_at, lease_owner,"
        " deliveries) VALUES (?, ?, ?, ?, ?, ?)",
        [("q", 1, b"leased", clock() + 60, "w0", 1), ("q", 1, b"ready", 0.0, None, 0)],
    )
    old.execute("PRAGMA user_version = 1")
    old.close()
    broker = SqliteBroker(path, clock=clock)

    before = broker.lengths("q")
    (first,) = broker.reserve("q", owner="w1", lease=10)
    broker.release("q", [first])
    (second,) = broker.reserve("q", owner="w2", lease=10)
    broker.ack("q", [first])
    returned = broker.release_owner("q", "w0")
    connection = broker._db.connection_for_tests()
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    columns = [row[1] for row in connection.execute("PRAGMA table_info(tasks)")]
    after = broker.lengths("q")
    broker.close()

    assert before == QueueLengths(ready=1, in_flight=1)
    assert (first.payload, first.receipt, second.receipt) == (b"ready", "2:1", "2:2")
    assert returned == 1
    assert after == QueueLengths(ready=1, in_flight=1)
    assert version == 2
    assert columns[-1] == "leases"


def test_a_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A file written by a newer layout is a BrokerError saying so, not misread."""
    path = str(tmp_path / "new.db")
    SqliteBroker(path).close()
    newer = sqlite3.connect(path, isolation_level=None)
    newer.execute("PRAGMA user_version = 99")
    newer.close()
    broker = SqliteBroker(path)

    with pytest.raises(BrokerError, match="schema version 99 is newer"):
        broker.lengths("q")


def test_locked_file_raises_broker_unavailable(tmp_path: Path) -> None:
    """A write lock held past the busy timeout and retries is BrokerUnavailable."""
    path = str(tmp_path / "b.db")
    broker = SqliteBroker(path, busy_timeout=0.05, retries=2)
    broker.lengths("q")
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()

    with pytest.raises(BrokerUnavailable, match="locked"):
        broker.push("q", [b"x"])
    elapsed = time.monotonic() - started
    blocker.execute("ROLLBACK")
    blocker.close()

    assert elapsed < 10.0
    assert broker.lengths("q") == QueueLengths()
    broker.close()


@pytest.mark.parametrize("busy_timeout", [3e6, 1e10, True])
def test_a_busy_timeout_sqlite_cannot_hold_is_refused(
    tmp_path: Path, busy_timeout: float
) -> None:
    """SQLite keeps the busy timeout in milliseconds in a 32-bit int: a longer
    one wrapped to 0 (no waiting at all). Refused, naming the field."""
    with pytest.raises(ConfigError, match=r"SqliteBroker\.busy_timeout"):
        SqliteBroker(str(tmp_path / "b.db"), busy_timeout=busy_timeout)


def test_a_fresh_broker_reads_while_another_process_writes(tmp_path: Path) -> None:
    """Opening a file already up to date takes no write lock: a new broker (the
    `sergeant queues` command is one) counts while a writer holds the lock, and
    does not wait for it."""
    path = str(tmp_path / "b.db")
    first = SqliteBroker(path)
    first.push("q", [b"x"])
    first.close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    fresh = SqliteBroker(path, busy_timeout=0.05, retries=0)
    try:
        started = time.monotonic()
        lengths = fresh.lengths("q")
        elapsed = time.monotonic() - started
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        fresh.close()

    assert lengths == QueueLengths(ready=1)
    assert elapsed < 1.0


def test_busy_file_is_retried_until_free(tmp_path: Path) -> None:
    """A write lock released during the retries lets the operation succeed."""
    path = str(tmp_path / "b.db")
    broker = SqliteBroker(path, busy_timeout=0.05, retries=8)
    broker.lengths("q")
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    unblock = threading.Timer(0.3, blocker.execute, args=("ROLLBACK",))
    unblock.start()

    broker.push("q", [b"x"])
    unblock.join()
    blocker.close()

    assert broker.lengths("q") == QueueLengths(ready=1)
    broker.close()


def test_unopenable_file_raises_broker_unavailable(tmp_path: Path) -> None:
    """A path whose directory does not exist is reported as BrokerUnavailable."""
    broker = SqliteBroker(str(tmp_path / "missing-dir" / "b.db"))

    with pytest.raises(BrokerUnavailable):
        broker.push("q", [b"x"])


# What os.fsdecode makes of a file name that is not UTF-8: a lone surrogate.
_UNDECODABLE = os.fsdecode(b"report-\xff.csv")


def test_a_reason_with_a_lone_surrogate_is_stored_escaped(
    sqlite_broker: SqliteBroker,
) -> None:
    """A dead letter whose reason names an undecodable file is recorded, with the
    surrogate escaped, rather than lost to a UnicodeEncodeError."""
    sqlite_broker.push("q", [b"poison"])
    (delivery,) = sqlite_broker.reserve("q", owner="w", lease=60)

    sqlite_broker.dead_letter("q", delivery, f"cannot open {_UNDECODABLE}")

    (letter,) = sqlite_broker.dead_letters("q")
    assert (letter.payload, letter.reason) == (
        b"poison",
        "cannot open report-\\udcff.csv",
    )
    assert sqlite_broker.lengths("q") == QueueLengths(dead=1)


def test_a_value_sqlite3_cannot_bind_is_a_broker_error(
    sqlite_broker: SqliteBroker,
) -> None:
    """A name holding a lone surrogate is a BrokerError, not the sqlite3
    module's UnicodeEncodeError (a count past 64 bits is refused before, with
    a ValueError: see the contract's bad counts)."""
    calls: list[Callable[[], object]] = [
        lambda: sqlite_broker.push(f"q-{_UNDECODABLE}", [b"x"]),
        lambda: sqlite_broker.set_key(_UNDECODABLE, b"v"),
    ]
    for call in calls:
        with pytest.raises(BrokerError, match=r"UnicodeEncodeError"):
            call()

    assert sqlite_broker.queues() == []


def test_closed_broker_refuses_work(sqlite_broker: SqliteBroker) -> None:
    """After close, calls raise BrokerError instead of reopening silently."""
    sqlite_broker.push("q", [b"x"])

    sqlite_broker.close()

    with pytest.raises(BrokerError, match="closed"):
        sqlite_broker.lengths("q")


def test_in_memory_database_is_refused() -> None:
    """':memory:' is refused: every connection would see a different database."""
    with pytest.raises(ConfigError):
        SqliteBroker(":memory:")


def test_threads_sharing_a_broker_take_each_task_once(
    sqlite_broker: SqliteBroker,
) -> None:
    """Threads reserving from one broker object never get the same task twice."""
    sqlite_broker.push("q", [b"%d" % i for i in range(2_000)])
    seen: list[bytes] = []

    def consume(owner: str) -> None:
        held: list = []
        while held := sqlite_broker.reserve("q", owner=owner, count=20, ack=held):
            seen.extend(d.payload for d in held)

    threads = [threading.Thread(target=consume, args=(f"t{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(seen) == sorted(b"%d" % i for i in range(2_000))
    assert sqlite_broker.lengths("q") == QueueLengths()


def test_fork_never_shares_a_connection(sqlite_broker: SqliteBroker) -> None:
    """Across a fork the child opens its own connection; the parent reopens its own."""
    before = sqlite_broker._db.connection_for_tests()
    context = multiprocessing.get_context("fork")
    child = context.Process(target=_fork_child, args=(sqlite_broker, before))

    child.start()
    child.join(timeout=60)
    after = sqlite_broker._db.connection_for_tests()
    got = sqlite_broker.reserve("q", owner="parent")

    assert child.exitcode == 0
    assert after is not before
    with pytest.raises(sqlite3.ProgrammingError):
        before.execute("SELECT 1")  # closed before the fork, not shared
    assert [d.payload for d in got] == [b"from-child"]


def _fork_child(broker: SqliteBroker, inherited: sqlite3.Connection) -> None:
    own = broker._db.connection_for_tests()
    broker.push("q", [b"from-child"])
    raise SystemExit(0 if own is not inherited else 1)


def test_pid_change_without_fork_hooks_opens_a_new_connection(
    sqlite_broker: SqliteBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an unseen pid change the old connection is kept open and a new one used."""
    old = sqlite_broker._db.connection_for_tests()
    monkeypatch.setattr(database_module.os, "getpid", lambda: -1)

    new = sqlite_broker._db.connection_for_tests()
    sqlite_broker.push("q", [b"x"])

    assert new is not old
    assert old.execute("SELECT count(*) FROM tasks").fetchone() == (1,)
    assert old in database_module._INHERITED


def _produce(path: str, index: int, start: threading.Event) -> None:
    broker = SqliteBroker(path)
    start.wait(30)
    payloads = [b"p%d-%d" % (index, n) for n in range(PER_PRODUCER)]
    sizes, position, turn = (1, 7, 50), 0, 0
    while position < len(payloads):
        size = sizes[turn % len(sizes)]
        broker.push("q", payloads[position : position + size])
        position, turn = position + size, turn + 1
    broker.close()


def _consume(path: str, index: int, out: str, done: threading.Event) -> None:
    broker = SqliteBroker(path)
    owner, seen, held = f"c{index}", [], []
    while True:
        # Read the flag first: if producers were done before this reserve began,
        # an empty answer means every task is consumed or held by a peer.
        finished = done.is_set()
        held = broker.reserve("q", owner=owner, count=50, lease=60, wait=0.05, ack=held)
        seen.extend(d.payload for d in held)
        if not held and finished:
            break
    Path(out).write_bytes(b"\n".join(seen))
    broker.close()


@pytest.mark.slow
def test_many_processes_consume_every_task_exactly_once(tmp_path: Path) -> None:
    """4 producer and 4 consumer processes on one file: no task lost, none doubled."""
    path = str(tmp_path / "shared.db")
    SqliteBroker(path).close()  # create the file before the race starts
    context = multiprocessing.get_context("fork")
    start, done = context.Event(), context.Event()
    outs = [str(tmp_path / f"consumer-{i}.out") for i in range(CONSUMERS)]
    producers = [
        context.Process(target=_produce, args=(path, i, start))
        for i in range(PRODUCERS)
    ]
    consumers = [
        context.Process(target=_consume, args=(path, i, outs[i], done))
        for i in range(CONSUMERS)
    ]

    for process in producers + consumers:
        process.start()
    start.set()
    for process in producers:
        process.join(timeout=240)
    done.set()
    for process in consumers:
        process.join(timeout=240)
    counts = collections.Counter(
        line
        for out in map(Path, outs)
        for line in (out.read_bytes() if out.exists() else b"").split(b"\n")
        if line
    )
    expected = {
        b"p%d-%d" % (i, n) for i in range(PRODUCERS) for n in range(PER_PRODUCER)
    }
    remaining = SqliteBroker(path)

    assert [p.exitcode for p in producers + consumers] == [0] * (PRODUCERS + CONSUMERS)
    assert set(counts) == expected
    assert max(counts.values()) == 1
    assert remaining.lengths("q") == QueueLengths()
    remaining.close()


@pytest.mark.parametrize(
    ("url", "path", "options"),
    [
        ("sqlite:///relative/tasks.db", "relative/tasks.db", {}),
        ("sqlite:////abs/dir/tasks.db", "/abs/dir/tasks.db", {}),
        ("sqlite:///with%20space.db", "with space.db", {}),
        ("sqlite:///t.db?busy_timeout=2.5", "t.db", {"busy_timeout": 2.5}),
    ],
)
def test_url_parsing(url: str, path: str, options: dict[str, float]) -> None:
    """sqlite:/// URLs name relative paths, sqlite://// absolute ones, plus options."""
    parsed = parse_url(url)

    assert parsed == (path, options)


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost/0",
        "sqlite://host/tasks.db",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite:///t.db?journal=delete",
        "sqlite:///t.db?busy_timeout=soon",
        "sqlite:///t.db?busy_timeout=3000000",  # past SQLite's 32-bit milliseconds
        "sqlite:////tmp/jobs#2.db",  # '#' would silently open /tmp/jobs
        "sqlite:///t.db#",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    """Other schemes, hosts, missing paths and unknown or bad options are refused;
    so is a '#', whose rest a URL parser drops (another file would be opened)."""
    with pytest.raises(ConfigError):
        parse_url(url)


def test_from_url_opens_a_relative_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """from_url with a relative path creates the file under the working directory."""
    monkeypatch.chdir(tmp_path)

    broker = SqliteBroker.from_url("sqlite:///sub.db?busy_timeout=1")
    broker.push("q", [b"x"])
    broker.close()

    assert (tmp_path / "sub.db").is_file()
