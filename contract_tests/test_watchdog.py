"""The Watchdog contract: every watchdog that enforces deadlines passes these unchanged.

The tasks here are pure-Python loops (interruptible at any bytecode) bounded by a
far limit, so a watchdog that fails to fire fails the test instead of hanging it.
Bounds are generous: the machine running them is shared and slow.

The tests run in pytest's main thread, where a process watchdog's signal lands too.
Two need a claim (see ``WATCHDOGS``): arming from another thread, and an escalation
that raises in the task instead of killing the process (pytest itself).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import psutil
import pytest

from sergeant.errors import TaskTimedOut
from sergeant.protocols import Watchdog

SLACK = 0.5  # how late past its due time an interruption may come


def _spin(seconds: float) -> None:
    """Busy-loop in Python bytecode for ``seconds`` (a task that never waits)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def _stopped_after(watchdog: Any, timeout: float, *, grace: float = 5.0) -> float:
    """Arm, spin up to 5 s, disarm; seconds until TaskTimedOut (inf: none came)."""
    start = time.monotonic()
    handle = watchdog.arm(timeout, grace=grace)
    try:
        _spin(5.0)
    except TaskTimedOut:
        return time.monotonic() - start
    finally:
        watchdog.disarm(handle)
    return float("inf")


def _living_children() -> set[int]:
    """Pids of this process's descendants that have not been reaped."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


class TestWatchdogContract:
    def test_is_a_watchdog(self, watchdog: Any) -> None:
        """The adapter satisfies the Watchdog protocol."""
        assert isinstance(watchdog, Watchdog)

    def test_an_endless_python_loop_is_stopped_at_its_deadline(
        self, watchdog: Any
    ) -> None:
        """A pure-Python loop armed with 0.2 s gets TaskTimedOut within 0.2 + 0.5 s."""
        elapsed = _stopped_after(watchdog, 0.2)

        assert 0.2 <= elapsed < 0.2 + SLACK

    def test_a_task_that_ends_before_its_deadline_completes(
        self, watchdog: Any
    ) -> None:
        """A 0.05 s task under a 0.5 s deadline completes, and disarm reports True."""
        handle = watchdog.arm(0.5, grace=5.0)

        _spin(0.05)
        not_fired = watchdog.disarm(handle)

        assert not_fired is True

    def test_disarm_after_firing_reports_false(self, watchdog: Any) -> None:
        """disarm() returns False for an arm whose deadline fired."""
        handle = watchdog.arm(0.05, grace=5.0)
        with contextlib.suppress(TaskTimedOut):
            _spin(5.0)

        not_fired = watchdog.disarm(handle)

        assert not_fired is False

    def test_disarm_prevents_firing(self, watchdog: Any) -> None:
        """After disarm, spinning well past the deadline raises nothing."""
        handle = watchdog.arm(0.1, grace=0.1)
        watchdog.disarm(handle)

        _spin(0.5)  # past the deadline and the grace: a TaskTimedOut fails the test

        assert watchdog.disarm(handle) is True

    def test_a_task_that_ignores_the_timeout_is_stopped_after_the_grace(
        self, in_process_escalating_watchdog: Any
    ) -> None:
        """A task swallowing TaskTimedOut is stopped by escalation at timeout+grace."""
        watchdog = in_process_escalating_watchdog
        timeout, grace = 0.2, 0.4
        start = time.monotonic()
        swallowed_at = stopped_at = float("inf")
        handle = watchdog.arm(timeout, grace=grace)
        try:
            try:
                _spin(5.0)
            except TaskTimedOut:
                swallowed_at = time.monotonic() - start  # ...and carries on
            _spin(5.0 - (time.monotonic() - start))
        except TaskTimedOut:
            stopped_at = time.monotonic() - start
        finally:
            watchdog.disarm(handle)

        assert timeout <= swallowed_at < timeout + SLACK
        assert timeout + grace <= stopped_at < timeout + grace + SLACK

    @pytest.mark.slow
    def test_threads_are_watched_separately(self, any_thread_watchdog: Any) -> None:
        """Threads armed at 0.2 s and 1.0 s are each stopped near their own deadline."""
        watchdog = any_thread_watchdog
        elapsed: dict[float, float] = {}

        def task(timeout: float) -> None:
            elapsed[timeout] = _stopped_after(watchdog, timeout)

        threads = [threading.Thread(target=task, args=(t,)) for t in (0.2, 1.0)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)

        assert 0.2 <= elapsed[0.2] < 0.2 + SLACK
        assert 1.0 <= elapsed[1.0] < 1.0 + SLACK

    def test_close_stops_the_watchdogs_threads_and_processes(
        self, watchdog: Any
    ) -> None:
        """After close(), no thread or child process the watchdog started is left."""
        before = set(threading.enumerate())
        children_before = _living_children()
        handle = watchdog.arm(10.0, grace=1.0)
        watchdog.disarm(handle)

        watchdog.close()

        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and (
            set(threading.enumerate()) - before or _living_children() - children_before
        ):
            time.sleep(0.01)
        assert not set(threading.enumerate()) - before
        assert not _living_children() - children_before
