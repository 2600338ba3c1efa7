"""The garbage-collector pause and freeze around a batch: on and off as promised.

Both are process-wide, so what matters is that they never outlive the batch:
tasks run with the collector on, a collector the user turned off stays off,
objects the process froze itself stay frozen, and the garbage that tasks make is
still collected young.
"""

from __future__ import annotations

import contextlib
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from sergeant.adapters.codecs import PickleCodec
from sergeant.adapters.memory import MemoryBroker

from sergeant._gc_pause import FREEZE_AT, GcPause
from sergeant.errors import BrokerError
from sergeant.producer import Producer
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


@pytest.fixture
def _nothing_frozen() -> Iterator[None]:
    """The tests below count frozen objects: none before, none left after."""
    assert gc.get_freeze_count() == 0
    yield
    gc.unfreeze()


class _Cycle:
    """An object that refers to itself: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.mark.usefixtures("_nothing_frozen")
class TestFreeze:
    def test_a_paused_freeze_sets_objects_aside_until_thawed(self) -> None:
        pause = GcPause(may_freeze=True)

        pause.start()
        pause.freeze()
        pause.end()
        during = gc.get_freeze_count()
        pause.thaw()

        assert during > 0
        assert gc.get_freeze_count() == 0

    def test_no_freeze_unless_paused_and_allowed(self) -> None:
        """Unpaused (the user turned the collector off) or not allowed: nothing
        is frozen."""
        gc.disable()
        pause = GcPause(may_freeze=True)

        pause.start()  # the collector is off already: not a pause of ours
        pause.freeze()
        frozen_unpaused = gc.get_freeze_count()
        gc.enable()
        pause = GcPause(may_freeze=False)
        pause.start()
        pause.freeze()
        frozen_not_allowed = gc.get_freeze_count()
        pause.end()

        assert (frozen_unpaused, frozen_not_allowed) == (0, 0)

    def test_objects_frozen_already_are_left_frozen_for_good(self) -> None:
        """Someone else's frozen objects: no freeze (a thaw would put them back),
        and the pause stops trying."""
        gc.freeze()
        before = gc.get_freeze_count()
        pause = GcPause(may_freeze=True)

        pause.start()
        pause.freeze()
        pause.end()
        pause.thaw()

        assert gc.get_freeze_count() == before
        assert not pause.may_freeze

    def test_thaw_collects_the_garbage_made_while_frozen(self) -> None:
        """Cycles made while a batch is frozen are young: thaw's collection frees
        them instead of leaving them to a full collection."""
        pause = GcPause(may_freeze=True)
        pause.start()
        pause.freeze()
        pause.end()
        gc.disable()  # no automatic collection may free it first
        cycle = weakref.ref(_Cycle())

        pause.thaw()

        assert cycle() is None


def _frozen_counter(seen: list[tuple[int, bool]]) -> Any:
    def work(worker: Any, task: Any) -> None:
        seen.append((gc.get_freeze_count(), gc.isenabled()))

    return type("W", (Recorder,), {"behaviour": staticmethod(work)})


def _run(make_worker: WorkerFactory, cls: Any, size: int) -> None:
    """A worker of ``cls`` runs ``size`` tasks taken in one batch."""
    worker = make_worker(cls, tasks_per_transaction=size, max_tasks_per_run=size)
    worker.push_tasks([{"n": i} for i in range(size)])
    worker.run()


@pytest.mark.usefixtures("_nothing_frozen")
class TestWorkerFreezesLargeBatches:
    def test_a_large_batch_runs_frozen_with_the_collector_on(
        self, make_worker: WorkerFactory
    ) -> None:
        seen: list[tuple[int, bool]] = []
        _run(make_worker, _frozen_counter(seen), FREEZE_AT)

        assert len(seen) == FREEZE_AT
        assert all(frozen > 0 and enabled for frozen, enabled in seen)
        assert gc.get_freeze_count() == 0

    def test_a_small_batch_is_not_frozen(self, make_worker: WorkerFactory) -> None:
        seen: list[tuple[int, bool]] = []
        _run(make_worker, _frozen_counter(seen), 100)

        assert seen == [(0, True)] * 100

    def test_objects_the_process_froze_stay_frozen(
        self, make_worker: WorkerFactory
    ) -> None:
        """A process that froze objects itself keeps them frozen: the worker
        freezes nothing (its unfreeze would put the process's objects back)."""
        gc.freeze()
        before = gc.get_freeze_count()
        seen: list[tuple[int, bool]] = []
        _run(make_worker, _frozen_counter(seen), FREEZE_AT)

        assert gc.get_freeze_count() >= before
        assert {frozen >= before for frozen, _ in seen} == {True}

    def test_garbage_the_tasks_make_is_collected_by_the_end_of_the_batch(
        self, make_worker: WorkerFactory
    ) -> None:
        """Cycles the tasks leave are freed by the ordinary young collections or
        by the one that thaws the batch, not left to a full collection."""
        made: list[weakref.ref[_Cycle]] = []

        def work(worker: Any, task: Any) -> None:
            made.append(weakref.ref(_Cycle()))

        cls = type("W", (Recorder,), {"behaviour": staticmethod(work)})

        _run(make_worker, cls, FREEZE_AT)

        assert [ref() for ref in made] == [None] * FREEZE_AT

    def test_a_large_push_from_a_task_leaves_its_batch_frozen(
        self, make_worker: WorkerFactory
    ) -> None:
        """A task pushing 256+ tasks while its batch is frozen must not thaw the
        batch (the push's own thaw would)."""
        seen: list[int] = []

        def work(worker: Any, task: Any) -> None:
            if task.kwargs.get("n") == 0:
                worker.push_tasks([{"follow-up": i} for i in range(FREEZE_AT)])
            seen.append(gc.get_freeze_count())

        cls = type("W", (Recorder,), {"behaviour": staticmethod(work)})

        _run(make_worker, cls, FREEZE_AT)

        assert len(seen) == FREEZE_AT
        assert all(frozen > 0 for frozen in seen)

    def test_a_failing_batch_is_thawed(self, make_worker: WorkerFactory) -> None:
        """A BaseException out of a task (a Ctrl-C) still puts the batch back."""

        def work(worker: Any, task: Any) -> None:
            raise KeyboardInterrupt

        cls = type("W", (Recorder,), {"behaviour": staticmethod(work)})

        with pytest.raises(KeyboardInterrupt):
            _run(make_worker, cls, FREEZE_AT)

        assert gc.get_freeze_count() == 0
        assert gc.isenabled()


class _FreezeWatchingBroker(MemoryBroker):
    """Records, at each push, how many objects are frozen; may fail the push."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.frozen_at_push: list[int] = []
        self.fail = fail

    def push(self, queue: str, payloads: Any, **kwargs: Any) -> None:
        self.frozen_at_push.append(gc.get_freeze_count())
        if self.fail:
            raise BrokerError("refused")
        super().push(queue, payloads, **kwargs)


@pytest.mark.usefixtures("_nothing_frozen")
class TestProducerFreezesLargePushes:
    @pytest.mark.parametrize("fail", [False, True])
    def test_a_large_push_is_frozen_until_pushed(self, fail: bool) -> None:
        broker = _FreezeWatchingBroker(fail=fail)
        producer = Producer(broker=broker, codec=PickleCodec(), queue="q")

        with contextlib.suppress(BrokerError):
            producer.push_tasks([{"n": i} for i in range(FREEZE_AT)])

        assert broker.frozen_at_push[0] > 0
        assert (gc.get_freeze_count(), gc.isenabled()) == (0, True)
        assert len(broker.frozen_at_push) == 1

    def test_a_process_that_froze_objects_after_the_producer_keeps_them(
        self,
    ) -> None:
        """The classic pre-fork ``gc.freeze()`` after the producer was made: a
        large push neither freezes nor puts the process's objects back."""
        broker = _FreezeWatchingBroker()
        producer = Producer(broker=broker, codec=PickleCodec(), queue="q")
        gc.freeze()
        before = gc.get_freeze_count()

        producer.push_tasks([{"n": i} for i in range(FREEZE_AT)])
        producer.push_tasks([{"n": i} for i in range(FREEZE_AT)])

        assert broker.frozen_at_push == [before, before]
        assert gc.get_freeze_count() == before

    def test_a_small_push_is_not(self) -> None:
        broker = _FreezeWatchingBroker()
        producer = Producer(broker=broker, codec=PickleCodec(), queue="q")

        producer.push_tasks([{"n": i} for i in range(FREEZE_AT - 1)])

        assert broker.frozen_at_push == [0]
