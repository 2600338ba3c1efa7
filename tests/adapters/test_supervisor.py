"""The supervisor with real worker processes over a real SQLite file.

Each test pushes tasks, runs a ``Supervisor`` (in a thread of the test, so the test
can read its ``exits`` and ``pids``; the signal path is tested through the
``sergeant supervise`` command) over ``supervised_workers.LedgerWorker`` children,
which stop themselves once the queue stays empty, and then reads the per-process
ledgers to check that every task ran (exactly once, or at least once after a kill).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.supervisor import Supervisor

from sergeant.producer import Producer
from sergeant.protocols import QueueLengths
from sergeant.supervision import StopReason, SupervisionPolicy
from sergeant.task import Priority
from tests.adapters.supervised_workers import QUEUE, read_ledger

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
TARGET = "tests.adapters.supervised_workers:ledger_worker"


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {condition}")
        time.sleep(0.05)


class Harness:
    """A broker file, a ledger directory, and supervisors run in threads."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ledger = tmp_path / "ledger"
        self.ledger.mkdir()
        self.env = {"SUP_BROKER": str(tmp_path / "broker.db"),
                    "SUP_LEDGER": str(self.ledger)}  # fmt: skip
        self.monkeypatch = monkeypatch
        self.broker = SqliteBroker(self.env["SUP_BROKER"])
        self.producer = Producer(broker=self.broker, codec=PickleCodec(), queue=QUEUE)
        self.running: list[tuple[Supervisor, threading.Thread]] = []

    def supervisor(self, policy: SupervisionPolicy, **settings: str) -> Supervisor:
        # The children and the releaser (started like them) inherit them.
        for name, value in {**self.env, **settings}.items():
            self.monkeypatch.setenv(name, value)
        return Supervisor(
            TARGET, policy, cwd=REPO, tick=0.1, handle_signals=False,
            log_level="WARNING",
        )  # fmt: skip

    def start(self, supervisor: Supervisor) -> threading.Thread:
        thread = threading.Thread(target=supervisor.run, daemon=True)
        thread.start()
        self.running.append((supervisor, thread))
        return thread

    def join(self, thread: threading.Thread, timeout: float) -> None:
        thread.join(timeout)
        assert not thread.is_alive(), f"the supervisor did not finish in {timeout} s"

    def ledger_counts(self) -> Counter[int]:
        return Counter(read_ledger(self.ledger))

    def close(self) -> None:
        for supervisor, thread in self.running:
            supervisor.request_stop()
            thread.join(60)
        self.broker.close()


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    """A harness whose supervisors are stopped (children included) after the test."""
    harness = Harness(tmp_path, monkeypatch)
    yield harness
    harness.close()


def test_three_workers_run_twenty_thousand_tasks_exactly_once(
    harness: Harness,
) -> None:
    """3 worker processes drain 20,000 tasks: each task in the ledger exactly once."""
    harness.producer.push_tasks([{"n": n} for n in range(20_000)])
    supervisor = harness.supervisor(SupervisionPolicy(workers=3), SUP_BATCH="50")

    harness.join(harness.start(supervisor), 120)

    counts = harness.ledger_counts()
    assert set(counts) == set(range(20_000))
    assert [n for n, times in counts.items() if times > 1] == []
    assert harness.broker.lengths(QUEUE) == QueueLengths()
    assert len(supervisor.exits) == 3
    assert {ended.exit_code for ended in supervisor.exits} == {0}


def test_a_sigkilled_worker_loses_nothing_and_its_tasks_run_again_at_once(
    harness: Harness,
) -> None:
    """SIGKILL one child mid-run: its leases are released now and re-run elsewhere."""
    harness.producer.push_tasks([{"n": n, "sleep": 0.002} for n in range(3_000)])
    supervisor = harness.supervisor(SupervisionPolicy(workers=3), SUP_BATCH="10")
    thread = harness.start(supervisor)
    wait_until(lambda: len(read_ledger(harness.ledger)) >= 300, 60)
    victim = supervisor.pids()[0]

    os.kill(victim, signal.SIGKILL)
    harness.join(thread, 120)

    counts = harness.ledger_counts()
    assert set(counts) == set(range(3_000))
    killed = [ended for ended in supervisor.exits if ended.pid == victim]
    assert len(killed) == 1
    assert killed[0].exit_code == -signal.SIGKILL
    assert killed[0].reason == "killed by SIGKILL"
    assert killed[0].released >= 1
    # Leases are 60 s: had they not been released, the run would have stalled.
    redelivered = read_ledger(harness.ledger, "redelivered")
    assert len(redelivered) == killed[0].released
    assert {n for n, times in counts.items() if times > 1} <= set(redelivered)
    assert harness.broker.lengths(QUEUE) == QueueLengths()


def test_a_worker_over_the_hard_memory_limit_is_killed_and_replaced(
    harness: Harness,
) -> None:
    """A task taking 150 MiB under a 100 MiB hard limit: killed, respawned, capped."""
    harness.producer.push_task(
        {"n": 0, "hog_mb": 150, "hold": 30}, priority=Priority.HIGH
    )
    harness.producer.push_tasks([{"n": n, "sleep": 0.01} for n in range(1, 301)])
    policy = SupervisionPolicy(workers=2, hard_memory="100MiB")
    supervisor = harness.supervisor(policy, SUP_BATCH="1", SUP_MAX_DELIVERIES="2")

    harness.join(harness.start(supervisor), 120)

    kills = [ended for ended in supervisor.exits if "hard limit" in ended.reason]
    assert len(kills) == 2  # the 3rd delivery is over max_deliveries: dead-lettered
    assert {ended.exit_code for ended in kills} == {-signal.SIGKILL}
    assert [ended.released for ended in kills] == [1, 1]
    assert len({ended.pid for ended in supervisor.exits}) == 4  # 2 + 2 replacements
    dead = harness.broker.dead_letters(QUEUE)
    assert len(dead) == 1
    assert "delivered 3 times" in dead[0].reason
    counts = harness.ledger_counts()
    assert set(counts) == set(range(1, 301))
    assert max(counts.values()) == 1
    assert harness.broker.lengths(QUEUE) == QueueLengths(dead=1)


def test_a_worker_over_the_soft_memory_limit_recycles_without_being_killed(
    harness: Harness,
) -> None:
    """Over the soft limit a child finishes its task and exits with RECYCLE's code."""
    harness.producer.push_task({"n": 0, "hog_mb": 100, "keep": True},
                               priority=Priority.HIGH)  # fmt: skip
    harness.producer.push_tasks([{"n": n, "sleep": 0.01} for n in range(1, 201)])
    policy = SupervisionPolicy(workers=2, soft_memory="80MiB")
    supervisor = harness.supervisor(policy, SUP_BATCH="1")

    harness.join(harness.start(supervisor), 120)

    recycled = [ended for ended in supervisor.exits
                if ended.exit_code == StopReason.RECYCLE.exit_code]  # fmt: skip
    assert len(recycled) == 1
    assert recycled[0].reason == "recycle"
    assert [ended for ended in supervisor.exits if ended.exit_code < 0] == []
    assert len(supervisor.exits) == 3  # the recycled one, then 2 retired at the end
    counts = harness.ledger_counts()
    assert set(counts) == set(range(201))
    assert max(counts.values()) == 1


def test_a_worker_that_outlives_the_stop_grace_is_killed_and_released(
    harness: Harness,
) -> None:
    """A child still busy stop_grace s after SIGTERM is killed; its task is back."""
    harness.producer.push_task({"n": 0, "sleep": 120})
    policy = SupervisionPolicy(workers=1, stop_grace=1.0)
    supervisor = harness.supervisor(policy)
    thread = harness.start(supervisor)
    wait_until(lambda: harness.broker.lengths(QUEUE).in_flight == 1, 60)
    started = time.monotonic()

    supervisor.request_stop()
    harness.join(thread, 30)

    assert time.monotonic() - started < 10
    [ended] = supervisor.exits
    assert ended.reason.startswith("killed: still running")
    assert ended.released == 1
    assert harness.broker.lengths(QUEUE) == QueueLengths(ready=1)


def test_settings_given_with_env_reach_the_release_of_a_killed_worker(
    harness: Harness,
) -> None:
    """Settings passed with ``env=`` (here the broker's file) are the children's
    alone: a killed child's tasks must be released on *their* broker, not on one
    the supervisor would build from its own environment (where the target cannot
    even find its settings)."""
    assert "SUP_BROKER" not in os.environ
    harness.producer.push_task({"n": 0, "sleep": 120})
    supervisor = Supervisor(
        TARGET, SupervisionPolicy(workers=1, stop_grace=1.0), cwd=REPO,
        env=harness.env, tick=0.1, handle_signals=False, log_level="WARNING",
    )  # fmt: skip
    thread = harness.start(supervisor)
    wait_until(lambda: harness.broker.lengths(QUEUE).in_flight == 1, 60)

    supervisor.request_stop()
    harness.join(thread, 30)

    [ended] = supervisor.exits
    assert ended.reason.startswith("killed: still running")
    assert ended.released == 1
    assert harness.broker.lengths(QUEUE) == QueueLengths(ready=1)


def test_sigterm_to_the_supervise_command_stops_every_child_gracefully(
    harness: Harness, tmp_path: Path
) -> None:
    """SIGTERM to `sergeant supervise`: children finish their task; none in flight."""
    harness.producer.push_tasks([{"n": n, "sleep": 0.2} for n in range(200)])
    env: dict[str, Any] = {**os.environ, **harness.env, "SUP_BATCH": "5"}
    command = [sys.executable, "-m", "sergeant.adapters.cli", "supervise", TARGET,
               "--workers", "2", "--stop-grace", "10"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: len(read_ledger(harness.ledger)) >= 5, 60)
        children = psutil.Process(process.pid).children()
        started = time.monotonic()

        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 0, stderr.decode()
    assert time.monotonic() - started < 10
    # Two workers and the releaser (see sergeant.adapters.releaser), all gone.
    assert len(children) == 3
    assert not any(child.is_running() for child in children)
    assert b"exited: stopped" in stderr
    lengths = harness.broker.lengths(QUEUE)
    assert lengths.in_flight == 0
    counts = harness.ledger_counts()
    assert max(counts.values()) == 1
    assert lengths.ready == 200 - len(counts)


def test_a_crashing_worker_is_respawned_and_its_task_capped(harness: Harness) -> None:
    """A task crashing its worker: respawned each time, dead after max_deliveries."""
    harness.producer.push_task({"n": 0, "exit": 1}, priority=Priority.HIGH)
    harness.producer.push_tasks([{"n": n} for n in range(1, 51)])
    supervisor = harness.supervisor(
        SupervisionPolicy(workers=1, crash_backoff_base=0.1),
        SUP_MAX_DELIVERIES="2",
        SUP_BATCH="1",
    )

    harness.join(harness.start(supervisor), 120)

    reasons = [ended.reason for ended in supervisor.exits]
    assert reasons == ["crashed (exit 1)", "crashed (exit 1)", "stopped"]
    assert [ended.released for ended in supervisor.exits] == [1, 1, 0]
    assert len(harness.broker.dead_letters(QUEUE)) == 1
    assert set(harness.ledger_counts()) == set(range(1, 51))


def test_a_slow_release_does_not_hold_up_the_respawn(harness: Harness) -> None:
    """A release taking 10 s (a broker riding out an outage) runs beside the loop:
    the crashed worker's slot is respawned at once, and its exit is recorded with
    the count once the release is done. Made inline, the release held the loop
    (no reaping, respawning or memory checks) for its whole length."""
    harness.producer.push_task({"n": 0, "exit": 1}, priority=Priority.HIGH)
    harness.producer.push_tasks([{"n": n, "sleep": 0.05} for n in range(1, 61)])
    supervisor = harness.supervisor(
        SupervisionPolicy(workers=1, crash_backoff_base=0.1),
        SUP_SLOW_RELEASE="10",
        SUP_BATCH="1",
        SUP_MAX_DELIVERIES="1",
    )
    thread = harness.start(supervisor)
    wait_until(lambda: 0 in supervisor.pids(), 30)
    first = supervisor.pids()[0]

    wait_until(lambda: supervisor.pids().get(0, first) != first, 5)
    recorded_meanwhile = list(supervisor.exits)
    harness.join(thread, 120)

    assert recorded_meanwhile == []  # the release was still under way
    crashed = supervisor.exits[0]
    assert crashed.pid == first
    assert crashed.reason == "crashed (exit 1)"
    assert crashed.released == 1
    assert set(harness.ledger_counts()) == set(range(1, 61))


def test_children_of_a_sigkilled_supervisor_stop_by_themselves(
    harness: Harness,
) -> None:
    """Kill -9 the supervisor: its orphans notice, stop gracefully, hold no lease."""
    harness.producer.push_tasks([{"n": n, "sleep": 0.1} for n in range(200)])
    env: dict[str, Any] = {**os.environ, **harness.env, "SUP_BATCH": "5"}
    command = [sys.executable, "-m", "sergeant.adapters.cli", "supervise", TARGET,
               "--workers", "2", "--log-level", "WARNING"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=env)
    children: list[psutil.Process] = []
    try:
        wait_until(lambda: len(read_ledger(harness.ledger)) >= 5, 60)
        children = psutil.Process(process.pid).children()

        process.kill()
        process.wait(timeout=30)
        _, alive = psutil.wait_procs(children, timeout=20)
    finally:
        process.kill()
        for child in children:  # only if the test failed: leave no orphan behind
            with contextlib.suppress(psutil.Error):
                child.kill()

    assert len(children) == 3  # two workers and the releaser: none may linger
    assert alive == [], "orphaned workers still running"
    lengths = harness.broker.lengths(QUEUE)
    assert lengths.in_flight == 0
    assert lengths.ready == 200 - len(harness.ledger_counts())
