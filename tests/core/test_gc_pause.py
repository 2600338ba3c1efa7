"""The garbage-collector pause around building a batch: on and off as promised.

The pause is process-wide, so what matters is that it never outlives the worker's
own code: tasks run with the collector on, and a collector the user turned off
stays off.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from sergeant.adapters.memory import MemoryBroker

from sergeant._gc_pause import GcPause
from tests.conftest import Recorder, WorkerFactory


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_a_pause_turns_the_collector_off_and_back_on() -> None:
    """start twice, end twice: off while paused, on after, once."""
    pause = GcPause()

    pause.start()
    pause.start()
    during = gc.isenabled()
    pause.end()
    after = gc.isenabled()
    pause.end()

    assert (during, after, gc.isenabled()) == (False, True, True)


def test_a_collector_the_user_turned_off_stays_off() -> None:
    """The pause does not turn on what it did not turn off."""
    gc.disable()
    pause = GcPause()

    pause.start()
    pause.end()

    assert not gc.isenabled()


@pytest.mark.parametrize("prefetch", [0, 1])
def test_tasks_run_with_the_collector_on_and_it_stays_on(
    make_worker: WorkerFactory, broker: MemoryBroker, prefetch: int
) -> None:
    """A batch is decoded paused, but work() sees the collector on, every time."""
    seen: list[bool] = []

    def work(worker: Any, task: Any) -> None:
        seen.append(gc.isenabled())

    cls = type("W", (Recorder,), {"behaviour": staticmethod(work)})
    worker = make_worker(
        cls, tasks_per_transaction=3, max_tasks_per_run=7, prefetch=prefetch
    )
    worker.push_tasks([{"n": i} for i in range(7)])

    worker.run()

    assert seen == [True] * 7
    assert gc.isenabled()
