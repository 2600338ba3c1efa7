"""The worker process entry point, run as a real process: setup errors and signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sergeant.adapters.child import SETUP_ERROR, load_target
from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.sqlite import SqliteBroker

from sergeant.errors import ConfigError
from sergeant.producer import Producer
from sergeant.protocols import QueueLengths
from sergeant.supervision import StopReason
from tests.adapters.supervised_workers import QUEUE, read_ledger
from tests.adapters.watchdog_workers import QUEUE as WD_QUEUE
from tests.adapters.watchdog_workers import read_lines

REPO = Path(__file__).resolve().parents[2]
TARGET = "tests.adapters.supervised_workers:LedgerWorker"
WD_TARGET = "tests.adapters.watchdog_workers:guarded_worker"


def child(target: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "sergeant.adapters.child", target,
               "--owner", "test-owner", "--log-level", "WARNING"]  # fmt: skip
    return subprocess.Popen(
        command, cwd=REPO, env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[tuple[Producer, dict[str, str]]]:
    """A producer on a fresh broker file and the environment a LedgerWorker needs."""
    (tmp_path / "ledger").mkdir()
    env = {"SUP_BROKER": str(tmp_path / "broker.db"),
           "SUP_LEDGER": str(tmp_path / "ledger"), "SUP_BATCH": "5"}  # fmt: skip
    broker = SqliteBroker(env["SUP_BROKER"])
    yield Producer(broker=broker, codec=PickleCodec(), queue=QUEUE), env
    broker.close()


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz:Worker", "cannot import 'no_such_module_xyz'"),
        ("tests.adapters.supervised_workers:Nope", "has no attribute 'Nope'"),
        ("tests.adapters.supervised_workers:QUEUE", "is not callable"),
        ("tests.adapters.supervised_workers:read_ledger", "failed: TypeError"),
        ("no-colon", "must look like 'package.module:attr'"),
    ],
)
def test_a_setup_error_is_one_line_and_a_distinct_exit_code(
    target: str, message: str
) -> None:
    """A target that cannot build a worker: one stderr line, exit code SETUP_ERROR."""
    process = child(target)

    _, stderr = process.communicate(timeout=60)

    assert process.returncode == SETUP_ERROR
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]


def test_load_target_follows_dotted_attributes() -> None:
    """``module:Class.method`` resolves attribute by attribute."""
    factory = load_target("sergeant.adapters.sqlite:SqliteBroker.from_url")

    assert factory == SqliteBroker.from_url
    with pytest.raises(ConfigError, match="has no attribute"):
        load_target("sergeant.adapters.sqlite:SqliteBroker.nope")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "reason"),
    [
        (signal.SIGTERM, StopReason.STOPPED),
        (signal.SIGINT, StopReason.STOPPED),
        (signal.SIGUSR1, StopReason.RECYCLE),
    ],
)
def test_a_signal_stops_the_worker_after_its_task_with_the_reason_code(
    queue: tuple[Producer, dict[str, str]], signum: int, reason: StopReason
) -> None:
    """The running task finishes, the rest are released, the exit code tells why."""
    producer, env = queue
    producer.push_tasks([{"n": n, "sleep": 0.5} for n in range(10)])
    process = child(TARGET, env)
    ledger = Path(env["SUP_LEDGER"])
    deadline = time.monotonic() + 60
    while producer.queue_lengths().in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.05)

    process.send_signal(signum)
    process.communicate(timeout=30)

    assert process.returncode == reason.exit_code
    done = read_ledger(ledger)
    assert 1 <= len(done) < 10
    assert producer.queue_lengths() == QueueLengths(ready=10 - len(done))


def test_a_recycle_request_during_start_up_is_kept_not_fatal(
    queue: tuple[Producer, dict[str, str]],
) -> None:
    """SIGUSR1 before the worker exists (a supervisor's soft memory limit hit by
    heavy imports) recycles the worker once it does: a RECYCLE exit, not a death
    by signal that the supervisor would count as a crash."""
    producer, env = queue
    producer.push_tasks([{"n": n} for n in range(3)])

    process = child(TARGET, {**env, "SUP_RECYCLE_AT_START": "1"})
    process.communicate(timeout=60)

    assert process.returncode == StopReason.RECYCLE.exit_code
    assert producer.queue_lengths() == QueueLengths(ready=3)


def test_a_process_watchdog_started_by_the_factory_still_stops_overruns(
    tmp_path: Path,
) -> None:
    """A factory that starts its ProcessWatchdog early (for the memory limit)
    installs its SIGINT handler before the child's own: the killer's SIGINT
    must still stop the task (on_timeout), not the worker."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    env = {"WD_BROKER": str(tmp_path / "broker.db"), "WD_LEDGER": str(ledger),
           "WD_START": "1"}  # fmt: skip
    broker = SqliteBroker(env["WD_BROKER"])
    Producer(broker=broker, codec=PickleCodec(), queue=WD_QUEUE).push_tasks(
        [{"n": 0, "do": "sleep"}, {"n": 1}]
    )

    process = child(WD_TARGET, env)
    process.communicate(timeout=60)
    lines = read_lines(ledger)
    broker.close()

    assert process.returncode == StopReason.STOPPED.exit_code
    assert [w[:2] for w in lines if w[0] != "start"] == [
        ["timeout", "0"],
        ["done", "1"],
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_during_start_up_ends_the_process_at_once(
    queue: tuple[Producer, dict[str, str]], signum: int
) -> None:
    """A factory that hangs (a broker that does not answer) must not make the
    process deaf to SIGTERM or Ctrl-C: it exits at once with STOPPED's code."""
    producer, env = queue
    producer.push_tasks([{"n": 1}])
    process = child(TARGET, {**env, "SUP_SLOW_START": "20"})
    time.sleep(1.5)  # inside the factory by now

    sent = time.monotonic()
    process.send_signal(signum)
    process.communicate(timeout=15)

    assert time.monotonic() - sent < 5
    assert process.returncode == StopReason.STOPPED.exit_code
    assert producer.queue_lengths() == QueueLengths(ready=1)
