"""ThreadExecutor: runs a batch on a persistent pool of N threads.

For I/O-bound tasks (HTTP calls, database queries): while one job waits on a socket
the GIL is free for the others. CPU-bound Python gains nothing from threads; use the
serial executor (or processes) for that.

Theory of operation. The pool threads are started on the first ``run()`` (so an
executor built before a ``fork`` works in the child) and live until ``shutdown()``.
A batch is handed out as one shared object, not one queue item per task: ``run()``
puts the batch on the inbox once per thread it needs (``min(N, len(tasks))``), each
woken thread claims task indices from the batch's shared counter until none are
left, and the thread that finishes last releases the caller. Per batch that costs a
few queue operations and one lock hand-off; per task, one counter step and one list
store, so the overhead stays small next to even trivial jobs.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import cast

from sergeant.errors import ConfigError, TaskTimedOut, WatchdogError
from sergeant.outcome import Outcome, Raised
from sergeant.protocols.executor import Job
from sergeant.task import Task

_log = logging.getLogger(__name__)


class _Batch:
    """One ``run()`` call's shared state, read and written by the pool threads."""

    __slots__ = (
        "claim",
        "done",
        "ended",
        "fatal",
        "finish",
        "halted",
        "job",
        "results",
        "tallies",
        "tasks",
        "workers",
    )

    def __init__(self, job: Job, tasks: Sequence[Task], workers: int) -> None:
        self.job = job
        self.tasks = tasks
        self.results: list[Outcome | None] = [None] * len(tasks)
        # ``next()`` on an itertools.count is one C call that never releases the
        # GIL, so concurrent callers each get a distinct number without a lock
        # (CPython's threading module numbers its threads the same way).
        self.claim: Callable[[], int] = itertools.count().__next__
        self.finish: Callable[[], int] = itertools.count(1).__next__
        # One item per pool thread done with the batch, added before ``finish``.
        self.ended: list[None] = []
        self.workers = workers
        self.tallies: list[int] = []  # jobs each drain stored (list.append is atomic)
        self.fatal: list[BaseException] = []
        self.halted = False  # set when the caller gave up waiting: start no more
        # A plain lock used as a one-shot event: the cheapest thing to block on.
        self.done = threading.Lock()
        self.done.acquire()

    def outcomes(self) -> list[Outcome]:
        """The results, once every worker has finished."""
        if sum(self.tallies) != len(self.tasks):
            # A stray asynchronous exception hit a pool thread between claiming a
            # task and running it (see _serve); report the task, never drop it.
            lost = WatchdogError("a stray TaskTimedOut hit the thread before the job")
            self.results = [Raised(lost) if r is None else r for r in self.results]
        return cast("list[Outcome]", self.results)


def _drain(batch: _Batch) -> None:
    """Run the batch's unclaimed tasks until none are left (one pool thread's share)."""
    tasks, results, job, claim = batch.tasks, batch.results, batch.job, batch.claim
    count = len(tasks)
    stored = 0
    try:
        while (index := claim()) < count and not batch.halted:
            try:
                results[index] = job(tasks[index])
            except (Exception, TaskTimedOut) as exc:
                results[index] = Raised(exc)
            except BaseException as exc:
                # SystemExit and friends ask the process to stop; a pool thread
                # cannot do that, so the caller re-raises it once the batch is over.
                results[index] = Raised(exc)
                batch.fatal.append(exc)
            stored += 1
    finally:
        batch.tallies.append(stored)


class ThreadExecutor:
    """Runs the jobs of a batch on a persistent pool of ``threads`` threads.

    Outcomes come back in input order; at most ``threads`` jobs run at once; an
    exception escaping a job becomes ``Raised`` for that task while the others run.
    A ``SystemExit`` or ``KeyboardInterrupt`` escaping a job is recorded as ``Raised``
    and then re-raised by ``run()`` after the whole batch has finished. One raised
    into ``run()`` itself while it waits (a Ctrl-C) starts no more jobs, waits for
    the running ones, then goes on (a second one goes on at once).

    The pool threads are daemon threads, so a forgotten ``shutdown()`` never keeps
    the interpreter alive; call it to wait for running jobs.

    Args:
        threads: size of the pool, at least 1.
        name: prefix of the pool threads' names (seen in thread dumps and logs).

    Raises:
        ConfigError: ``threads`` is not an int >= 1.
    """

    def __init__(self, threads: int, *, name: str = "sergeant-executor") -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ConfigError(
                f"ThreadExecutor.threads must be an int >= 1, got {threads!r}"
            )
        self._size = threads
        self._name = name
        self._inbox: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        # Guards starting, shutting down, and putting a batch on the inbox, so a
        # batch can never land behind the shutdown sentinels and wait forever.
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def concurrency(self) -> int:
        """The pool size: how many jobs may run at the same time."""
        return self._size

    def run(self, job: Job, tasks: Sequence[Task]) -> list[Outcome]:
        """Run ``job(task)`` for every task on the pool; return outcomes in order.

        Raises:
            RuntimeError: the executor has been shut down.
        """
        if not tasks:
            return []
        workers = min(len(tasks), self._size)
        batch = _Batch(job, tasks, workers)
        with self._lock:
            if self._closed:
                raise RuntimeError("ThreadExecutor.run() after shutdown()")
            if not self._threads:
                self._start()
            put = self._inbox.put
            for _ in range(workers):
                put(batch)
        try:
            batch.done.acquire()
        except BaseException:
            # Interrupted while waiting (Ctrl-C without a graceful handler): start
            # no more of the batch, and let the jobs already running end before
            # the exception goes on, or they would run on, unsupervised, while the
            # caller unwinds (and a daemon pool thread dies mid-job at exit). A
            # second interrupt during that wait goes on at once. The first
            # acquire may have succeeded with the interrupt raised right after it
            # (a signal handler runs once the call returns, and a loaded machine
            # can let the release come first): waiting again would then wait for
            # ever. A pool thread releases only after every one has ended, so
            # while one has not, the release is still to come.
            batch.halted = True
            if len(batch.ended) < batch.workers:
                batch.done.acquire()
            raise
        if batch.fatal:
            raise batch.fatal[0]
        return batch.outcomes()

    def shutdown(self) -> None:
        """Stop the pool after the jobs already handed to it; wait for them."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads, self._threads = self._threads, []
            for _ in threads:
                self._inbox.put(None)
        current = threading.current_thread()
        for thread in threads:
            if thread is not current:  # shutdown() called from inside a job
                thread.join()

    def _start(self) -> None:
        for number in range(self._size):
            thread = threading.Thread(
                target=self._serve, name=f"{self._name}-{number}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _serve(self) -> None:
        # An asynchronous exception can reach a pool thread outside any job only
        # when a watchdog arm was left un-disarmed and escalated into it while idle
        # (it then surfaces right after the inbox hands over a batch). The loops
        # below absorb one such stray wherever it lands, except in the few
        # bytecodes of the finish accounting, so the pool neither shrinks nor
        # leaves a batch unfinished. ``for ... in iter(get, None)`` stores the
        # batch with no interruption point between get() returning and the store.
        while True:
            try:
                for batch in iter(self._inbox.get, None):
                    try:
                        while True:
                            try:
                                _drain(batch)
                                break
                            except BaseException:
                                _log.exception("%s: stray exception", self._name)
                    finally:
                        batch.ended.append(None)
                        if batch.finish() == batch.workers:
                            batch.done.release()
                return
            except BaseException:
                _log.exception("%s: stray exception outside a batch", self._name)
