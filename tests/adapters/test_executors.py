"""Executor behaviour beyond the contract: validation, lifecycle, stop requests."""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sergeant.adapters.executors import threads
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.executors.threads import ThreadExecutor

from sergeant.errors import ConfigError, TaskTimedOut
from sergeant.outcome import Outcome, Raised, Returned
from sergeant.task import Task


def _tasks(count: int) -> list[Task]:
    return [Task(kwargs={"n": n}) for n in range(count)]


def _echo(task: Task) -> Outcome:
    return Returned(task.kwargs["n"])


@pytest.fixture
def pool() -> Iterator[ThreadExecutor]:
    executor = ThreadExecutor(threads=3)
    yield executor
    executor.shutdown()


class TestThreadExecutorConstruction:
    @pytest.mark.parametrize("threads", [0, -1, 1.5, "4", True, None])
    def test_rejects_a_bad_thread_count_naming_the_field(self, threads: object) -> None:
        """A thread count that is not an int >= 1 raises ConfigError naming it."""
        with pytest.raises(ConfigError, match=r"ThreadExecutor\.threads"):
            ThreadExecutor(threads=threads)  # type: ignore[arg-type]

    def test_concurrency_is_the_thread_count(self) -> None:
        """The concurrency equals the number of threads asked for."""
        executor = ThreadExecutor(threads=7)

        concurrency = executor.concurrency

        assert concurrency == 7

    def test_threads_start_on_the_first_run_not_before(self) -> None:
        """Building the executor starts no thread; the first run starts the pool."""
        before = threading.active_count()

        executor = ThreadExecutor(threads=3, name="lazy-pool")
        after_build = threading.active_count()
        executor.run(_echo, _tasks(1))
        names = sorted(t.name for t in threading.enumerate() if "lazy-pool" in t.name)
        executor.shutdown()

        assert after_build == before
        assert names == ["lazy-pool-0", "lazy-pool-1", "lazy-pool-2"]


class TestThreadExecutorLifecycle:
    def test_shutdown_waits_for_running_jobs(self, pool: ThreadExecutor) -> None:
        """shutdown() returns only after the jobs already running have finished."""
        started = threading.Barrier(4)
        finished: list[int] = []

        def job(task: Task) -> Outcome:
            started.wait(timeout=5)
            time.sleep(0.2)
            finished.append(task.kwargs["n"])
            return Returned(None)

        runner = threading.Thread(target=pool.run, args=(job, _tasks(3)))
        runner.start()
        started.wait(timeout=5)
        pool.shutdown()

        assert sorted(finished) == [0, 1, 2]
        runner.join(timeout=5)

    def test_run_after_shutdown_raises(self, pool: ThreadExecutor) -> None:
        """A shut-down executor refuses new batches instead of hanging."""
        pool.run(_echo, _tasks(2))
        pool.shutdown()

        with pytest.raises(RuntimeError, match="shutdown"):
            pool.run(_echo, _tasks(2))

    def test_shutdown_twice_is_harmless(self, pool: ThreadExecutor) -> None:
        """Calling shutdown() again returns at once and raises nothing."""
        pool.run(_echo, _tasks(2))
        pool.shutdown()

        pool.shutdown()

        assert pool.concurrency == 3

    def test_shutdown_from_inside_a_job_does_not_deadlock(
        self, pool: ThreadExecutor
    ) -> None:
        """A job may call shutdown(); it does not wait for its own thread."""

        def job(task: Task) -> Outcome:
            pool.shutdown()
            return Returned("ok")

        outcomes = pool.run(job, _tasks(1))

        assert outcomes == [Returned("ok")]

    def test_concurrent_callers_share_the_pool(self, pool: ThreadExecutor) -> None:
        """Batches from several caller threads each get their own outcomes back."""
        results: dict[int, list[Outcome]] = {}

        def caller(offset: int) -> None:
            tasks = [Task(kwargs={"n": offset + n}) for n in range(50)]
            results[offset] = pool.run(_echo, tasks)

        callers = [threading.Thread(target=caller, args=(k * 100,)) for k in range(4)]
        for thread in callers:
            thread.start()
        for thread in callers:
            thread.join(timeout=10)

        assert results == {
            k * 100: [Returned(k * 100 + n) for n in range(50)] for k in range(4)
        }


class TestEscapingBaseExceptions:
    @pytest.mark.parametrize("executor_kind", ["serial", "threads"])
    def test_task_timed_out_escaping_a_job_becomes_raised(
        self, executor_kind: str
    ) -> None:
        """A TaskTimedOut escaping a job is reported as Raised, like an Exception."""
        executor = SerialExecutor() if executor_kind == "serial" else ThreadExecutor(2)
        timed_out = TaskTimedOut()

        def job(task: Task) -> Outcome:
            if task.kwargs["n"] == 0:
                raise timed_out
            return Returned(task.kwargs["n"])

        outcomes = executor.run(job, _tasks(2))
        executor.shutdown()

        assert outcomes == [Raised(timed_out), Returned(1)]

    def test_serial_lets_keyboard_interrupt_through_at_once(self) -> None:
        """KeyboardInterrupt in a serial job propagates, and later tasks do not run."""
        ran: list[int] = []

        def job(task: Task) -> Outcome:
            ran.append(task.kwargs["n"])
            if task.kwargs["n"] == 1:
                raise KeyboardInterrupt
            return Returned(None)

        with pytest.raises(KeyboardInterrupt):
            SerialExecutor().run(job, _tasks(4))

        assert ran == [0, 1]

    def test_threads_reraise_system_exit_after_the_batch(
        self, pool: ThreadExecutor
    ) -> None:
        """SystemExit in a pool job is re-raised by run() once every task has run."""
        ran: list[int] = []

        def job(task: Task) -> Outcome:
            if task.kwargs["n"] == 0:
                raise SystemExit(3)
            time.sleep(0.01)
            ran.append(task.kwargs["n"])
            return Returned(None)

        with pytest.raises(SystemExit) as raised:
            pool.run(job, _tasks(6))

        assert raised.value.code == 3
        assert sorted(ran) == [1, 2, 3, 4, 5]

    def test_threads_interrupted_while_waiting_finish_the_running_job_only(
        self,
    ) -> None:
        """A Ctrl-C while run() waits (no graceful handler installed) goes on only
        once the running job has ended, and the rest of the batch never starts:
        the jobs must not run on unsupervised while the caller unwinds.

        The running job ends only after the main thread has taken the signal
        (Python's own handler, wrapped to say when it ran): on a loaded machine
        the main thread once took it only after the job had ended, and the test
        then saw the batch run on, whatever the executor does."""
        pool = ThreadExecutor(threads=1)
        caller = threading.get_ident()
        finished: list[int] = []
        started: list[int] = []
        taken = threading.Event()

        def ctrl_c(signum: int, frame: object) -> None:
            taken.set()
            signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

        def job(task: Task) -> Outcome:
            started.append(task.kwargs["n"])
            if task.kwargs["n"] == 0:
                signal.pthread_kill(caller, signal.SIGINT)
                taken.wait(10)
                time.sleep(0.3)  # run() sees the interrupt meanwhile
                finished.append(0)
            return Returned(None)

        previous = signal.signal(signal.SIGINT, ctrl_c)
        try:
            with pytest.raises(KeyboardInterrupt):
                pool.run(job, _tasks(4))
            finished_when_raised = list(finished)
            time.sleep(0.3)  # time enough for the other tasks, were they started
        finally:
            signal.signal(signal.SIGINT, previous)
            pool.shutdown()

        assert taken.is_set()

        assert finished_when_raised == [0]
        assert started == [0]

    def test_an_interrupt_raised_just_after_the_wait_ended_does_not_hang(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A Ctrl-C whose handler runs just after run()'s wait took the batch's
        release (on a loaded machine the release can come first) goes on at
        once: run() used to wait for a second release that never comes. The
        interrupt is simulated by the batch's lock, raising after it was taken."""

        class _TakenThenInterrupted:
            def __init__(self, lock: threading.Lock) -> None:
                self.lock = lock
                self.interrupted = False

            def acquire(self) -> bool:
                self.lock.acquire()
                if not self.interrupted:
                    self.interrupted = True
                    raise KeyboardInterrupt
                return True

            def release(self) -> None:
                self.lock.release()

        class _Batch(threads._Batch):
            def __init__(self, *args: Any) -> None:
                super().__init__(*args)
                self.done = _TakenThenInterrupted(self.done)  # type: ignore[assignment]

        monkeypatch.setattr(threads, "_Batch", _Batch)
        pool = ThreadExecutor(threads=2)
        raised: list[BaseException] = []

        def call() -> None:
            try:
                pool.run(lambda task: Returned(None), _tasks(4))
            except BaseException as error:
                raised.append(error)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        caller.join(timeout=10)
        hung = caller.is_alive()
        if not hung:
            pool.shutdown()

        assert not hung
        assert [type(error) for error in raised] == [KeyboardInterrupt]


_raise_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


def test_a_stray_timeout_in_an_idle_pool_thread_loses_no_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A TaskTimedOut sent to idle pool threads loses neither a task nor a thread."""
    executor = ThreadExecutor(threads=2, name="stray-pool")
    executor.run(_echo, _tasks(2))  # start the pool; its threads now wait idle
    pool = [t for t in threading.enumerate() if t.name.startswith("stray-pool")]
    for thread in pool:
        _raise_in(thread.ident, TaskTimedOut)  # pending until they next run Python
    both = threading.Barrier(2)

    def job(task: Task) -> Outcome:
        both.wait(timeout=5)  # both threads must wake up and take a task
        return Returned(task.kwargs["n"])

    results: list[list[Outcome]] = []
    runner = threading.Thread(
        target=lambda: results.extend(executor.run(job, _tasks(2)) for _ in range(3)),
        daemon=True,
    )
    runner.start()
    runner.join(timeout=10)

    assert not runner.is_alive(), "a batch never finished"
    assert results == [[Returned(0), Returned(1)]] * 3
    assert all(thread.is_alive() for thread in pool)
    assert caplog.text.count("stray exception") == 2
    executor.shutdown()
