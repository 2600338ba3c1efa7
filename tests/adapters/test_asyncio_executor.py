"""AsyncioExecutor: coroutine jobs on one loop, and ``async def work`` in a worker.

The contract suite runs it with synchronous jobs; these tests run coroutines.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.asyncio import AsyncioExecutor
from sergeant.adapters.memory import MemoryBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import Timeouts, WorkerConfig
from sergeant.errors import ConfigError
from sergeant.outcome import Outcome, Raised, Returned
from sergeant.protocols import QueueLengths
from sergeant.supervision import StopReason
from sergeant.task import Task
from sergeant.worker import Worker

pytestmark = pytest.mark.timeout(30)
SLACK = 0.5


def _tasks(count: int, **extra: Any) -> list[Task]:
    return [Task(kwargs={"n": n, **extra}) for n in range(count)]


@pytest.fixture
def loop_pool() -> Iterator[AsyncioExecutor]:
    executor = AsyncioExecutor(concurrency=3)
    yield executor
    executor.shutdown()


class TestCoroutineJobs:
    def test_outcomes_come_back_in_input_order(
        self, loop_pool: AsyncioExecutor
    ) -> None:
        """Coroutines that finish in reverse order still report in input order."""

        async def job(task: Task) -> Outcome:
            await asyncio.sleep(0.005 * (8 - task.kwargs["n"]))
            return Returned(task.kwargs["n"])

        outcomes = loop_pool.run(job, _tasks(8))

        assert outcomes == [Returned(n) for n in range(8)]

    def test_exactly_concurrency_coroutines_run_at_once(
        self, loop_pool: AsyncioExecutor
    ) -> None:
        """A batch of 2N+1 coroutines runs exactly N at once, never more."""
        running = peak = 0

        async def job(task: Task) -> Outcome:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.05)
            running -= 1
            return Returned(task.kwargs["n"])

        outcomes = loop_pool.run(job, _tasks(7))

        assert peak == 3
        assert outcomes == [Returned(n) for n in range(7)]

    def test_an_escaping_exception_becomes_raised(
        self, loop_pool: AsyncioExecutor
    ) -> None:
        """An exception escaping one coroutine is Raised for it; the others run."""
        boom = ValueError("boom")

        async def job(task: Task) -> Outcome:
            if task.kwargs["n"] == 1:
                raise boom
            return Returned(task.kwargs["n"])

        outcomes = loop_pool.run(job, _tasks(3))

        assert outcomes == [Returned(0), Raised(boom), Returned(2)]

    def test_system_exit_is_raised_after_the_batch(
        self, loop_pool: AsyncioExecutor
    ) -> None:
        """A SystemExit escaping a coroutine is re-raised by run(); the loop goes on."""

        async def job(task: Task) -> Outcome:
            if task.kwargs["n"] == 0:
                raise SystemExit(2)
            return Returned(task.kwargs["n"])

        with pytest.raises(SystemExit):
            loop_pool.run(job, _tasks(2))

        assert loop_pool.run(job, _tasks(2)[1:]) == [Returned(1)]

    def test_all_coroutines_share_one_loop_thread(
        self, loop_pool: AsyncioExecutor
    ) -> None:
        """Every coroutine of every batch runs on the same thread, not the caller's."""

        async def job(task: Task) -> Outcome:
            return Returned(threading.get_ident())

        outcomes = [o for _ in range(5) for o in loop_pool.run(job, _tasks(4))]

        idents = {o.value for o in outcomes if isinstance(o, Returned)}
        assert len(idents) == 1
        assert threading.get_ident() not in idents

    def test_shutdown_stops_the_loop_thread(self) -> None:
        """After shutdown() the loop's thread has ended and run() raises."""
        executor = AsyncioExecutor(concurrency=2, name="loop-under-test")

        async def job(task: Task) -> Outcome:
            return Returned(None)

        executor.run(job, _tasks(1))
        executor.shutdown()

        assert not [t for t in threading.enumerate() if t.name == "loop-under-test"]
        with pytest.raises(RuntimeError):
            executor.run(job, _tasks(1))

    def test_shutdown_from_a_job_lets_its_batch_finish(self) -> None:
        """A job that shuts the executor down while a sibling still awaits: the
        batch completes (run() returns every outcome), then the loop stops."""
        executor = AsyncioExecutor(concurrency=2, name="loop-shut-from-inside")

        async def job(task: Task) -> Outcome:
            if task.kwargs["n"] == 0:
                executor.shutdown()
                return Returned("shut")
            await asyncio.sleep(0.2)
            return Returned("slept")

        outcomes: list[Outcome] = []
        runner = threading.Thread(
            target=lambda: outcomes.extend(executor.run(job, _tasks(2))), daemon=True
        )
        runner.start()
        runner.join(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and [
            t for t in threading.enumerate() if t.name == "loop-shut-from-inside"
        ]:
            time.sleep(0.01)

        assert not runner.is_alive()
        assert outcomes == [Returned("shut"), Returned("slept")]
        assert not [
            t for t in threading.enumerate() if t.name == "loop-shut-from-inside"
        ]

    def test_run_coroutine_runs_on_the_loop_and_returns_its_result(
        self, loop_pool: AsyncioExecutor
    ) -> None:
        """run_coroutine() awaits a coroutine on the executor's loop for the caller."""

        async def where() -> int:
            await asyncio.sleep(0)
            return threading.get_ident()

        ident = loop_pool.run_coroutine(where())

        assert ident != threading.get_ident()

    @pytest.mark.parametrize("concurrency", [0, -2, 2.5, "8", False])
    def test_rejects_a_bad_concurrency(self, concurrency: object) -> None:
        """A concurrency that is not an int >= 1 raises ConfigError naming it."""
        with pytest.raises(ConfigError, match=r"AsyncioExecutor\.concurrency"):
            AsyncioExecutor(concurrency=concurrency)  # type: ignore[arg-type]


# -- async def work in a real worker ------------------------------------------------


class _AsyncWorker(Worker):
    """An async worker driven by task kwargs; handlers record what they saw."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[tuple[str, int]] = []

    async def work(self, task: Task) -> Any:
        action = task.kwargs.get("do")
        await asyncio.sleep(task.kwargs.get("sleep", 0))
        if action == "fail":
            raise TimeoutError("the work's own timeout")  # not the deadline
        if action == "stop":
            return self.stop()
        if action == "block":
            time.sleep(task.kwargs["block"])  # blocks the loop past the deadline
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await asyncio.sleep(0.1)  # a short cleanup, well within the grace
                raise
        if action == "cleanup_fails":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise RuntimeError("rollback failed during cleanup") from None
        if action == "swallow_then_stop":
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)
            return self.respawn()
        if action == "swallow":
            for _ in range(task.kwargs["swallows"]):
                # Swallows the deadline's (then the escalation's) cancellation.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(30)
            if task.kwargs["swallows"] == 1:
                await asyncio.sleep(30)  # the escalation's cancel ends this one
            return "late"
        return task.kwargs["n"]

    def pre_work(self, task: Task) -> None:
        self.seen.append(("pre_work", task.kwargs["n"]))

    def post_work(self, task: Task, outcome: Outcome) -> None:
        self.seen.append((f"post_work:{type(outcome).__name__}", task.kwargs["n"]))

    def on_success(self, task: Task, returned_value: Any) -> None:
        self.seen.append(("success", returned_value))

    def on_failure(self, task: Task, exception: BaseException) -> None:
        self.seen.append((f"failure:{type(exception).__name__}", task.kwargs["n"]))

    def on_timeout(self, task: Task) -> None:
        self.seen.append(("timeout", task.kwargs["n"]))


@pytest.fixture
def make_async_worker() -> Iterator[Callable[..., _AsyncWorker]]:
    made: list[_AsyncWorker] = []

    def make(concurrency: int = 50, **config: Any) -> _AsyncWorker:
        worker = _AsyncWorker(
            broker=MemoryBroker(),
            codec=PickleCodec(),
            executor=AsyncioExecutor(concurrency=concurrency),
            watchdog=NullWatchdog(),
            config=WorkerConfig(name="jobs", wait=0.0, **config),
        )
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.executor.shutdown()


class TestAsyncWork:
    def test_a_batch_of_waiting_tasks_runs_concurrently(
        self, make_async_worker: Callable[..., _AsyncWorker]
    ) -> None:
        """50 tasks that each await 0.3 s finish together, well under 50 x 0.3 s."""
        worker = make_async_worker(tasks_per_transaction=50)
        worker.push_tasks([{"n": n, "sleep": 0.3} for n in range(50)])
        start = time.monotonic()

        worker.step()
        elapsed = time.monotonic() - start

        assert elapsed < 0.3 + 1.5
        assert sorted(v for k, v in worker.seen if k == "success") == list(range(50))

    def test_hooks_run_around_the_awaited_work(
        self, make_async_worker: Callable[..., _AsyncWorker]
    ) -> None:
        """pre_work, then the awaited result, then post_work with the real outcome."""
        worker = make_async_worker()
        worker.push_task({"n": 7})

        worker.step()

        assert worker.seen == [("pre_work", 7), ("post_work:Returned", 7),
                               ("success", 7)]  # fmt: skip

    def test_the_deadline_cancels_the_coroutine_and_on_timeout_runs_once(
        self, make_async_worker: Callable[..., _AsyncWorker]
    ) -> None:
        """A coroutine awaiting past its 0.2 s timeout is cancelled: Expired, once."""
        worker = make_async_worker(tasks_per_transaction=2)
        worker.push_tasks([{"n": 1, "sleep": 30}, {"n": 2}], timeout=0.2)
        start = time.monotonic()

        worker.step()
        elapsed = time.monotonic() - start

        assert 0.2 <= elapsed < 0.2 + SLACK
        assert [s for s in worker.seen if s[0] in ("timeout", "success")] == [
            ("timeout", 1),
            ("success", 2),
        ]
        assert ("post_work:Expired", 1) in worker.seen

    def test_a_timeout_error_raised_by_the_work_is_a_failure(
        self, make_async_worker: Callable[..., _AsyncWorker]
    ) -> None:
        """The work's own TimeoutError is a failure, not the deadline."""
        worker = make_async_worker(timeouts=Timeouts(timeout=5.0))
        worker.push_task({"n": 3, "do": "fail"})

        worker.step()

        assert ("failure:TimeoutError", 3) in worker.seen
        assert not [s for s in worker.seen if s[0] == "timeout"]

    def test_a_coroutine_whose_cleanup_fails_when_cancelled_timed_out(
        self, make_async_worker: Callable[..., _AsyncWorker]
    ) -> None:
        """Cancelled at its deadline, it raised another error from its cleanup:
        stopped at its deadline all the same, so on_timeout, not on_failure."""
        worker = make_async_worker(timeouts=Timeouts(timeout=0.1, grace_period=1.0))
        worker.push_task({"n": 6, "do": "cleanup_fails"})

        worker.step()

        assert ("timeout", 6) in worker.seen
        assert not [s for s in worker.seen if s[0].startswith("failure")]

    def test_a_respawn_returned_after_the_deadline_still_stops_the_worker(
        self, make_async_worker: Callable[..., _AsyncWorker]
    ) -> None:
        """It swallowed the cancellation and returned respawn(): timed out, and
        the worker stops to be respawned, as it asked."""
        worker = make_async_worker(timeouts=Timeouts(timeout=0.1, grace_period=1.0))
        worker.push_task({"n": 7, "do": "swallow_then_stop"})

        worker.step()

        assert ("timeout", 7) in worker.seen
        assert worker.stopping

    @pytest.mark.parametrize("swallows", [1, 2])
    def test_a_coroutine_swallowing_the_cancellation_is_cancelled_after_the_grace(
        self, make_async_worker: Callable[..., _AsyncWorker], swallows: int
    ) -> None:
        """A swallowed cancellation is repeated at timeout + grace; it is Expired."""
        worker = make_async_worker(timeouts=Timeouts(timeout=0.2, grace_period=0.3))
        worker.push_task({"n": 4, "do": "swallow", "swallows": swallows})
        start = time.monotonic()

        worker.step()
        elapsed = time.monotonic() - start

        assert 0.5 <= elapsed < 0.5 + SLACK
        assert [s for s in worker.seen if s[0] == "timeout"] == [("timeout", 4)]

    def test_a_coroutine_that_blocked_the_loop_still_gets_its_grace(
        self,
        make_async_worker: Callable[..., _AsyncWorker],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A coroutine blocking the loop past timeout + grace is cancelled late,
        at its next await; the grace counts from then, so its short cleanup is
        not escalated (no ERROR, no second cancellation): it is Expired."""
        worker = make_async_worker(timeouts=Timeouts(timeout=0.1, grace_period=0.5))
        worker.push_task({"n": 5, "do": "block", "block": 0.8})

        with caplog.at_level(logging.ERROR):
            worker.step()

        assert [s for s in worker.seen if s[0] == "timeout"] == [("timeout", 5)]
        assert ("post_work:Expired", 5) in worker.seen
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    def test_stop_returned_by_async_work_stops_the_worker(
        self, make_async_worker: Callable[..., _AsyncWorker]
    ) -> None:
        """return self.stop() from async work ends run() after that task."""
        worker = make_async_worker(tasks_per_transaction=1)
        worker.push_tasks([{"n": 0, "do": "stop"}, {"n": 1}])

        reason = worker.run()

        assert reason is StopReason.STOPPED
        assert worker.broker.lengths("jobs") == QueueLengths(ready=1)
