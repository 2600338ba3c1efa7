"""The Executor contract: every executor adapter passes these unchanged.

Jobs may run in threads of this process or in other processes (``ProcessExecutor``
forks children, which inherit the job and send back a pickled copy of its outcome).
So the suite observes jobs only through what they *return*, never through this
process's memory: each job reports its own pid, thread and wall-clock interval, and
exceptions are compared by type and args, not identity (a copy is not the original).
Jobs are module-level functions, so they can be inherited or pickled alike.

Intervals use ``time.time()``: one clock for every process of the machine, which
``time.monotonic()`` only happens to be on some platforms. Jobs that must overlap
sleep 0.2 s, so a process pool's start-up (a fork each) cannot hide an overlap.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import psutil

from sergeant.outcome import Outcome, Raised, Returned
from sergeant.protocols import Executor
from sergeant.task import Task

OVERLAP = 0.2  # seconds a job sleeps when the test needs jobs to run side by side


class _Trace(NamedTuple):
    """Where and when one job ran, as the job itself reported it."""

    n: int
    pid: int
    thread: int
    start: float
    end: float


def _tasks(count: int, **extra: Any) -> list[Task]:
    return [Task(kwargs={"n": n, **extra}) for n in range(count)]


def _traced(task: Task) -> Outcome:
    """Sleep ``task.kwargs["sleep"]`` seconds; return where and when it ran."""
    start = time.time()
    time.sleep(task.kwargs.get("sleep", 0.0))
    # A plain tuple: it crosses a process boundary whatever module defines this.
    where = (task.kwargs["n"], os.getpid(), threading.get_ident(), start, time.time())
    return Returned(where)


def _traces(outcomes: Sequence[Outcome]) -> list[_Trace]:
    """The traces ``_traced`` jobs returned, in order (AssertionError if any failed)."""
    assert all(isinstance(o, Returned) for o in outcomes), outcomes
    return [_Trace(*o.value) for o in outcomes if isinstance(o, Returned)]


def _peak(traces: Sequence[_Trace]) -> int:
    """The most job intervals that overlap at one instant."""
    edges = sorted([(t.start, 1) for t in traces] + [(t.end, -1) for t in traces])
    running = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def _later_ends_sooner(task: Task) -> Outcome:
    time.sleep(0.002 * (12 - task.kwargs["n"]))
    return Returned(task.kwargs["n"])


def _two_raises(task: Task) -> Outcome:
    if task.kwargs["n"] == 2:
        raise ValueError("boom", 2)
    return Returned(task.kwargs["n"])


def _returns_an_outcome(task: Task) -> Outcome:
    return Raised(KeyError("k")) if task.kwargs["n"] else Returned("v")


def _touch(marker: Path, task: Task) -> Outcome:
    marker.touch()  # a file: visible whichever process ran the job
    return Returned(task.kwargs["n"])


def _is_raised(
    outcome: Outcome, kind: type[BaseException], args: tuple[Any, ...]
) -> bool:
    """``outcome`` is Raised with an exception of exactly ``kind`` and ``args``."""
    return (
        isinstance(outcome, Raised)
        and type(outcome.exception) is kind
        and outcome.exception.args == args
    )


def _living_children() -> set[int]:
    """Pids of this process's descendants that have not been reaped."""
    return {p.pid for p in psutil.Process().children(recursive=True)}


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

        outcomes = executor.run(_later_ends_sooner, tasks)

        assert outcomes == [Returned(n) for n in range(12)]

    def test_an_escaping_exception_becomes_raised_and_others_still_run(
        self, executor: Any
    ) -> None:
        """An exception escaping one job becomes Raised for it; the others still run."""
        tasks = _tasks(6)

        outcomes = executor.run(_two_raises, tasks)

        assert _is_raised(outcomes[2], ValueError, ("boom", 2))
        assert outcomes[:2] + outcomes[3:] == [Returned(n) for n in (0, 1, 3, 4, 5)]

    def test_outcomes_returned_by_jobs_are_passed_through(self, executor: Any) -> None:
        """Whatever Outcome a job returns, even a Raised, is handed back as it was."""
        tasks = _tasks(2)

        outcomes = executor.run(_returns_an_outcome, tasks)

        assert outcomes[0] == Returned("v")
        assert _is_raised(outcomes[1], KeyError, ("k",))

    def test_never_more_jobs_at_once_than_the_concurrency(self, executor: Any) -> None:
        """A batch bigger than the concurrency runs exactly that many jobs at once."""
        concurrency = executor.concurrency
        tasks = _tasks(2 * concurrency + 1, sleep=OVERLAP)

        traces = _traces(executor.run(_traced, tasks))

        assert [t.n for t in traces] == list(range(2 * concurrency + 1))
        assert _peak(traces) == concurrency

    def test_a_batch_of_two_runs_min_of_two_and_concurrency_at_once(
        self, executor: Any
    ) -> None:
        """A batch of two runs both jobs at once unless the concurrency is 1."""
        tasks = _tasks(2, sleep=OVERLAP)

        traces = _traces(executor.run(_traced, tasks))

        assert _peak(traces) == min(2, executor.concurrency)

    def test_concurrency_is_a_positive_int(self, executor: Any) -> None:
        """The concurrency level is an int of at least 1."""
        concurrency = executor.concurrency

        assert isinstance(concurrency, int)
        assert concurrency >= 1

    def test_an_empty_batch_returns_an_empty_list(
        self, executor: Any, tmp_path: Path
    ) -> None:
        """Running an empty batch calls nothing and returns []."""
        marker = tmp_path / "called"

        outcomes = executor.run(functools.partial(_touch, marker), [])

        assert outcomes == []
        assert not marker.exists()

    def test_many_batches_in_a_row_reuse_the_same_runners(self, executor: Any) -> None:
        """Successive batches run on at most `concurrency` (pid, thread) runners."""
        batches = [executor.run(_traced, _tasks(8)) for _ in range(50)]

        traces = [_traces(outcomes) for outcomes in batches]

        assert all([t.n for t in batch] == list(range(8)) for batch in traces)
        runners = {(t.pid, t.thread) for batch in traces for t in batch}
        assert 1 <= len(runners) <= executor.concurrency

    def test_shutdown_leaves_no_thread_or_process_behind(self, executor: Any) -> None:
        """After shutdown() no thread or child process that ran a job is left."""
        threads_before = threading.active_count()
        children_before = len(_living_children())
        traces = _traces(executor.run(_traced, _tasks(10)))

        executor.shutdown()

        here, caller = os.getpid(), threading.get_ident()
        job_threads = {t.thread for t in traces if t.pid == here} - {caller}
        job_children = {t.pid for t in traces} - {here}
        assert _wait_for(lambda: threading.active_count() <= threads_before, 2.0)
        assert _wait_for(lambda: len(_living_children()) <= children_before, 2.0)
        assert not job_threads & {t.ident for t in threading.enumerate()}
        assert not job_children & _living_children()
