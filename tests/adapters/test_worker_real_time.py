"""A worker with real threads and a real clock: what only shows in real time.

The core tests drive the worker with fakes; these run a ``ThreadWatchdog`` and the
lease keeper's thread against the memory broker on the wall clock.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.memory import MemoryBroker
from sergeant.adapters.watchdogs.threads import ThreadWatchdog

from sergeant.config import Timeouts, WorkerConfig
from sergeant.errors import TaskTimedOut
from sergeant.task import Task
from sergeant.worker import Worker


class _Noting(Worker):
    """Notes which handlers ran; ``behaviour`` is the task."""

    def __init__(self, behaviour: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.behaviour = behaviour
        self.noted: list[str] = []

    def work(self, task: Task) -> Any:
        return self.behaviour(self, task)

    def on_success(self, task: Task, value: Any) -> None:
        self.noted.append("on_success")

    def on_timeout(self, task: Task) -> None:
        self.noted.append("on_timeout")


def _worker(broker: MemoryBroker, behaviour: Any, **config: Any) -> _Noting:
    return _Noting(
        behaviour,
        broker=broker,
        codec=PickleCodec(),
        executor=SerialExecutor(),
        watchdog=ThreadWatchdog(),
        config=WorkerConfig(name="jobs", wait=0.0, max_tasks_per_run=1, **config),
    )


def test_a_task_that_swallows_its_timeout_and_returns_is_settled_as_timed_out() -> None:
    """The deadline fired: catching TaskTimedOut and returning late is still a
    timeout (on_timeout), not a success."""

    def stubborn(worker: Worker, task: Task) -> str:
        end = time.monotonic() + 5
        with contextlib.suppress(TaskTimedOut):
            while time.monotonic() < end:  # Python code: the timeout lands here
                pass
        return "finished late"

    broker = MemoryBroker()
    worker = _worker(broker, stubborn, timeouts=Timeouts(timeout=0.2, grace_period=5.0))
    worker.push_task({})

    worker.run()
    worker.watchdog.close()

    assert worker.noted == ["on_timeout"]


def test_leases_are_renewed_until_the_batch_is_settled() -> None:
    """A slow on_success runs after the task: its lease is still renewed, so no
    other worker gets the task meanwhile."""
    broker = MemoryBroker()
    stolen: list[int] = []

    class SlowToSettle(_Noting):
        def on_success(self, task: Task, value: Any) -> None:
            time.sleep(1.0)

    def rival() -> None:
        time.sleep(0.6)  # past the 0.3 s lease, while on_success runs
        stolen.extend(1 for _ in broker.reserve("jobs", owner="rival", lease=60))

    worker = SlowToSettle(
        lambda w, t: None,
        broker=broker,
        codec=PickleCodec(),
        executor=SerialExecutor(),
        watchdog=ThreadWatchdog(),
        config=WorkerConfig(name="jobs", wait=0.0, max_tasks_per_run=1, lease=0.3),
    )
    worker.push_task({})
    thief = threading.Thread(target=rival)
    thief.start()

    worker.run()
    thief.join()
    worker.watchdog.close()

    assert stolen == []
