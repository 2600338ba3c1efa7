"""The Executor contract: every executor adapter passes these unchanged."""

from __future__ import annotations

import threading
import time
from typing import Any

from sergeant.outcome import Outcome, Raised, Returned
from sergeant.protocols import Executor
from sergeant.task import Task


def _tasks(count: int) -> list[Task]:
    return [Task(kwargs={"n": n}) for n in range(count)]


def _echo(task: Task) -> Outcome:
    return Returned(task.kwargs["n"])


class _Gauge:
    """Counts jobs running at once; each job waits (briefly) for ``target`` peers."""

    def __init__(self, target: int, patience: float = 2.0) -> None:
        self.target = target
        self.patience = patience
        self.running = 0
        self.peak = 0
        self.cond = threading.Condition()

    def job(self, task: Task) -> Outcome:
        with self.cond:
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.cond.notify_all()
            # Wait until `target` jobs overlap (or give up): an executor that runs
            # fewer at once shows a lower peak, one that runs more a higher one.
            self.cond.wait_for(lambda: self.running >= self.target, self.patience)
        time.sleep(0.01)
        with self.cond:
            self.running -= 1
        return Returned(task.kwargs["n"])


def _wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class TestExecutorContract:
    def test_is_an_executor(self, executor: Any) -> None:
        """The adapter satisfies the Executor protocol."""
        assert isinstance(executor, Executor)

    def test_outcomes_come_back_in_input_order(self, executor: Any) -> None:
        """Outcomes are returned in the order of the tasks, whatever order jobs end."""
        tasks = _tasks(12)

        def job(task: Task) -> Outcome:
            time.sleep(0.002 * (12 - task.kwargs["n"]))  # later tasks end sooner
            return Returned(task.kwargs["n"])

        outcomes = executor.run(job, tasks)

        assert outcomes == [Returned(n) for n in range(12)]

    def test_an_escaping_exception_becomes_raised_and_others_still_run(
        self, executor: Any
    ) -> None:
        """An exception escaping one job becomes Raised for it; the others still run."""
        tasks = _tasks(6)
        boom = ValueError("boom")

        def job(task: Task) -> Outcome:
            if task.kwargs["n"] == 2:
                raise boom
            return Returned(task.kwargs["n"])

        outcomes = executor.run(job, tasks)

        assert outcomes[2] == Raised(boom)
        assert outcomes[:2] + outcomes[3:] == [Returned(n) for n in (0, 1, 3, 4, 5)]

    def test_outcomes_returned_by_jobs_are_passed_through(self, executor: Any) -> None:
        """Whatever Outcome a job returns, even a Raised, is handed back unchanged."""
        error = KeyError("k")
        tasks = _tasks(2)

        outcomes = executor.run(
            lambda t: Raised(error) if t.kwargs["n"] else Returned("v"), tasks
        )

        assert outcomes == [Returned("v"), Raised(error)]

    def test_never_more_jobs_at_once_than_the_concurrency(self, executor: Any) -> None:
        """A batch bigger than the concurrency runs exactly that many jobs at once."""
        concurrency = executor.concurrency
        gauge = _Gauge(target=concurrency)

        outcomes = executor.run(gauge.job, _tasks(2 * concurrency + 1))

        assert gauge.peak == concurrency
        assert outcomes == [Returned(n) for n in range(2 * concurrency + 1)]

    def test_a_batch_of_two_runs_min_of_two_and_concurrency_at_once(
        self, executor: Any
    ) -> None:
        """A batch of two runs both jobs at once unless the concurrency is 1."""
        gauge = _Gauge(target=2, patience=0.2)

        executor.run(gauge.job, _tasks(2))

        assert gauge.peak == min(2, executor.concurrency)

    def test_concurrency_is_a_positive_int(self, executor: Any) -> None:
        """The concurrency level is an int of at least 1."""
        concurrency = executor.concurrency

        assert isinstance(concurrency, int)
        assert concurrency >= 1

    def test_an_empty_batch_returns_an_empty_list(self, executor: Any) -> None:
        """Running an empty batch calls nothing and returns []."""
        calls: list[Task] = []

        outcomes = executor.run(calls.append, [])

        assert outcomes == []
        assert calls == []

    def test_many_batches_in_a_row_reuse_the_same_threads(self, executor: Any) -> None:
        """Successive batches run on at most `concurrency` distinct threads in total."""
        seen: set[int] = set()

        def job(task: Task) -> Outcome:
            seen.add(threading.get_ident())
            return Returned(task.kwargs["n"])

        results = [executor.run(job, _tasks(8)) for _ in range(50)]

        assert all(r == [Returned(n) for n in range(8)] for r in results)
        assert 1 <= len(seen) <= executor.concurrency

    def test_shutdown_leaves_no_thread_behind(self, executor: Any) -> None:
        """After shutdown() no thread that ran a job is left, except the caller's."""
        before = threading.active_count()
        job_threads: set[threading.Thread] = set()

        def job(task: Task) -> Outcome:
            job_threads.add(threading.current_thread())
            return Returned(task.kwargs["n"])

        executor.run(job, _tasks(10))
        executor.shutdown()

        caller = threading.current_thread()
        assert _wait_for(lambda: threading.active_count() <= before, timeout=2.0)
        assert not [t for t in job_threads if t is not caller and t.is_alive()]
