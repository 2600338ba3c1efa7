"""The ``sergeant`` command, run as a real process: exit codes, messages, commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.sqlite import SqliteBroker

from sergeant.producer import Producer
from sergeant.protocols import QueueLengths
from sergeant.task import Priority

REPO = Path(__file__).resolve().parents[2]


def sergeant(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sergeant.adapters.cli ARGS`` (what the console script runs)."""
    env = {k: v for k, v in os.environ.items() if k != "SERGEANT_BROKER"}
    result = subprocess.run(
        [sys.executable, "-m", "sergeant.adapters.cli", *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env,
        check=False,
    )  # fmt: skip
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A broker file with 3 ready and 1 delayed task in 'mail', 2 dead in 'reports'."""
    path = tmp_path / "jobs.db"
    broker = SqliteBroker(str(path))
    mail = Producer(broker=broker, codec=PickleCodec(), queue="mail")
    mail.push_tasks([{"to": n} for n in range(3)])
    mail.push_task({"to": "later"}, delay=3600)
    reports = Producer(broker=broker, codec=PickleCodec(), queue="reports")
    reports.push_tasks([{"id": 1}, {"id": 2}], priority=Priority.HIGH)
    for number, delivery in enumerate(broker.reserve("reports", owner="t", count=2)):
        broker.dead_letter("reports", delivery, f"boom {number}\nsecond line")
    broker.close()
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["supervise", "a.b:W", "--workers", "0"], "argument --workers: must be >= 1"),
        (["supervise", "a.b:W", "--workers", "x"], "argument --workers: not an int"),
        (["supervise", "a.b:W", "--max-memory", "abc"],
         "argument --max-memory: not a size: 'abc'"),
        (["supervise", "a.b:W", "--soft-memory", "2GB", "--max-memory", "1GB"],
         "argument --soft-memory: must be below --max-memory"),
        (["supervise", "a.b:W", "--stop-grace", "-1"], "argument --stop-grace"),
        (["supervise", "a.b:W", "--stop-grace", "inf"], "argument --stop-grace"),
        (["supervise", "a.b:W", "--stop-grace", "1e999"], "argument --stop-grace"),
        (["supervise", "a.b:W", "--stop-grace", "1e10"],
         "argument --stop-grace: must be at most"),
        (["dead", "q", "--broker", "memory://", "--limit", "9" * 20],
         "argument --limit: must be <= 1,000,000,000"),
        (["supervise", "nocolon"], "argument TARGET: must look like"),
        (["supervise", "no_such_module_xyz:W"],
         "argument TARGET: cannot import 'no_such_module_xyz'"),
        (["queues"], "argument --broker: required"),
        (["dead", "q", "--broker", "memory://", "--limit", "0"], "argument --limit"),
        (["demo", "--tasks", "-5"], "argument --tasks"),
        ([], "required: COMMAND"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2_naming_the_argument(args: list[str], message: str) -> None:
    """Bad arguments: exit code 2 and a usage message that names the argument."""
    result = sergeant(*args)

    assert result.returncode == 2
    assert message in result.stderr


def test_a_target_whose_factory_fails_is_a_runtime_error_of_one_line() -> None:
    """The target imports but building its worker fails (here: its environment is
    missing): exit 1 and one line naming the target and the cause, no usage."""
    result = sergeant("supervise", "tests.adapters.supervised_workers:ledger_worker")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "ledger_worker" in result.stderr
    assert "SUP_LEDGER" in result.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://user:hunter2@host/x", "unknown broker URL scheme 'ftp'"),
        ("sqlite:///no/such/dir/jobs.db", "no SQLite database at"),
        ("jobs.db", "a broker URL looks like scheme://"),
        ("redis://:hunter2@[::1", "malformed broker URL"),
        (
            "sqlite:///jobs.db?busy_timeout=nan",
            "busy_timeout must be a number of seconds from 0 to 2,000,000",
        ),
        ("redis://:hunter2@127.0.0.1:1/0?bogus=1", "unexpected keyword argument"),
        ("redis://:hunter2@127.0.0.1:1/0?namespace=a:b", "RedisBroker.namespace must"),
    ],
)
def test_an_invalid_broker_is_one_line_and_exit_1(url: str, message: str) -> None:
    """A broker that cannot be used: one line on stderr, exit 1, no password."""
    result = sergeant("queues", "--broker", url)

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert message in result.stderr
    assert "hunter2" not in result.stderr


@pytest.mark.slow
def test_an_unreachable_redis_is_one_line_and_exit_1() -> None:
    """Nothing listens on the port: exit 1 with one line, the password redacted."""
    result = sergeant("queues", "--broker", "redis://:hunter2@127.0.0.1:1/0")

    assert result.returncode == 1
    assert result.stderr.startswith("sergeant: error: ")
    assert result.stderr.count("\n") == 1
    assert "hunter2" not in result.stderr


def test_queues_prints_a_table_of_every_queue(db: str) -> None:
    """One row per queue: ready, delayed, in flight and dead counts."""
    result = sergeant("queues", "--broker", db)

    assert result.returncode == 0
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [
        ["queue", "ready", "delayed", "in", "flight", "dead"],
        ["mail", "3", "1", "0", "0"],
        ["reports", "0", "0", "0", "2"],
    ]


def test_queues_reads_the_broker_from_the_environment(db: str) -> None:
    """$SERGEANT_BROKER stands in for --broker; named queues limit the table."""
    env = {**os.environ, "SERGEANT_BROKER": db}
    result = subprocess.run(
        [sys.executable, "-m", "sergeant.adapters.cli", "queues", "mail"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip

    assert result.returncode == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["queue", "mail"]


def test_dead_lists_reasons_and_times_then_replay_pushes_them_back(db: str) -> None:
    """`dead` shows each dead letter's time and reason; `--replay` requeues them."""
    listing = sergeant("dead", "reports", "--broker", db)
    replay = sergeant("dead", "reports", "--broker", db, "--replay")
    after = sergeant("dead", "reports", "--broker", db)

    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0] == "2 dead letters in 'reports' (oldest first)"
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.fullmatch(rf"{when}  boom 0 second line  \[\d+ bytes\]", lines[1])
    assert "boom 1" in lines[2]
    assert replay.stdout.strip() == "replayed 2 dead letters into 'reports'"
    assert after.stdout.strip() == "0 dead letters in 'reports' (oldest first)"
    broker = SqliteBroker(db.removeprefix("sqlite:///"))
    assert broker.lengths("reports") == QueueLengths(ready=2)
    broker.close()


def test_dead_limit_bounds_the_listing_and_the_replay(db: str) -> None:
    """--limit 1 lists one dead letter of the two (the header counts both) and
    replays one."""
    listing = sergeant("dead", "reports", "--broker", db, "--limit", "1")
    replay = sergeant("dead", "reports", "--broker", db, "--replay", "--limit", "1")

    assert (
        listing.stdout.splitlines()[0] == "2 dead letters in 'reports' (the oldest 1)"
    )
    assert len(listing.stdout.splitlines()) == 2
    assert replay.stdout.strip() == "replayed 1 dead letter into 'reports'"


def test_purge_drops_pending_tasks_and_with_dead_the_dead_letters(db: str) -> None:
    """`purge` empties ready and delayed; `--dead` also empties the dead letters."""
    mail = sergeant("purge", "mail", "--broker", db)
    reports = sergeant("purge", "reports", "--broker", db, "--dead")

    assert mail.stdout.strip() == "purged 4 tasks from 'mail'"
    assert reports.stdout.splitlines() == [
        "purged 0 tasks from 'reports'",
        "purged 2 dead letters from 'reports'",
    ]
    broker = SqliteBroker(db.removeprefix("sqlite:///"))
    assert broker.lengths("mail") == QueueLengths()
    assert broker.lengths("reports") == QueueLengths()
    broker.close()


@pytest.mark.slow
def test_demo_drains_its_tasks_and_prints_a_summary(tmp_path: Path) -> None:
    """`demo --tasks 2000` runs two workers and reports tasks, rate, retries, dead."""
    path = tmp_path / "demo.db"

    result = sergeant("demo", "--tasks", "2000", "--path", str(path), timeout=120)

    assert result.returncode == 0, result.stderr
    assert "settled     2,000 of 2,000" in result.stdout
    summary = dict(
        line.split(maxsplit=1)
        for line in result.stdout.split("summary\n")[1].splitlines()
    )
    assert summary["tasks"] == "2,000"
    assert float(summary["seconds"]) > 0
    assert int(summary["tasks/s"].replace(",", "")) > 0
    assert summary["retries"] == "22"  # n % 100 == 0 fail once: 20, plus n=7 twice
    assert summary["dead"] == "1"  # n = 7 always fails
    assert summary["processes"].startswith("2 worker processes")
