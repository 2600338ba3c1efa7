"""A prefetching worker on the memory broker: every task once, nothing stranded.

With ``WorkerConfig(prefetch=N)`` the worker asks for the next N batches before it
runs the current one. These tests check what that must not change (each task runs
once, in order, within the task budget) and what happens to a prefetched batch the
worker does not run: it goes back untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sergeant.adapters.codecs import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.memory import MemoryBroker
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import WorkerConfig
from sergeant.errors import BrokerUnavailable, ConfigError
from sergeant.protocols import Delivery, QueueLengths
from tests.conftest import Recorder, WorkerFactory


def _worker(make_worker: WorkerFactory, behaviour: Any, **config: Any) -> Recorder:
    cls = type("W", (Recorder,), {"behaviour": staticmethod(behaviour)})
    config.setdefault("prefetch", 1)
    worker = make_worker(cls, **config)
    assert isinstance(worker, Recorder)
    return worker


def _slow_first(worker: Recorder, task: Any) -> None:
    """Task 0 takes 6 s of the worker's clock: past half of a 10 s lease."""
    if task.kwargs["n"] == 0:
        worker.monotonic.advance(6.0)  # type: ignore[attr-defined]


def _worked(worker: Recorder) -> list[int]:
    return [c[1]["n"] for c in worker.calls if c[0] == "work"]


def test_the_next_batch_is_reserved_before_the_current_one_runs(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """After one step: its batch awaits its ack and the next batch is leased."""
    worker = _worker(make_worker, lambda w, t: None, tasks_per_transaction=2)
    worker.push_tasks([{"n": i} for i in range(5)])

    worker.step()

    assert broker.lengths("jobs") == QueueLengths(ready=1, in_flight=4)


def test_a_deeper_prefetch_keeps_that_many_batches_ahead(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """prefetch=2: the batch awaiting its ack, and two more leased behind it."""
    worker = _worker(
        make_worker, lambda w, t: None, tasks_per_transaction=2, prefetch=2
    )
    worker.push_tasks([{"n": i} for i in range(9)])

    worker.step()

    assert broker.lengths("jobs") == QueueLengths(ready=3, in_flight=6)


@pytest.mark.parametrize(("depth", "batch"), [(1, 2), (2, 2), (3, 1)])
def test_every_task_runs_once_in_order(
    make_worker: WorkerFactory, broker: MemoryBroker, depth: int, batch: int
) -> None:
    """Prefetching changes when batches are asked for, not what runs."""
    worker = _worker(
        make_worker,
        lambda w, t: None,
        tasks_per_transaction=batch,
        max_tasks_per_run=7,
        prefetch=depth,
    )
    worker.push_tasks([{"n": i} for i in range(7)])

    worker.run()

    assert _worked(worker) == list(range(7))
    assert broker.lengths("jobs") == QueueLengths()


@pytest.mark.parametrize("depth", [1, 2])
def test_the_task_budget_caps_what_is_prefetched(
    make_worker: WorkerFactory, broker: MemoryBroker, depth: int
) -> None:
    """Within max_tasks_per_run, no task is taken that the worker will not run."""
    worker = _worker(
        make_worker,
        lambda w, t: None,
        tasks_per_transaction=2,
        max_tasks_per_run=3,
        prefetch=depth,
    )
    worker.push_tasks([{"n": i} for i in range(6)])

    worker.run()

    assert _worked(worker) == [0, 1, 2]
    assert broker.lengths("jobs") == QueueLengths(ready=3)


@pytest.mark.parametrize("depth", [1, 2])
def test_stopping_releases_the_prefetched_batches_untouched(
    make_worker: WorkerFactory, broker: MemoryBroker, depth: int
) -> None:
    """A stop leaves the prefetched tasks ready, first in line, never delivered."""
    worker = _worker(
        make_worker,
        lambda w, t: w.stop() if t.kwargs["n"] == 1 else None,
        tasks_per_transaction=2,
        prefetch=depth,
    )
    worker.push_tasks([{"n": i} for i in range(8)])

    worker.run()
    lengths = broker.lengths("jobs")
    after = broker.reserve("jobs", owner="next", count=6)

    assert _worked(worker) == [0, 1]
    assert lengths == QueueLengths(ready=6)
    assert [d.deliveries for d in after] == [1] * 6
    assert [worker.codec.decode(d.payload).kwargs["n"] for d in after] == [
        2, 3, 4, 5, 6, 7,
    ]  # fmt: skip


def test_requests_that_come_back_empty_are_skipped(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """The queue ran dry ahead of the worker: it goes on to a plain reserve."""
    worker = _worker(
        make_worker, lambda w, t: None, tasks_per_transaction=2, prefetch=2
    )
    worker.push_tasks([{"n": i} for i in range(3)])

    handled = [worker.step(), worker.step(), worker.step()]
    worker.push_tasks([{"n": 3}])
    handled.append(worker.step())

    assert handled == [2, 1, 0, 1]
    assert _worked(worker) == [0, 1, 2, 3]


def test_a_batch_that_waited_past_half_its_lease_is_released_then_taken_again(
    make_worker: WorkerFactory,
    broker: MemoryBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its lease may lapse before renewal reaches it, so it is not run as is."""
    released: list[list[Delivery]] = []
    real_release = broker.release

    def release(queue: str, deliveries: Any, *, delay: float = 0.0) -> None:
        released.append(list(deliveries))
        real_release(queue, deliveries, delay=delay)

    monkeypatch.setattr(broker, "release", release)

    worker = _worker(
        make_worker,
        _slow_first,
        tasks_per_transaction=2,
        max_tasks_per_run=4,
        lease=10.0,
    )
    worker.push_tasks([{"n": i} for i in range(4)])

    worker.run()

    assert _worked(worker) == [0, 1, 2, 3]
    assert [len(batch) for batch in released] == [2]
    assert broker.lengths("jobs") == QueueLengths()


def test_acks_no_request_carried_are_sent_before_the_next_batch_runs(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """A short prefetched batch sends no request for acks to ride on: the finished
    batch is acked before it runs, not left unacked (and unrenewed) meanwhile."""
    seen: list[QueueLengths] = []

    def note(worker: Recorder, task: Any) -> None:
        if task.kwargs["n"] == 2:
            seen.append(broker.lengths("jobs"))

    worker = _worker(make_worker, note, tasks_per_transaction=2)
    worker.push_tasks([{"n": i} for i in range(3)])

    worker.step()  # runs 0 and 1; task 2 is prefetched, a short batch
    worker.step()

    assert seen == [QueueLengths(in_flight=1)]


class _RecordingKeeper:
    """Stands in for the LeaseKeeper: what each batch asked to be renewed."""

    def __init__(self) -> None:
        self.held: list[list[str]] = []

    def hold(self, deliveries: Any) -> None:
        self.held.append(sorted(d.receipt for d in deliveries))

    def drop(self) -> None:
        pass


def test_acks_that_could_not_be_sent_are_renewed_while_the_next_batch_runs(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """Finished tasks whose ack failed wait for the next one unacked: their leases
    are renewed meanwhile, or they would lapse behind a long batch and run again."""
    real_ack = broker.ack
    failures = [BrokerUnavailable("unreachable")]

    def ack(queue: str, deliveries: Any) -> None:
        if failures:
            raise failures.pop()
        real_ack(queue, deliveries)

    broker.ack = ack  # type: ignore[method-assign]
    worker = _worker(make_worker, lambda w, t: None, tasks_per_transaction=2)
    keeper = _RecordingKeeper()
    worker._settlement.keeper = keeper  # type: ignore[assignment]
    worker.push_tasks([{"n": i} for i in range(3)])

    worker.step()  # runs 0 and 1; task 2 is prefetched, a short batch
    first = keeper.held[0]
    worker.step()  # acking 0 and 1 fails before task 2 runs

    assert failures == []
    assert set(first) <= set(keeper.held[1])
    assert len(keeper.held[1]) == 3


@pytest.mark.parametrize(("batch", "depth", "budget"), [(3, 3, 10), (5, 2, 6)])
def test_a_deep_prefetch_asks_for_no_more_than_the_task_budget(
    make_worker: WorkerFactory,
    broker: MemoryBroker,
    batch: int,
    depth: int,
    budget: int,
) -> None:
    """The requests in flight together stay within max_tasks_per_run."""
    asked: list[int] = []
    real_begin = broker.begin_reserve

    def begin_reserve(queue: str, **options: Any) -> Any:
        asked.append(options["count"])
        return real_begin(queue, **options)

    worker = _worker(
        make_worker,
        lambda w, t: None,
        tasks_per_transaction=batch,
        max_tasks_per_run=budget,
        prefetch=depth,
    )
    broker.begin_reserve = begin_reserve  # type: ignore[method-assign]
    worker.push_tasks([{"n": i} for i in range(30)])

    worker.run()

    assert _worked(worker) == list(range(budget))
    assert broker.lengths("jobs") == QueueLengths(ready=30 - budget)
    assert sum(asked) <= budget - min(batch, budget)


def test_a_stop_mid_batch_puts_every_unrun_task_back_in_order(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """The running batch's unstarted tasks go back ahead of the prefetched ones."""
    worker = _worker(
        make_worker,
        lambda w, t: w.stop() if t.kwargs["n"] == 0 else None,
        tasks_per_transaction=3,
        prefetch=2,
    )
    worker.push_tasks([{"n": i} for i in range(12)])

    worker.run()
    after = broker.reserve("jobs", owner="next", count=20)

    assert _worked(worker) == [0]
    assert [worker.codec.decode(d.payload).kwargs["n"] for d in after] == list(
        range(1, 12)
    )


def test_stale_prefetched_batches_go_back_in_the_order_taken(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """Two prefetched batches that waited past half their lease are released
    together, so they still run in order."""

    worker = _worker(
        make_worker,
        _slow_first,
        tasks_per_transaction=2,
        max_tasks_per_run=8,
        prefetch=2,
        lease=10.0,
    )
    worker.push_tasks([{"n": i} for i in range(8)])

    worker.run()

    assert _worked(worker) == list(range(8))


def test_prefetch_needs_at_least_once() -> None:
    """Popped tasks cannot be released, so the combination is refused by name."""
    with pytest.raises(ConfigError, match=r"WorkerConfig\.prefetch"):
        WorkerConfig(name="q", prefetch=1, delivery="at_most_once")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "must be a number"),
        (1.5, "must be an integer"),
        (-1, "must be >= 0"),
    ],
)
def test_prefetch_is_a_whole_number_of_batches(value: Any, message: str) -> None:
    """A depth: not a flag, not a fraction, not negative."""
    with pytest.raises(ConfigError, match=rf"WorkerConfig\.prefetch {message}"):
        WorkerConfig(name="q", prefetch=value)


def test_prefetch_needs_a_broker_that_reserves_ahead(tmp_path: Path) -> None:
    """A broker without SupportsPrefetch fails at construction, named."""
    broker = SqliteBroker(str(tmp_path / "q.db"))
    try:
        with pytest.raises(ConfigError, match="SqliteBroker cannot"):
            Recorder(
                config=WorkerConfig(name="q", prefetch=1),
                broker=broker,
                codec=PickleCodec(),
                executor=SerialExecutor(),
                watchdog=NullWatchdog(),
            )
    finally:
        broker.close()


def test_prefetched_batches_are_leased_to_the_workers_current_owner(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """The supervisor releases a dead child's tasks by owner: prefetched ones too."""
    worker = _worker(make_worker, lambda w, t: None, tasks_per_transaction=2)
    worker.owner = "child-7"
    worker.push_tasks([{"n": i} for i in range(5)])

    worker.step()
    released = broker.release_owner("jobs", "child-7")

    assert released == 4  # the batch run (acks pending) and the one prefetched
    assert broker.lengths("jobs") == QueueLengths(ready=5)


def test_a_stop_with_the_broker_unreachable_asks_it_no_more(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """A stop while the broker is unreachable: the first call that finds it so
    (collecting the first batch ahead) is the last. Collecting the next one and
    acking would each wait out the broker's retry budget again (about 10 s on
    Redis), past the supervisor's grace; those tasks come back when their leases
    lapse."""
    calls: list[str] = []
    down = False
    real_begin = broker.begin_reserve

    def begin_reserve(queue: str, **options: Any) -> Any:
        collect = real_begin(queue, **options)

        def collected() -> list[Delivery]:
            calls.append("collect")
            if down:
                raise BrokerUnavailable("unreachable")
            return collect()  # type: ignore[no-any-return]

        return collected

    def unreachable(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            calls.append(name)
            raise BrokerUnavailable("unreachable")

        return call

    def work(worker: Recorder, task: Any) -> None:
        nonlocal down
        if task.kwargs["n"] == 1:  # the batch's last task: nothing left unstarted
            down = True
            broker.ack = unreachable("ack")  # type: ignore[method-assign]
            broker.release = unreachable("release")  # type: ignore[method-assign]
            worker.request_stop()

    worker = _worker(make_worker, work, tasks_per_transaction=2, prefetch=2)
    broker.begin_reserve = begin_reserve  # type: ignore[method-assign]
    worker.push_tasks([{"n": i} for i in range(10)])

    worker.run()

    assert _worked(worker) == [0, 1]
    assert calls == ["collect"]
