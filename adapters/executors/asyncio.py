"""AsyncioExecutor: runs ``async def work(task)`` on one event loop, N at a time.

For I/O-bound workers written with asyncio clients (aiohttp, asyncpg, redis.asyncio):
hundreds of tasks can wait on the network at once without a thread each.

Theory of operation. One event loop runs in a dedicated daemon thread, started on
the first ``run()`` of coroutine jobs. ``run()`` submits the whole batch to it as one
coroutine (``run_coroutine_threadsafe``) and blocks until it is done; inside, each
task is an asyncio task that first takes a slot of a semaphore of ``concurrency``
slots, so at most that many run at once and the rest queue in order.

Which jobs are coroutines. The Executor port's job is synchronous, and today the
worker always hands over ``worker.run_one``, which would call ``work`` and get a
coroutine object back unrun. So when the job is the ``run_one`` of a worker whose
``work`` is ``async def``, this executor runs ``run_worker_task`` instead: the same
steps as ``run_one`` (stop check, ``pre_work``, ``work``, control values,
``post_work``) with the coroutine awaited on the loop and the deadline enforced by
cancellation. Any job that is itself a coroutine function is awaited as it is.
Synchronous jobs run on a ``ThreadExecutor`` of ``concurrency`` threads, so the
executor keeps the port's promises for them too.

Timeouts. The task's ``timeout`` (else the worker's) is an ``asyncio.timeout``
around ``pre_work`` and ``work``: at the deadline the coroutine is cancelled at its
current ``await``, and the task is ``Expired`` (``on_timeout`` runs). A
``TimeoutError`` the work raises by itself is an ordinary failure. A coroutine that
swallows the ``CancelledError`` is cancelled once more ``grace_period`` seconds
after the deadline's turn of the loop (logged at ERROR); if it swallows that too
it runs on, and is reported ``Expired`` whenever it ends. The worker's watchdog
is not used for async work: one thread runs many tasks, so there is no thread to
interrupt or process to kill for one task. Cancellation only lands at an
``await``: a coroutine that computes without awaiting blocks the whole loop, and
no deadline can stop it; run CPU-bound work on the process executor instead.

Hooks run on the loop thread between awaits: keep them quick. To create clients
bound to the loop (an aiohttp session) from the synchronous ``initialize()``, use
``executor.run_coroutine(open_session())``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar, cast

from sergeant.errors import ConfigError
from sergeant.outcome import CONTROL, Expired, NotStarted, Outcome, Raised, Returned
from sergeant.protocols.executor import Job
from sergeant.task import Task
from sergeant.worker import Worker

from ._worker_job import relay_stop, worker_of
from .threads import ThreadExecutor

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
AsyncJob = Callable[[Task], Awaitable[Outcome]]


async def run_worker_task(worker: Worker, task: Task) -> Outcome:
    """``Worker.run_one`` for an ``async def work``: await it under its deadline.

    Never raises: an exception is ``Raised``, the deadline is ``Expired``.
    """
    if worker.stopping:
        return NotStarted()
    timeout = task.timeout or worker.config.timeouts.timeout
    outcome = await _guarded(worker, task, timeout, worker.config.timeouts.grace_period)
    relay_stop(worker, outcome)
    try:
        worker.post_work(task, outcome)
    except Exception:
        worker.logger.exception("post_work raised; the worker carries on")
    return outcome


async def _guarded(worker: Worker, task: Task, timeout: float, grace: float) -> Outcome:
    current = asyncio.current_task()
    assert current is not None  # we always run inside an asyncio task
    escalated: list[bool] = []
    escalation: asyncio.TimerHandle | None = None
    if timeout:
        loop = asyncio.get_running_loop()

        def deadline() -> None:
            # The grace counts from the deadline's turn, not from the start: a
            # coroutine that blocked the loop past timeout + grace is cancelled
            # late, and must still get its whole grace to stop, not a second
            # cancellation (and an ERROR) in the same turn of the loop.
            nonlocal escalation
            escalation = loop.call_later(
                grace, _escalate, current, escalated, timeout, grace
            )

        escalation = loop.call_later(timeout, deadline)
    scope = asyncio.timeout(timeout or None)
    try:
        async with scope:
            worker.pre_work(task)
            value = await worker.work(task)
    except TimeoutError as error:
        return Expired() if scope.expired() else Raised(error)
    except asyncio.CancelledError:
        if not escalated:
            raise  # not ours: let whoever cancelled see it
        current.uncancel()
        return Expired()
    except Exception as error:
        # Raised once the deadline passed (its cleanup failed while it was being
        # cancelled): stopped at its deadline all the same.
        return Expired() if scope.expired() else Raised(error)
    finally:
        if escalation is not None:
            escalation.cancel()
    if scope.expired():  # it swallowed the cancellation and returned anyway
        relay_stop(worker, value)  # a stop or respawn it returned still counts
        return Expired()
    return value if isinstance(value, CONTROL) else Returned(value)


def _escalate(
    task: asyncio.Task[Any], escalated: list[bool], timeout: float, grace: float
) -> None:
    escalated.append(True)
    _log.error(
        "async task still running %.3gs after its %.3gs deadline (it swallowed the "
        "cancellation); cancelling it once more",
        grace,
        timeout,
    )
    task.cancel()


def _async_job(job: Any) -> AsyncJob | None:
    """The coroutine function to await for ``job``, or None for a plain job."""
    if inspect.iscoroutinefunction(job):
        return cast("AsyncJob", job)
    worker = worker_of(job)
    if worker is not None and inspect.iscoroutinefunction(worker.work):
        return functools.partial(run_worker_task, worker)
    return None


class AsyncioExecutor:
    """Runs coroutine jobs on one event loop thread, ``concurrency`` at a time.

    Outcomes come back in input order; an exception escaping a job becomes
    ``Raised`` while the others run; a ``SystemExit`` or ``KeyboardInterrupt``
    escaping a job is re-raised by ``run()`` after the batch. Synchronous jobs run on
    ``concurrency`` threads instead. Several threads may call ``run()`` at once;
    their coroutines share the loop and its ``concurrency`` slots.

    Args:
        concurrency: how many jobs may run at once, at least 1.
        name: name of the loop's thread (and prefix of the sync pool's threads).

    Raises:
        ConfigError: ``concurrency`` is not an int >= 1.
    """

    def __init__(self, concurrency: int, *, name: str = "sergeant-asyncio") -> None:
        if (
            isinstance(concurrency, bool)
            or not isinstance(concurrency, int)
            or concurrency < 1
        ):
            raise ConfigError(
                f"AsyncioExecutor.concurrency must be an int >= 1, got {concurrency!r}"
            )
        self._size = concurrency
        self._name = name
        self._sync = ThreadExecutor(concurrency, name=f"{name}-sync")
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._batches: set[concurrent.futures.Future[Any]] = set()
        self._closed = False

    @property
    def concurrency(self) -> int:
        """How many jobs may run at the same time."""
        return self._size

    def run(self, job: Job | AsyncJob, tasks: Sequence[Task]) -> list[Outcome]:
        """Run ``job`` for every task; return the outcomes in order.

        Raises:
            RuntimeError: the executor has been shut down.
        """
        if not tasks:
            return []
        async_job = _async_job(job)
        if async_job is None:
            if self._closed:
                raise RuntimeError("AsyncioExecutor used after shutdown()")
            return self._sync.run(cast("Job", job), tasks)
        outcomes, fatal = self._submit(self._run_all(async_job, tasks))
        if fatal:
            raise fatal[0]
        return outcomes

    def run_coroutine(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` on the executor's loop from another thread; its result.

        For setting up what async tasks share (``initialize``) and closing it
        (``finalize``). Raises what the coroutine raises.
        """
        return self._submit(coroutine)

    def shutdown(self) -> None:
        """Wait for the running batches, then stop the loop and the threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
            batches = set(self._batches)
        self._sync.shutdown()
        if loop is None or thread is None:
            return
        if thread is threading.current_thread():
            # Called by a job on the loop: stopping the loop now would leave its
            # batch (and any other) unfinished, and run() waiting for good. The
            # loop stops once every running batch is done, this job's included.
            _stop_after(loop, [batch for batch in batches if not batch.done()])
            return
        concurrent.futures.wait(batches)
        loop.call_soon_threadsafe(loop.stop)
        thread.join()

    # -- the loop ------------------------------------------------------------------

    def _submit(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        with self._lock:
            if self._closed:
                coroutine.close()  # never awaited: close it quietly
                raise RuntimeError("AsyncioExecutor used after shutdown()")
            loop = self._ensure_loop()
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
            self._batches.add(future)
        try:
            return future.result()
        finally:
            with self._lock:
                self._batches.discard(future)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_serve, args=(loop,), name=self._name, daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    async def _run_all(
        self, job: AsyncJob, tasks: Sequence[Task]
    ) -> tuple[list[Outcome], list[BaseException]]:
        if self._semaphore is None:  # made here: it belongs to the running loop
            self._semaphore = asyncio.Semaphore(self._size)
        semaphore = self._semaphore
        fatal: list[BaseException] = []

        async def one(task: Task) -> Outcome:
            async with semaphore:
                try:
                    return await job(task)
                except BaseException as exc:  # every escape is an outcome
                    if isinstance(exc, SystemExit | KeyboardInterrupt):
                        fatal.append(exc)
                    return Raised(exc)

        outcomes = await asyncio.gather(*(one(task) for task in tasks))
        return list(outcomes), fatal


def _stop_after(
    loop: asyncio.AbstractEventLoop, batches: list[concurrent.futures.Future[Any]]
) -> None:
    """Stop ``loop`` once every one of ``batches`` is done (at once if none)."""
    if not batches:
        loop.call_soon(loop.stop)
        return
    left = len(batches)
    lock = threading.Lock()

    def one_done(_: concurrent.futures.Future[Any]) -> None:
        nonlocal left
        with lock:
            left -= 1
            last = left == 0
        if last:
            loop.call_soon_threadsafe(loop.stop)

    for batch in batches:
        batch.add_done_callback(one_done)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
