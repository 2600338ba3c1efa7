"""The composition root for unit tests: a worker over in-memory adapters and fake time.

Mirrors cosmicpython's ``bootstrap_test_app()``: production code composes real
adapters; tests compose the memory broker, the pickle codec, the serial executor and
the null watchdog, and a fake clock shared by the worker and the broker, so that
delays, leases and starvation are exercised without sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.memory import MemoryBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.clock import FakeClock
from sergeant.config import WorkerConfig
from sergeant.lifecycle import Event
from sergeant.worker import Worker


@pytest.fixture
def clock() -> FakeClock:
    """One fake wall clock for the worker and its broker."""
    return FakeClock(start=1_000_000.0)


@pytest.fixture
def monotonic() -> FakeClock:
    """A fake monotonic clock for starvation."""
    return FakeClock(start=50.0)


@pytest.fixture
def broker(clock: FakeClock) -> Iterator[MemoryBroker]:
    """A memory broker on the fake clock."""
    broker = MemoryBroker(clock=clock)
    yield broker
    broker.close()


WorkerFactory = Callable[..., Worker]


@pytest.fixture
def make_worker(
    broker: MemoryBroker, clock: FakeClock, monotonic: FakeClock
) -> WorkerFactory:
    """Build a worker of ``cls`` over the test adapters; config fields as kwargs."""

    def make(cls: type[Worker], **config: Any) -> Worker:
        config.setdefault("name", "jobs")
        config.setdefault("wait", 0.0)
        return cls(
            config=WorkerConfig(**config),
            broker=broker,
            codec=PickleCodec(),
            executor=SerialExecutor(),
            watchdog=NullWatchdog(),
            clock=clock,
            monotonic=monotonic,
            rng=random.Random(1234),
        )

    return make


class Recorder(Worker):
    """A worker that records every handler call in ``calls``; ``behaviour`` decides."""

    behaviour: Callable[[Worker, Any], Any] = staticmethod(lambda w, t: t.kwargs)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[Any, ...]] = []
        self.events: list[Event] = []
        self.subscribe(self.events.append)

    def work(self, task: Any) -> Any:
        self.calls.append(("work", task.kwargs))
        return type(self).behaviour(self, task)

    def initialize(self) -> None:
        self.calls.append(("initialize",))

    def finalize(self) -> None:
        self.calls.append(("finalize",))

    def on_success(self, task: Any, returned_value: Any) -> None:
        self.calls.append(("on_success", task.kwargs, returned_value))

    def on_failure(self, task: Any, exception: BaseException) -> Any:
        self.calls.append(("on_failure", task.kwargs, repr(exception)))

    def on_timeout(self, task: Any) -> Any:
        self.calls.append(("on_timeout", task.kwargs))

    def on_retry(self, task: Any, delay: float) -> None:
        self.calls.append(("on_retry", task.kwargs, task.attempt))

    def on_max_retries(self, task: Any) -> None:
        self.calls.append(("on_max_retries", task.kwargs, task.attempt))

    def on_requeue(self, task: Any) -> None:
        self.calls.append(("on_requeue", task.kwargs))

    def on_starvation(self, time_with_no_tasks: float) -> None:
        self.calls.append(("on_starvation", time_with_no_tasks))

    def on_stop(self) -> None:
        self.calls.append(("on_stop",))

    def names(self) -> list[str]:
        """The handler names called, in order."""
        return [call[0] for call in self.calls]
