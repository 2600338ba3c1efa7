"""The worker end to end on the memory broker: handlers, control flow and the loop.

Assertions look at the broker's end state and at which handlers ran, not at the order
of internal calls.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from sergeant.adapters.memory import MemoryBroker

from sergeant import lifecycle as lc
from sergeant.clock import FakeClock
from sergeant.errors import BrokerUnavailable, ConfigError, TaskTimedOut
from sergeant.protocols import QueueLengths
from sergeant.supervision import StopReason
from sergeant.task import Priority, Task
from tests.conftest import Recorder, WorkerFactory


def _worker(make_worker: WorkerFactory, behaviour: Any, **config: Any) -> Recorder:
    cls = type("W", (Recorder,), {"behaviour": staticmethod(behaviour)})
    worker = make_worker(cls, **config)
    assert isinstance(worker, Recorder)
    return worker


def test_successful_tasks_are_acked_and_on_success_sees_the_result(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """Each task runs once, on_success gets its return value, the queue ends empty."""
    worker = _worker(make_worker, lambda w, t: t.kwargs["n"] * 10, max_tasks_per_run=3)
    worker.push_tasks([{"n": 1}, {"n": 2}, {"n": 3}])

    reason = worker.run()

    assert reason is StopReason.MAX_TASKS
    successes = [c for c in worker.calls if c[0] == "on_success"]
    assert successes == [
        ("on_success", {"n": 1}, 10),
        ("on_success", {"n": 2}, 20),
        ("on_success", {"n": 3}, 30),
    ]
    assert broker.lengths("jobs") == QueueLengths()
    assert worker.names()[0] == "initialize"
    assert worker.names()[-1] == "finalize"


def test_acks_ride_on_the_next_reserve(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """After a step its tasks stay in flight until the next reserve acks them."""
    worker = _worker(make_worker, lambda w, t: None, tasks_per_transaction=2)
    worker.push_tasks([{"n": i} for i in range(3)])

    worker.step()
    in_flight_after_first = broker.lengths("jobs").in_flight
    worker.step()

    assert in_flight_after_first == 2
    assert broker.lengths("jobs") == QueueLengths(in_flight=1)


def test_batches_take_tasks_per_transaction(make_worker: WorkerFactory) -> None:
    """One step reserves and runs up to tasks_per_transaction tasks."""
    worker = _worker(make_worker, lambda w, t: None, tasks_per_transaction=4)
    worker.push_tasks([{"n": i} for i in range(10)])

    handled = [worker.step(), worker.step(), worker.step(), worker.step()]

    assert handled == [4, 4, 2, 0]


def test_high_priority_tasks_run_first(make_worker: WorkerFactory) -> None:
    """Ready HIGH tasks are run before NORMAL ones pushed earlier."""
    worker = _worker(make_worker, lambda w, t: None, max_tasks_per_run=3)
    worker.push_tasks([{"n": 1}, {"n": 2}])
    worker.push_task({"n": 3}, priority=Priority.HIGH)

    worker.run()

    assert [c[1]["n"] for c in worker.calls if c[0] == "work"] == [3, 1, 2]


def test_a_failure_runs_on_failure_and_drops_the_task(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """An exception in work calls on_failure; the task is settled, not retried."""

    def boom(worker: Any, task: Any) -> Any:
        raise RuntimeError("boom")

    worker = _worker(make_worker, boom, max_tasks_per_run=1)
    worker.push_task({"n": 1})

    worker.run()

    assert ("on_failure", {"n": 1}, "RuntimeError('boom')") in worker.calls
    assert broker.lengths("jobs") == QueueLengths()
    assert isinstance(worker.events[-1], lc.Dropped)


def test_retry_backs_off_then_dead_letters_after_max_retries(
    make_worker: WorkerFactory, broker: MemoryBroker, clock: FakeClock
) -> None:
    """A task retried every run runs 1 + max_retries times, then is dead-lettered."""
    worker = _worker(make_worker, lambda w, t: w.retry(t), max_retries=2)
    worker.push_task({"n": 1})

    for _ in range(3):
        worker.step()
        assert worker.step() == 0  # the retry is delayed, not ready yet
        clock.advance(3600)
    worker.step()

    assert worker.names().count("work") == 3
    assert [c for c in worker.calls if c[0] == "on_retry"] == [
        ("on_retry", {"n": 1}, 0),
        ("on_retry", {"n": 1}, 1),
    ]
    assert ("on_max_retries", {"n": 1}, 2) in worker.calls
    [dead] = broker.dead_letters("jobs")
    assert dead.reason == "max retries (2) exhausted"
    assert broker.lengths("jobs") == QueueLengths(dead=1)


def test_retry_with_an_explicit_delay_uses_it(
    make_worker: WorkerFactory, broker: MemoryBroker, clock: FakeClock
) -> None:
    """retry(task, delay=d) makes the task ready d seconds later, not before."""
    worker = _worker(
        make_worker,
        lambda w, t: w.retry(t, delay=30.0) if t.attempt == 0 else "done",
        max_retries=1,
    )
    worker.push_task({"n": 1})

    worker.step()
    clock.advance(29.0)
    early = worker.step()
    clock.advance(2.0)
    late = worker.step()

    assert (early, late) == (0, 1)
    assert ("on_success", {"n": 1}, "done") in worker.calls


def test_on_failure_may_ask_for_a_retry(
    make_worker: WorkerFactory, broker: MemoryBroker, clock: FakeClock
) -> None:
    """A retry returned by on_failure schedules the task again."""

    class Retrier(Recorder):
        def on_failure(self, task: Any, exception: BaseException) -> Any:
            super().on_failure(task, exception)
            return self.retry(task, delay=0.0)

    def fail_first(worker: Any, task: Any) -> Any:
        if task.attempt == 0:
            raise ValueError("transient")
        return "ok"

    Retrier.behaviour = staticmethod(fail_first)  # type: ignore[assignment]
    worker = make_worker(Retrier, max_retries=3)
    assert isinstance(worker, Recorder)
    worker.push_task({"n": 1})

    worker.step()
    worker.step()

    assert worker.names().count("work") == 2
    assert ("on_success", {"n": 1}, "ok") in worker.calls


def test_requeue_puts_the_task_back_without_counting_a_retry(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """A requeued task runs again with the same attempt number; on_requeue runs."""
    seen: list[int] = []

    def requeue_once(worker: Any, task: Any) -> Any:
        seen.append(task.attempt)
        return worker.requeue(task) if len(seen) == 1 else None

    worker = _worker(make_worker, requeue_once, max_tasks_per_run=2)
    worker.push_task({"n": 1})

    worker.run()

    assert seen == [0, 0]
    assert ("on_requeue", {"n": 1}) in worker.calls
    assert broker.lengths("jobs") == QueueLengths()


def test_stop_ends_the_loop_and_releases_unstarted_tasks(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """stop() finishes the current task and releases the rest; on_stop runs."""
    worker = _worker(
        make_worker,
        lambda w, t: w.stop() if t.kwargs["n"] == 1 else None,
        tasks_per_transaction=5,
    )
    worker.push_tasks([{"n": i} for i in range(5)])

    reason = worker.run()

    assert reason is StopReason.STOPPED
    assert worker.names().count("work") == 2
    assert "on_stop" in worker.names()
    assert broker.lengths("jobs") == QueueLengths(ready=3)
    assert broker.reserve("jobs", owner="x", count=5)[0].deliveries == 1


def test_respawn_ends_the_loop_with_reason_respawn(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """respawn() returns RESPAWN from run(); the task itself counts as done."""
    worker = _worker(make_worker, lambda w, t: w.respawn())
    worker.push_tasks([{"n": 1}, {"n": 2}])

    reason = worker.run()

    assert reason is StopReason.RESPAWN
    assert broker.lengths("jobs") == QueueLengths(ready=1)


def test_request_stop_before_run_stops_at_once(make_worker: WorkerFactory) -> None:
    """A stop requested from outside (a signal) ends run() and calls on_stop."""
    worker = _worker(make_worker, lambda w, t: None)
    worker.push_task({"n": 1})
    worker.request_stop()

    reason = worker.run()

    assert reason is StopReason.STOPPED
    assert "work" not in worker.names()
    assert "on_stop" in worker.names()


def test_max_tasks_per_run_leaves_the_rest_ready(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """After max_tasks_per_run tasks the loop returns MAX_TASKS; others stay ready."""
    worker = _worker(
        make_worker, lambda w, t: None, max_tasks_per_run=3, tasks_per_transaction=2
    )
    worker.push_tasks([{"n": i} for i in range(5)])

    reason = worker.run()

    assert reason is StopReason.MAX_TASKS
    assert worker.names().count("work") == 3
    assert broker.lengths("jobs") == QueueLengths(ready=2)


def test_starvation_calls_on_starvation_once_per_stretch(
    make_worker: WorkerFactory, monotonic: FakeClock
) -> None:
    """With no task for time_with_no_tasks seconds, on_starvation runs, then again."""
    from sergeant.config import Starvation

    worker = _worker(
        make_worker, lambda w, t: None, starvation=Starvation(time_with_no_tasks=10)
    )

    worker.step()
    monotonic.advance(9)
    worker.step()
    monotonic.advance(2)
    worker.step()
    worker.step()
    monotonic.advance(10)
    worker.step()

    assert [c for c in worker.calls if c[0] == "on_starvation"] == [
        ("on_starvation", 11),
        ("on_starvation", 10),
    ]


def test_a_raising_handler_is_logged_and_the_loop_goes_on(
    make_worker: WorkerFactory, broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception in on_success is logged; later tasks still run and are acked."""

    class Clumsy(Recorder):
        def on_success(self, task: Any, returned_value: Any) -> None:
            super().on_success(task, returned_value)
            raise KeyError("handler bug")

    worker = make_worker(Clumsy, max_tasks_per_run=2)
    worker.push_tasks([{"n": 1}, {"n": 2}])

    with caplog.at_level(logging.ERROR):
        worker.run()

    assert worker.names().count("on_success") == 2  # type: ignore[attr-defined]
    assert "handler on_success raised" in caplog.text
    assert broker.lengths("jobs") == QueueLengths()


def test_poison_payloads_are_dead_lettered_and_the_loop_continues(
    make_worker: WorkerFactory, broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Undecodable bytes go to dead letters with the reason; good tasks still run.

    Each is logged once at WARNING with its size and reason, never its bytes.
    """
    worker = _worker(make_worker, lambda w, t: None, max_tasks_per_run=2)
    worker.push_task({"n": 1})
    broker.push("jobs", [b"\x00garbage", b"not a task at all"])
    worker.push_task({"n": 2})

    with caplog.at_level(logging.WARNING):
        worker.run()

    assert worker.names().count("work") == 2
    dead = broker.dead_letters("jobs")
    assert [d.payload for d in dead] == [b"\x00garbage", b"not a task at all"]
    assert all(d.reason.startswith("undecodable payload: ") for d in dead)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("dead-lettered a payload of 8 bytes from queue jobs")
    assert "garbage" not in caplog.text


@pytest.mark.parametrize(
    ("delivery", "fate"),
    [
        ("at_least_once", "it stays leased and comes back when its lease lapses"),
        ("at_most_once", "it was popped at most once: it is lost"),
    ],
)
def test_a_retry_that_cannot_be_pushed_is_logged_with_what_becomes_of_the_task(
    make_worker: WorkerFactory,
    broker: MemoryBroker,
    caplog: pytest.LogCaptureFixture,
    delivery: str,
    fate: str,
) -> None:
    """The warning says what happens to the task: at least once it comes back
    with its lease, at most once it was popped and is gone."""
    worker = _worker(
        make_worker,
        lambda w, t: w.retry(t),
        max_retries=3,
        max_tasks_per_run=1,
        delivery=delivery,
    )
    worker.push_task({"n": 1})

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise BrokerUnavailable("unreachable")

    broker.push = unreachable  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        worker.run()

    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("could not push task ")
    assert f"({fate}): unreachable" in warning


def test_a_task_that_keeps_killing_its_worker_is_dead_lettered(
    make_worker: WorkerFactory, broker: MemoryBroker, clock: FakeClock
) -> None:
    """After max_deliveries unsettled deliveries the task is dead-lettered, not run."""
    worker = _worker(make_worker, lambda w, t: None, max_deliveries=2, lease=10)
    worker.push_task({"n": 1})
    for _ in range(2):  # two deliveries whose worker "died": leases lapse
        assert len(broker.reserve("jobs", owner="doomed", lease=10)) == 1
        clock.advance(11)

    worker.step()

    assert "work" not in worker.names()
    [dead] = broker.dead_letters("jobs")
    assert "delivered 3 times without being settled" in dead.reason
    assert isinstance(worker.events[-1], lc.Rejected)


def test_a_crash_looping_task_is_dead_lettered_in_the_queue_it_was_leased_from(
    make_worker: WorkerFactory, broker: MemoryBroker, clock: FakeClock
) -> None:
    """Its record may name another queue (a payload copied over): the dead letter,
    and the end of its lease, belong to the worker's queue."""
    worker = _worker(make_worker, lambda w, t: None, max_deliveries=1, lease=10)
    payload = worker.codec.encode(Task(kwargs={"n": 1}, queue="elsewhere"))
    broker.push("jobs", [payload])
    assert len(broker.reserve("jobs", owner="doomed", lease=10)) == 1
    clock.advance(11)

    worker.step()

    assert broker.lengths("jobs") == QueueLengths(dead=1)
    assert broker.lengths("elsewhere") == QueueLengths()


def test_a_payload_whose_decoding_kills_the_worker_is_capped_too(
    make_worker: WorkerFactory, broker: MemoryBroker, clock: FakeClock
) -> None:
    """The crash cap is applied before decoding: a payload whose unpickling
    exits the process (an unsigned pickle: trusted brokers only) killed every
    worker it reached, for ever, since the cap was checked on decoded tasks. Past
    max_deliveries it is dead-lettered undecoded; a good task beside it runs."""
    import pickle

    class Exits:
        def __reduce__(self) -> Any:
            return (exit, (3,))

    worker = _worker(
        make_worker, lambda w, t: t.kwargs, max_deliveries=1, lease=10,
        tasks_per_transaction=2,
    )  # fmt: skip
    header = worker.codec.encode(Task(kwargs={}))[:6]
    broker.push("jobs", [header + pickle.dumps(Exits())])
    with pytest.raises(SystemExit):  # its first delivery kills the worker
        worker.step()
    clock.advance(11)  # the worker "died": its lease lapses
    worker.push_task({"n": 2})

    worker.step()

    [dead] = broker.dead_letters("jobs")
    assert "delivered 2 times without being settled" in dead.reason
    assert ("work", {"n": 2}) in worker.calls
    assert broker.lengths("jobs") == QueueLengths(dead=1, in_flight=1)


def test_a_failing_initialize_leaves_no_lease_keeper_behind(
    make_worker: WorkerFactory,
) -> None:
    """initialize raising ends run(); finalize still runs and no renewal thread
    is left running."""

    class Broken(Recorder):
        def initialize(self) -> None:
            raise RuntimeError("no database")

    worker = make_worker(Broken)
    before = {t for t in threading.enumerate() if "lease-keeper" in t.name}

    with pytest.raises(RuntimeError, match="no database"):
        worker.run()
    after = {t for t in threading.enumerate() if "lease-keeper" in t.name}

    assert after <= before
    assert isinstance(worker, Recorder)
    assert "finalize" in worker.names()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", float("nan")),
        ("eta", float("nan")),
        ("delay", float("inf")),
        ("eta", 10**400),  # an int past a float: math.isfinite would overflow
    ],
)
def test_a_push_with_a_time_that_is_not_finite_is_refused(
    make_worker: WorkerFactory, broker: MemoryBroker, option: str, value: float
) -> None:
    """Such a task would only be dead-lettered as malformed: refused, not pushed."""
    worker = _worker(make_worker, lambda w, t: None)

    with pytest.raises(ConfigError, match=f"{option} must be a finite number"):
        worker.push_task({"n": 1}, **{option: value})

    assert broker.lengths("jobs") == QueueLengths()


def test_a_push_with_a_timeout_past_ten_years_is_refused(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """A worker decodes such a task as malformed (a watchdog cannot arm for it):
    refused at the push instead."""
    worker = _worker(make_worker, lambda w, t: None)

    with pytest.raises(ConfigError, match="at most ten years"):
        worker.push_task({"n": 1}, timeout=1e300)

    assert broker.lengths("jobs") == QueueLengths()


@pytest.mark.parametrize("limit", ["100", 0, -1, True, 1.5])
def test_a_producer_with_a_bad_max_payload_bytes_fails_at_construction(
    broker: MemoryBroker, limit: Any
) -> None:
    """As WorkerConfig's does: not at the first push (a TypeError there, or every
    push refused)."""
    from sergeant.adapters.codecs.pickle import PickleCodec

    from sergeant.producer import Producer

    with pytest.raises(ConfigError, match=r"Producer\.max_payload_bytes"):
        Producer(broker=broker, codec=PickleCodec(), queue="q", max_payload_bytes=limit)


def test_on_failure_may_stop_the_worker(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """``return self.stop()`` from on_failure: the failed task is done with and the
    worker stops after its batch, leaving the rest of the queue."""

    class StopsOnFailure(Recorder):
        behaviour = staticmethod(lambda w, t: 1 / 0)

        def on_failure(self, task: Any, exception: BaseException) -> Any:
            super().on_failure(task, exception)
            return self.stop()

    worker = make_worker(StopsOnFailure)
    worker.push_tasks([{"n": 1}, {"n": 2}])

    reason = worker.run()

    assert reason is StopReason.STOPPED
    assert broker.lengths("jobs") == QueueLengths(ready=1)


def test_a_retry_with_a_bad_delay_fails_that_task_only(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """A delay that is not a number is an error in the task's code: that task fails
    (on_failure sees why); the rest of the batch settles as usual."""

    def bad_retry(worker: Any, task: Any) -> Any:
        return worker.retry(task, delay="5") if task.kwargs["n"] == 1 else None

    worker = _worker(
        make_worker, bad_retry, tasks_per_transaction=3, max_tasks_per_run=3
    )
    worker.push_tasks([{"n": i} for i in range(3)])

    worker.run()
    failures = [c for c in worker.calls if c[0] == "on_failure"]

    assert len(failures) == 1
    assert "retry delay must be a finite number" in failures[0][2]
    assert broker.lengths("jobs") == QueueLengths()


class _OwnFloat(float):
    """A float subclass, as numpy's float64 is one: pickle keeps the class."""


def test_times_given_as_a_float_subclass_are_pushed_as_plain_floats(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """A numpy-like float for timeout or delay still gives a task the worker can
    decode and run (decoders take exactly int or float)."""
    worker = _worker(make_worker, lambda w, t: None, max_tasks_per_run=2)
    worker.push_task({"n": 1}, timeout=_OwnFloat(30.0))
    worker.push_task({"n": 2}, delay=_OwnFloat(0.0))

    worker.run()

    assert [c[1] for c in worker.calls if c[0] == "work"] == [{"n": 1}, {"n": 2}]
    assert broker.lengths("jobs") == QueueLengths()


def test_a_timeout_runs_on_timeout(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """TaskTimedOut raised inside work (by a watchdog) settles as a timeout."""

    def too_slow(worker: Any, task: Any) -> Any:
        raise TaskTimedOut

    worker = _worker(make_worker, too_slow, max_tasks_per_run=1)
    worker.push_task({"n": 1})

    worker.run()

    assert ("on_timeout", {"n": 1}) in worker.calls
    assert "on_failure" not in worker.names()
    assert broker.lengths("jobs") == QueueLengths()


def test_every_transition_is_published_in_order(make_worker: WorkerFactory) -> None:
    """A listener sees Delivered, Started and Succeeded for a successful task."""
    worker = _worker(make_worker, lambda w, t: "r", max_tasks_per_run=1)
    worker.push_task({"n": 1})

    worker.run()

    assert [type(e) for e in worker.events] == [lc.Delivered, lc.Started, lc.Succeeded]
    assert worker.events[-1].result == "r"  # type: ignore[attr-defined]


def test_work_batch_reports_an_outcome_per_task(
    make_worker: WorkerFactory, broker: MemoryBroker, clock: FakeClock
) -> None:
    """work_batch's results map to success, failure and retry per task."""

    class Batcher(Recorder):
        def work_batch(self, tasks: Any) -> list[Any]:
            return [
                {0: "ok", 1: ValueError("bad"), 2: self.retry(t, delay=5)}[
                    t.kwargs["n"]
                ]
                if t.attempt == 0
                else "second"
                for t in tasks
            ]

    worker = make_worker(Batcher, tasks_per_transaction=3, max_retries=1)
    assert isinstance(worker, Recorder)
    worker.push_tasks([{"n": 0}, {"n": 1}, {"n": 2}])

    worker.step()
    clock.advance(10)
    worker.step()

    assert ("on_success", {"n": 0}, "ok") in worker.calls
    assert ("on_failure", {"n": 1}, "ValueError('bad')") in worker.calls
    assert ("on_retry", {"n": 2}, 0) in worker.calls
    assert ("on_success", {"n": 2}, "second") in worker.calls


def test_work_batch_returning_the_wrong_count_fails_every_task(
    make_worker: WorkerFactory,
) -> None:
    """A work_batch result list of the wrong length fails the whole batch."""

    class Short(Recorder):
        def work_batch(self, tasks: Any) -> list[Any]:
            return []

    worker = make_worker(Short, tasks_per_transaction=2)
    assert isinstance(worker, Recorder)
    worker.push_tasks([{"n": 0}, {"n": 1}])

    worker.step()

    assert worker.names().count("on_failure") == 2


def test_at_most_once_pops_and_pushes_back_unstarted_tasks(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """In at-most-once mode nothing stays in flight; a stop gives back the rest."""
    worker = _worker(
        make_worker,
        lambda w, t: w.stop() if t.kwargs["n"] == 0 else None,
        delivery="at_most_once",
        tasks_per_transaction=3,
    )
    worker.push_tasks([{"n": 0}, {"n": 1}, {"n": 2}])

    worker.run()

    assert broker.lengths("jobs") == QueueLengths(ready=2)


def test_a_broker_outage_is_waited_out_and_logged_once(
    make_worker: WorkerFactory, broker: MemoryBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Reserve failures back off without crashing; one warning per outage."""
    worker = _worker(make_worker, lambda w, t: None)
    worker._settlement.backoff_initial = 0.001
    worker._settlement.backoff_max = 0.002
    real_reserve = broker.reserve
    failures = iter([True, True, True, False])

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if next(failures, False):
            raise BrokerUnavailable("connection refused")
        return real_reserve(*args, **kwargs)

    broker.reserve = flaky  # type: ignore[method-assign]
    worker.push_task({"n": 1})

    with caplog.at_level(logging.WARNING):
        results = [worker.step() for _ in range(4)]

    assert results == [0, 0, 0, 1]
    assert caplog.text.count("broker unavailable") == 1
    assert caplog.text.count("broker reachable again") == 1


def test_producer_methods(
    make_worker: WorkerFactory, broker: MemoryBroker, clock: FakeClock
) -> None:
    """push_task(s), number_of_enqueued_tasks, get_next_tasks and purge work."""
    worker = _worker(make_worker, lambda w, t: None)
    pushed = worker.push_tasks([{"n": 1}, {"n": 2}])
    worker.push_task({"n": 3}, delay=60)

    enqueued = worker.number_of_enqueued_tasks()
    [task] = worker.get_next_tasks(1)
    purged = worker.purge_tasks()

    assert enqueued == 3
    assert task.id == pushed[0].id
    assert task.kwargs == {"n": 1}
    assert purged == 2
    assert worker.number_of_enqueued_tasks() == 0


def test_worker_lock_is_shared_through_the_broker(make_worker: WorkerFactory) -> None:
    """Two workers' locks with one name exclude each other."""
    first = _worker(make_worker, lambda w, t: None)
    second = _worker(make_worker, lambda w, t: None)

    held = first.lock("resource").acquire(timeout=0)
    refused = second.lock("resource").acquire(timeout=0)

    assert (held, refused) == (True, False)


class _RecordingWatchdog:
    """A watchdog double that records arm/disarm calls (never fires)."""

    def __init__(self) -> None:
        self.armed: list[tuple[float, float]] = []
        self.disarmed = 0

    def arm(self, timeout: float, *, grace: float) -> object:
        self.armed.append((timeout, grace))
        return len(self.armed)

    def disarm(self, handle: object) -> bool:
        self.disarmed += 1
        return True

    def close(self) -> None:
        """Nothing to stop."""


def test_the_watchdog_is_armed_with_the_task_or_worker_timeout(
    make_worker: WorkerFactory,
) -> None:
    """A task's own timeout overrides the worker's; every arm is disarmed."""
    from sergeant.config import Timeouts

    worker = _worker(
        make_worker,
        lambda w, t: None,
        timeouts=Timeouts(timeout=5.0, grace_period=2.0),
        max_tasks_per_run=2,
    )
    watchdog = _RecordingWatchdog()
    worker.watchdog = watchdog
    worker.push_task({"n": 1})
    worker.push_task({"n": 2}, timeout=0.5)

    worker.run()

    assert watchdog.armed == [(5.0, 2.0), (0.5, 2.0)]
    assert watchdog.disarmed == 2


class _FiredWatchdog(_RecordingWatchdog):
    """A watchdog double whose every deadline fired before the task ended."""

    def disarm(self, handle: object) -> bool:
        super().disarm(handle)
        return False


def test_a_task_whose_cleanup_fails_while_stopped_for_its_timeout_timed_out(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """The deadline fired and the task raised another error on its way out (its
    cleanup failed while being stopped): it timed out, as one that swallowed
    the timeout and returned did, so on_timeout decides (not on_failure)."""
    from sergeant.config import Timeouts

    def cleanup_fails(w: Any, t: Any) -> None:
        raise RuntimeError("rollback failed during cleanup")

    worker = _worker(
        make_worker, cleanup_fails, timeouts=Timeouts(timeout=5.0),
        max_tasks_per_run=1,
    )  # fmt: skip
    worker.watchdog = _FiredWatchdog()
    worker.push_task({"n": 1})

    worker.run()

    assert "on_timeout" in worker.names()
    assert "on_failure" not in worker.names()
    assert [type(e).__name__ for e in worker.events][1:3] == ["Started", "TimedOut"]


@pytest.mark.parametrize(
    ("control", "reason"),
    [("respawn", StopReason.RESPAWN), ("stop", StopReason.STOPPED)],
)
def test_a_stop_returned_by_a_task_that_ran_over_still_stops_the_worker(
    make_worker: WorkerFactory, control: str, reason: StopReason
) -> None:
    """A task that swallowed its timeout and returned respawn() or stop() timed
    out, and the worker still stops as it asked (a respawn is how a task says
    the process is unwell: dropping it would keep a sick worker running)."""
    from sergeant.config import Timeouts

    worker = _worker(
        make_worker, lambda w, t: getattr(w, control)(),
        timeouts=Timeouts(timeout=5.0), max_tasks_per_run=3,
    )  # fmt: skip
    worker.watchdog = _FiredWatchdog()
    worker.push_tasks([{"n": 1}, {"n": 2}, {"n": 3}])

    returned = worker.run()

    assert returned is reason
    assert [c for c in worker.calls if c[0] == "work"] == [("work", {"n": 1})]
    assert "on_timeout" in worker.names()


def test_a_stop_in_a_batch_that_ran_over_still_stops_the_worker(
    make_worker: WorkerFactory,
) -> None:
    """work_batch ran over its deadline (it swallowed the timeout) and returned a
    respawn() for one task: the batch timed out, and the worker still stops."""
    from sergeant.config import Timeouts

    class Batcher(Recorder):
        def work_batch(self, tasks: Any) -> list[Any]:
            self.calls.append(("work_batch", len(tasks)))
            return [self.respawn() if t.kwargs["n"] == 1 else None for t in tasks]

    worker = make_worker(
        Batcher, tasks_per_transaction=2, max_tasks_per_run=4,
        timeouts=Timeouts(timeout=5.0),
    )  # fmt: skip
    assert isinstance(worker, Recorder)
    worker.watchdog = _FiredWatchdog()
    worker.push_tasks([{"n": 0}, {"n": 1}, {"n": 2}, {"n": 3}])

    returned = worker.run()

    assert returned is StopReason.RESPAWN
    assert [c for c in worker.calls if c[0] == "work_batch"] == [("work_batch", 2)]


def test_no_timeout_means_the_watchdog_is_not_armed(
    make_worker: WorkerFactory,
) -> None:
    """With no timeout configured, tasks run without arming the watchdog."""
    worker = _worker(make_worker, lambda w, t: None, max_tasks_per_run=1)
    watchdog = _RecordingWatchdog()
    worker.watchdog = watchdog
    worker.push_task({"n": 1})

    worker.run()

    assert watchdog.armed == []


def test_an_idle_worker_with_no_wait_does_not_spin(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """wait=0: a reserve never blocks, so run() pauses after each one that found
    nothing, instead of calling the broker as fast as it can (a core, and on
    SQLite a write transaction per pass)."""
    import threading

    reserves = []
    real = broker.reserve

    def counted(*args: Any, **kwargs: Any) -> Any:
        reserves.append(1)
        return real(*args, **kwargs)

    broker.reserve = counted  # type: ignore[method-assign]
    worker = _worker(make_worker, lambda w, t: None, wait=0.0)
    stopper = threading.Timer(0.5, worker.request_stop)
    stopper.start()

    worker.run()
    stopper.join()

    assert 0 < len(reserves) < 100  # about 50 at one pass per 10 ms


@pytest.mark.slow
def test_leases_are_renewed_while_a_slow_task_runs() -> None:
    """A task running longer than its lease is not handed to a second worker."""
    import threading
    import time

    from sergeant.adapters.codecs.pickle import PickleCodec
    from sergeant.adapters.executors.serial import SerialExecutor
    from sergeant.adapters.watchdogs.null import NullWatchdog

    from sergeant.config import WorkerConfig
    from sergeant.worker import Worker

    broker = MemoryBroker()
    started = threading.Event()

    class Slow(Worker):
        def work(self, task: Any) -> None:
            started.set()
            time.sleep(1.2)

    worker = Slow(
        config=WorkerConfig(name="slow", lease=0.3, wait=0.0, max_tasks_per_run=1),
        broker=broker,
        codec=PickleCodec(),
        executor=SerialExecutor(),
        watchdog=NullWatchdog(),
    )
    worker.push_task({})
    thread = threading.Thread(target=worker.run)
    thread.start()
    started.wait(5)

    stolen = []
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        stolen += broker.reserve("slow", owner="thief", count=1, lease=5)
        time.sleep(0.05)
    thread.join(5)

    assert stolen == []
    assert broker.lengths("slow") == QueueLengths()


def test_reject_dead_letters_without_retrying(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """A task the work rejects goes to dead letters with the reason, no retry."""
    worker = _worker(
        make_worker,
        lambda w, t: w.reject(t, "unknown kwarg 'colour'"),
        max_retries=5,
        max_tasks_per_run=1,
    )
    worker.push_task({"colour": "red"})

    worker.run()

    [dead] = broker.dead_letters("jobs")
    assert dead.reason == "rejected: unknown kwarg 'colour'"
    assert "on_retry" not in worker.names()
    assert isinstance(worker.events[-1], lc.Rejected)
    assert broker.lengths("jobs") == QueueLengths(dead=1)


def test_oversized_payloads_are_refused_and_dead_lettered(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """Pushing over max_payload_bytes raises; a stored oversized one is dead."""
    from sergeant.errors import PayloadTooLarge

    worker = _worker(
        make_worker, lambda w, t: None, max_payload_bytes=500, max_tasks_per_run=1
    )
    with pytest.raises(PayloadTooLarge, match="max_payload_bytes"):
        worker.push_task({"blob": "x" * 1000})
    broker.push("jobs", [b"y" * 600])
    worker.push_task({"n": 1})

    worker.run()

    [dead] = broker.dead_letters("jobs")
    assert dead.reason == (
        "undecodable payload: payload of 600 bytes exceeds max_payload_bytes (500)"
    )
    assert worker.names().count("work") == 1


def test_a_retry_of_a_task_pushed_at_the_size_limit_still_runs(
    make_worker: WorkerFactory, broker: MemoryBroker, clock: FakeClock
) -> None:
    """A retry carries an eta and a higher attempt, a few bytes more than the task
    the producer accepted at ``max_payload_bytes``: it must run, not be
    dead-lettered as oversized."""
    from sergeant.config import RetryPolicy

    worker = _worker(
        make_worker,
        lambda w, t: w.retry(t),
        max_retries=3,
        retry=RetryPolicy(base_delay=1.0, jitter=0.0),
        max_payload_bytes=10_000,
    )
    task = worker.push_task({"blob": "a" * 100})
    worker.max_payload_bytes = len(worker.codec.encode(task))  # exactly at it

    for _ in range(6):
        worker.step()
        clock.advance(100)

    assert worker.names().count("work") == 4
    [dead] = broker.dead_letters("jobs")
    assert dead.reason == "max retries (3) exhausted"


def test_starvation_counts_from_the_end_of_the_last_batch(
    make_worker: WorkerFactory, monotonic: FakeClock
) -> None:
    """Time spent running a task, or in ``initialize``, is not time with no task."""
    from sergeant.config import Starvation

    class Slow(Recorder):
        def initialize(self) -> None:
            super().initialize()
            monotonic.advance(15)  # a slow start

    def long_task(w: Any, t: Any) -> None:
        monotonic.advance(15)
        if t.kwargs["n"] == 2:
            w.request_stop()

    worker = make_worker(
        type("W", (Slow,), {"behaviour": staticmethod(long_task)}),
        starvation=Starvation(time_with_no_tasks=10),
    )
    assert isinstance(worker, Recorder)
    worker.push_tasks([{"n": 1}])
    worker.step()  # a 15 s task
    worker.step()  # the queue is empty right after it: not starving yet
    worker.push_tasks([{"n": 2}])

    worker.run()  # initialize takes 15 s, then the task: no starvation either

    assert "on_starvation" not in worker.names()


class _BatchRecorder(Recorder):
    def pre_work(self, task: Any) -> None:
        self.calls.append(("pre_work", task.kwargs["n"]))
        if task.kwargs["n"] == 1:
            raise ValueError("no connection for 1")

    def post_work(self, task: Any, outcome: Any) -> None:
        self.calls.append(("post_work", task.kwargs["n"], type(outcome).__name__))

    def work_batch(self, tasks: Any) -> list[Any]:
        self.calls.append(("work_batch", [t.kwargs["n"] for t in tasks]))
        return ["ok" for _ in tasks]


def test_work_batch_runs_pre_and_post_work_around_each_task(
    make_worker: WorkerFactory,
) -> None:
    """As with ``work``: pre_work before each task (a raise fails that task, which
    the batch then leaves out), post_work after each with its outcome."""
    worker = make_worker(_BatchRecorder, tasks_per_transaction=3)
    assert isinstance(worker, Recorder)
    worker.push_tasks([{"n": 0}, {"n": 1}, {"n": 2}])

    worker.step()

    assert ("work_batch", [0, 2]) in worker.calls
    assert [c for c in worker.calls if c[0] in ("pre_work", "post_work")] == [
        ("pre_work", 0),
        ("pre_work", 1),
        ("pre_work", 2),
        ("post_work", 0, "Returned"),
        ("post_work", 1, "Raised"),
        ("post_work", 2, "Returned"),
    ]
    assert ("on_failure", {"n": 1}, "ValueError('no connection for 1')") in (
        worker.calls
    )


def test_work_batch_does_not_start_after_a_stop_request(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """A stop requested before the batch starts releases the batch whole, as the
    tasks of a ``work`` batch that have not started are."""
    worker = make_worker(_BatchRecorder, tasks_per_transaction=3)
    assert isinstance(worker, Recorder)
    worker.push_tasks([{"n": 0}, {"n": 2}, {"n": 3}])
    worker.request_stop()

    worker.step()

    assert "work_batch" not in worker.names()
    assert broker.lengths("jobs").ready == 3


def test_work_batch_is_armed_with_the_smallest_limit_of_its_tasks(
    make_worker: WorkerFactory,
) -> None:
    """A task's own timeout applies under ``work_batch`` too: the batch's one arm
    takes the smallest limit among its tasks (the config's for tasks without)."""
    from sergeant.config import Timeouts

    class Batcher(Recorder):
        def work_batch(self, tasks: Any) -> list[Any]:
            return [None for _ in tasks]

    untimed = make_worker(Batcher, tasks_per_transaction=3)
    timed = make_worker(
        Batcher,
        tasks_per_transaction=3,
        timeouts=Timeouts(timeout=5.0, grace_period=2.0),
    )
    for worker in (untimed, timed):
        worker.watchdog = _RecordingWatchdog()
    untimed.push_tasks([{"n": 0}, {"n": 1}])
    untimed.push_task({"n": 2}, timeout=0.5)
    untimed.step()
    timed.push_tasks([{"n": 0}])
    timed.step()

    assert untimed.watchdog.armed == [(0.5, 10.0)]
    assert timed.watchdog.armed == [(5.0, 2.0)]


def test_a_stop_asked_by_pre_work_releases_the_tasks_not_prepared(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """As under ``work``, where the tasks after the one that asked are released:
    the batch runs only what was prepared before the stop."""

    class Stopper(_BatchRecorder):
        def pre_work(self, task: Any) -> None:
            self.calls.append(("pre_work", task.kwargs["n"]))
            self.request_stop()

    worker = make_worker(Stopper, tasks_per_transaction=3)
    assert isinstance(worker, Recorder)
    worker.push_tasks([{"n": 0}, {"n": 2}, {"n": 3}])

    worker.step()

    assert ("work_batch", [0]) in worker.calls
    assert worker.names().count("pre_work") == 1
    assert [c for c in worker.calls if c[0] == "post_work"] == [
        ("post_work", 0, "Returned")
    ]
    assert broker.lengths("jobs").ready == 2


def test_work_batch_runs_each_pre_work_under_the_watchdog(
    make_worker: WorkerFactory,
) -> None:
    """A hanging ``pre_work`` must not hold the worker: each runs under an arm with
    its task's limit, as it does under ``work``; then the batch gets its own."""
    from sergeant.config import Timeouts

    worker = make_worker(
        _BatchRecorder,
        tasks_per_transaction=3,
        timeouts=Timeouts(timeout=5.0, grace_period=2.0),
    )
    worker.watchdog = _RecordingWatchdog()
    worker.push_tasks([{"n": 0}, {"n": 2}])
    worker.push_task({"n": 3}, timeout=0.5)

    worker.step()

    assert worker.watchdog.armed == [(5.0, 2.0), (5.0, 2.0), (0.5, 2.0), (0.5, 2.0)]
    assert worker.watchdog.disarmed == 4


def test_a_watchdog_with_start_is_started_before_the_first_reserve(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """``run()`` starts a watchdog that has ``start()`` once, before any task is
    taken (the first task does not wait for a killer process to start)."""
    events: list[str] = []

    class Startable(_RecordingWatchdog):
        def start(self) -> None:
            events.append(f"start, ready={broker.lengths('jobs').ready}")

        def arm(self, timeout: float, *, grace: float) -> object:
            events.append("arm")
            return super().arm(timeout, grace=grace)

    worker = _worker(make_worker, lambda w, t: None, max_tasks_per_run=2)
    worker.watchdog = Startable()
    worker.push_tasks([{"n": 1}, {"n": 2}])

    worker.run()

    assert events[0] == "start, ready=2"  # before the first reserve
    assert events.count("start, ready=2") == 1
    assert worker.names().count("work") == 2


def test_a_watchdog_that_cannot_start_fails_run_before_taking_a_task(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """A killer that cannot start is a WatchdogError from ``run()`` at once: no
    task reserved, none run, none counted as delivered."""
    from sergeant.errors import WatchdogError

    class Broken(_RecordingWatchdog):
        def start(self) -> None:
            raise WatchdogError("the killer process cannot start")

    worker = _worker(make_worker, lambda w, t: None, max_tasks_per_run=2)
    worker.watchdog = Broken()
    worker.push_tasks([{"n": 1}])

    with pytest.raises(WatchdogError, match="cannot start"):
        worker.run()

    assert "work" not in worker.names()
    assert broker.lengths("jobs") == QueueLengths(ready=1)
    (delivery,) = broker.reserve("jobs", owner="check", lease=30.0)
    assert delivery.deliveries == 1  # never handed out before


def test_a_watchdog_that_cannot_arm_releases_the_task_and_ends_run(
    make_worker: WorkerFactory, broker: MemoryBroker
) -> None:
    """Run unwatched, a task would escape its limit; failed, it would be lost for
    the worker's fault. So it goes back to the queue, and ``run()`` raises."""
    from sergeant.config import Timeouts
    from sergeant.errors import WatchdogError

    class Broken(_RecordingWatchdog):
        def arm(self, timeout: float, *, grace: float) -> object:
            raise WatchdogError("the killer process cannot start")

    worker = _worker(
        make_worker, lambda w, t: None, timeouts=Timeouts(timeout=5.0),
        tasks_per_transaction=2, max_tasks_per_run=2,
    )  # fmt: skip
    worker.watchdog = Broken()
    worker.push_tasks([{"n": 1}, {"n": 2}])

    with pytest.raises(WatchdogError, match="cannot start"):
        worker.run()

    assert "work" not in worker.names()
    assert "on_failure" not in worker.names()
    assert broker.lengths("jobs") == QueueLengths(ready=2)
