"""ProcessExecutor: the executor contract restated for jobs in other processes.

``contract_tests/test_executor.py`` observes jobs through the parent's memory (a
shared gauge, a set of thread ids) and compares exceptions by identity; a job in a
child process writes to a copy of that memory and its exception is a pickled copy.
So the same promises are checked here through what a job *returns*: its interval
(``time.monotonic`` is system-wide), its pid, the type and args of its exception.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.processes import ProcessDiedError, ProcessExecutor
from sergeant.adapters.memory import MemoryBroker
from sergeant.adapters.watchdogs.null import NullWatchdog
from sergeant.adapters.watchdogs.processes import ProcessWatchdog
from sergeant.adapters.watchdogs.threads import ThreadWatchdog

from sergeant.config import Timeouts, WorkerConfig
from sergeant.errors import ConfigError, TaskTimedOut, WatchdogError
from sergeant.outcome import NotStarted, Outcome, Raised, Returned
from sergeant.supervision import StopReason
from sergeant.task import Task
from sergeant.worker import Worker

pytestmark = pytest.mark.timeout(60)


def _tasks(count: int, **extra: Any) -> list[Task]:
    return [Task(kwargs={"n": n, **extra}) for n in range(count)]


def _echo(task: Task) -> Outcome:
    return Returned(task.kwargs["n"])


def _sleep_then_echo(task: Task) -> Outcome:
    time.sleep(task.kwargs["sleep"])
    return Returned(task.kwargs["n"])


@pytest.fixture
def pool() -> Iterator[ProcessExecutor]:
    executor = ProcessExecutor(processes=3)
    yield executor
    executor.shutdown()


class _Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("no pickling for me")


class _NeedsTwo(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")  # pickles, but cannot be rebuilt from its args


class TestCrashes:
    def test_a_child_that_dies_fails_its_task_only_and_is_replaced(
        self, pool: ProcessExecutor
    ) -> None:
        """os._exit in a job: that task gets ProcessDiedError, the others succeed."""

        def job(task: Task) -> Outcome:
            if task.kwargs["n"] == 1:
                os._exit(3)
            return Returned(task.kwargs["n"])

        outcomes = pool.run(job, _tasks(6))

        died = outcomes[1]
        assert isinstance(died, Raised)
        assert isinstance(died.exception, ProcessDiedError)
        assert died.exception.exitcode == 3
        assert outcomes[:1] + outcomes[2:] == [Returned(n) for n in (0, 2, 3, 4, 5)]
        assert len(pool.pids()) == 3
        assert died.exception.pid not in pool.pids()
        assert pool.run(job, _tasks(1)) == [Returned(0)]

    def test_a_child_killed_mid_task_is_reported_with_its_signal(
        self, pool: ProcessExecutor
    ) -> None:
        """A job whose process gets SIGKILL comes back as ProcessDiedError(-9)."""

        def job(task: Task) -> Outcome:
            os.kill(os.getpid(), signal.SIGKILL)
            return Returned(None)

        [outcome] = pool.run(job, _tasks(1))

        assert isinstance(outcome, Raised)
        assert isinstance(outcome.exception, ProcessDiedError)
        assert outcome.exception.exitcode == -signal.SIGKILL
        assert "killed by SIGKILL" in str(outcome.exception)

    def test_a_child_that_died_while_idle_is_replaced_before_the_next_batch(
        self, pool: ProcessExecutor
    ) -> None:
        """A child killed between batches is replaced; no task of the next is lost."""
        pool.run(_echo, _tasks(3))
        os.kill(pool.pids()[0], signal.SIGKILL)
        time.sleep(0.2)

        outcomes = pool.run(_echo, _tasks(6))

        assert outcomes == [Returned(n) for n in range(6)]


class _Interrupted(BaseException):
    """Raised in the parent by a signal handler, as Ctrl-C raises KeyboardInterrupt
    (a BaseException too: no except Exception on the way catches it)."""


def _run_interrupted(
    executor: ProcessExecutor, job: Any, tasks: list[Task], delays: list[float]
) -> float:
    """``executor.run(job, tasks)`` with _Interrupted raised in the main thread
    after each of ``delays`` seconds (SIGUSR1 from timers: pytest-timeout may own
    SIGALRM); the seconds until the interrupt went on out of ``run``."""

    def interrupt(signum: int, frame: object) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGUSR1, interrupt)
    timers = [
        threading.Timer(d, os.kill, (os.getpid(), signal.SIGUSR1)) for d in delays
    ]
    started = time.monotonic()
    try:
        for timer in timers:
            timer.start()
        with pytest.raises(_Interrupted):
            executor.run(job, tasks)
        return time.monotonic() - started
    finally:
        for timer in timers:
            timer.cancel()
        signal.signal(signal.SIGUSR1, previous)


class TestInterrupted:
    def test_an_interrupted_run_finishes_the_running_jobs_and_no_more(
        self, pool: ProcessExecutor
    ) -> None:
        """An exception reaching run() while it waits (a Ctrl-C) goes on once the
        jobs already running have ended, and the next run() gets its own tasks'
        outcomes: left unread, the running jobs' answers were taken for them."""
        slow = [Task(kwargs={"n": 100 + n, "sleep": 1.0}) for n in range(5)]
        waited = _run_interrupted(pool, _sleep_then_echo, slow, [0.3])

        outcomes = pool.run(_sleep_then_echo, _tasks(6, sleep=0.0))

        assert waited >= 0.9  # the three running jobs were waited for
        assert waited < 1.9  # the two not started stayed so
        assert outcomes == [Returned(n) for n in range(6)]

    def test_a_second_interrupt_goes_on_at_once_and_fresh_children_run_next(
        self, pool: ProcessExecutor
    ) -> None:
        """A second interrupt while the running jobs are waited for goes on at
        once; the children still busy are killed and the next run() forks new
        ones, which answer for its own tasks."""
        pool.run(_sleep_then_echo, _tasks(3, sleep=0.0))
        first = pool.pids()
        slow = [Task(kwargs={"n": 100 + n, "sleep": 10.0}) for n in range(3)]
        waited = _run_interrupted(pool, _sleep_then_echo, slow, [0.3, 0.6])

        outcomes = pool.run(_sleep_then_echo, _tasks(6, sleep=0.0))

        assert waited < 5.0
        assert outcomes == [Returned(n) for n in range(6)]
        assert not set(first) & set(pool.pids())


class _SlowToPickle:
    """A kwarg that takes 0.6 s to pickle (a big payload, say)."""

    def __reduce__(self) -> Any:
        time.sleep(0.6)
        return (_SlowToPickle, ())


class _StopsOnAsk(Worker):
    """Returns stop() for a task that asks, after its sleep; else its pid."""

    def work(self, task: Task) -> Any:
        time.sleep(task.kwargs.get("sleep", 0))
        if task.kwargs.get("do") == "stop":
            return self.stop()
        return os.getpid()


class TestInterruptedWhileHandingOut:
    def test_an_interrupt_while_tasks_are_handed_out_leaves_no_answer_behind(
        self, pool: ProcessExecutor
    ) -> None:
        """An interrupt while the batch is still being handed out (here, while a
        task pickles): the job already started is waited for and its answer
        dropped, so the next run() gets its own tasks' outcomes."""
        pool.run(_sleep_then_echo, _tasks(1, sleep=0.0))  # the pool is forked
        batch = [
            Task(kwargs={"n": 100, "sleep": 0.3}),
            Task(kwargs={"n": 101, "sleep": 0.0, "x": _SlowToPickle()}),
        ]
        _run_interrupted(pool, _sleep_then_echo, batch, [0.2])

        outcomes = pool.run(_sleep_then_echo, _tasks(4, sleep=0.0))

        assert outcomes == [Returned(n) for n in range(4)]

    def test_a_stop_answered_while_draining_is_passed_on_and_its_child_goes(
        self,
    ) -> None:
        """A job that returned stop() while the interrupted batch is drained: the
        stop reaches the worker, and that child (whose copy of the worker stops,
        answering NotStarted from then on) leaves the pool."""
        executor = ProcessExecutor(processes=2)
        worker = _StopsOnAsk(
            broker=MemoryBroker(),
            codec=PickleCodec(),
            executor=executor,
            watchdog=NullWatchdog(),
            config=WorkerConfig(name="q", wait=0.0),
        )
        batch = [
            Task(kwargs={"do": "stop", "sleep": 1.0}),
            Task(kwargs={"sleep": 1.0}),
        ]
        try:
            _run_interrupted(executor, worker.run_one, batch, [0.3])
            kept = executor.pids()
        finally:
            executor.shutdown()

        assert worker.stopping
        assert len(kept) == 1


class TestWhatCrossesThePipe:
    @pytest.mark.parametrize(
        ("error", "shown"),
        [(_Unpicklable("x"), "_Unpicklable"), (_NeedsTwo(1, 2), "1/2")],
    )
    def test_an_exception_that_cannot_travel_becomes_a_runtime_error(
        self, pool: ProcessExecutor, error: Exception, shown: str
    ) -> None:
        """An exception that cannot be (un)pickled comes back as RuntimeError(repr)."""

        def job(task: Task) -> Outcome:
            raise error

        [outcome] = pool.run(job, _tasks(1))

        assert isinstance(outcome, Raised)
        assert type(outcome.exception) is RuntimeError
        assert shown in str(outcome.exception)

    def test_an_unpicklable_return_value_comes_back_as_its_repr(
        self, pool: ProcessExecutor
    ) -> None:
        """A task that returned something unpicklable still succeeded: its repr."""
        [outcome] = pool.run(lambda t: Returned(lambda: None), _tasks(1))

        assert isinstance(outcome, Returned)
        assert "function" in outcome.value

    def test_exceptions_carry_the_childs_traceback_as_a_note(
        self, pool: ProcessExecutor
    ) -> None:
        """The child's traceback survives pickling as a note on the exception."""

        def deep_in_the_job(task: Task) -> Outcome:
            raise LookupError("where?")

        [outcome] = pool.run(deep_in_the_job, _tasks(1))

        assert isinstance(outcome, Raised)
        notes = "".join(getattr(outcome.exception, "__notes__", []))
        assert "deep_in_the_job" in notes

    def test_system_exit_in_a_job_is_raised_after_the_batch(
        self, pool: ProcessExecutor
    ) -> None:
        """A SystemExit escaping a job is re-raised by run() in the parent."""

        def job(task: Task) -> Outcome:
            if task.kwargs["n"] == 0:
                raise SystemExit(4)
            return Returned(task.kwargs["n"])

        with pytest.raises(SystemExit) as caught:
            pool.run(job, _tasks(3))

        assert caught.value.code == 4

    def test_a_child_mid_job_dies_with_its_worker(self) -> None:
        """A worker SIGKILLed while its child runs a runaway job takes the child
        with it: else the task, released and run elsewhere, would run twice."""
        script = (
            "import os\n"
            "from sergeant.adapters.executors.processes import ProcessExecutor\n"
            "from sergeant.task import Task\n"
            "def spin(task):\n"
            "    while True:\n"
            "        pass\n"
            "pool = ProcessExecutor(1)\n"
            "pool.run(spin, [Task(kwargs={})])\n"
        )
        worker = subprocess.Popen([sys.executable, "-c", script])
        try:
            deadline = time.monotonic() + 30
            children: list[psutil.Process] = []
            while not children and time.monotonic() < deadline:
                time.sleep(0.1)
                children = psutil.Process(worker.pid).children()
            assert children, "the pool never started"
            (child,) = children
        finally:
            worker.kill()
            worker.wait()

        gone, _ = psutil.wait_procs([child], timeout=10)
        if not gone:
            child.kill()

        assert gone == [child]

    def test_a_pool_forked_from_a_thread_outlives_that_thread(self) -> None:
        """Linux's parent-death signal fires when the *thread* that forked a child
        ends: a pool first used from a short-lived thread must not die under the
        next caller's job (calls from several threads take turns)."""
        pool = ProcessExecutor(1)
        forked, leave = threading.Event(), threading.Event()

        def first_caller() -> None:
            # Forks the pool from this thread (the same job: no fresh fork later).
            pool.run(_sleep_then_echo, _tasks(1, sleep=0.0))
            forked.set()
            leave.wait()

        first = threading.Thread(target=first_caller)
        try:
            first.start()
            forked.wait()
            # The forking thread ends while the main thread's job runs.
            threading.Timer(0.3, leave.set).start()

            outcomes = pool.run(_sleep_then_echo, _tasks(1, sleep=1.0))
        finally:
            leave.set()
            first.join()
            pool.shutdown()

        assert outcomes == [Returned(0)]

    def test_process_died_error_pickles(self) -> None:
        """ProcessDiedError survives a pickle round trip with its fields."""
        error = pickle.loads(pickle.dumps(ProcessDiedError(12, -9)))

        assert (error.pid, error.exitcode) == (12, -9)


class TestLifecycle:
    @pytest.mark.parametrize("processes", [0, -1, 1.5, "4", True, None])
    def test_rejects_a_bad_process_count_naming_the_field(
        self, processes: object
    ) -> None:
        """A process count that is not an int >= 1 raises ConfigError naming it."""
        with pytest.raises(ConfigError, match=r"ProcessExecutor\.processes"):
            ProcessExecutor(processes=processes)  # type: ignore[arg-type]

    def test_run_after_shutdown_raises(self, pool: ProcessExecutor) -> None:
        """run() after shutdown() raises RuntimeError; a second shutdown is harmless."""
        pool.shutdown()
        pool.shutdown()

        with pytest.raises(RuntimeError):
            pool.run(_echo, _tasks(1))

    def test_a_new_job_gets_fresh_children(self, pool: ProcessExecutor) -> None:
        """Another job re-forks the pool, since the children hold the job they run."""
        pool.run(_echo, _tasks(3))
        first = pool.pids()

        outcomes = pool.run(lambda t: Returned(-t.kwargs["n"]), _tasks(3))

        assert outcomes == [Returned(0), Returned(-1), Returned(-2)]
        assert not set(first) & set(pool.pids())


# -- with a real worker --------------------------------------------------------------


class _Recording(Worker):
    """Runs tasks by their kwargs; the parent-side handlers record what they saw."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[tuple[str, int, Any]] = []

    def work(self, task: Task) -> Any:
        action = task.kwargs.get("do")
        if action == "fail":
            raise ValueError(task.kwargs["n"])
        if action == "die":
            os._exit(1)
        if action == "stop":
            return self.stop()
        if action == "request_stop":
            self.request_stop()
        if action == "spin":
            end = time.monotonic() + 30.0
            while time.monotonic() < end:
                pass
        if action == "swallow":
            try:
                time.sleep(30.0)
            except TaskTimedOut:
                time.sleep(30.0)  # ignores the timeout: only SIGKILL ends this
        return os.getpid()

    def on_success(self, task: Task, returned_value: Any) -> None:
        self.seen.append(("success", task.kwargs["n"], returned_value))

    def on_failure(self, task: Task, exception: BaseException) -> None:
        self.seen.append(("failure", task.kwargs["n"], type(exception).__name__))

    def on_timeout(self, task: Task) -> None:
        self.seen.append(("timeout", task.kwargs["n"], None))


@pytest.fixture
def make_recording() -> Iterator[Callable[..., _Recording]]:
    made: list[_Recording] = []

    def make(watchdog: Any = None, **config: Any) -> _Recording:
        worker = _Recording(
            broker=MemoryBroker(),
            codec=PickleCodec(),
            executor=ProcessExecutor(processes=2),
            watchdog=watchdog or NullWatchdog(),
            config=WorkerConfig(name="jobs", wait=0.0, **config),
        )
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker.executor.shutdown()
        worker.watchdog.close()


class TestWithAWorker:
    def test_tasks_run_in_children_and_settle_in_the_parent(
        self, make_recording: Callable[..., _Recording]
    ) -> None:
        """Successes, failures and a dead child are settled by the worker's handlers."""
        worker = make_recording(tasks_per_transaction=4)
        worker.push_tasks([{"n": 0}, {"n": 1, "do": "fail"}, {"n": 2, "do": "die"},
                           {"n": 3}])  # fmt: skip

        worker.step()

        seen = sorted(worker.seen, key=lambda s: s[1])
        assert [s[:2] for s in seen] == [("success", 0), ("failure", 1),
                                         ("failure", 2), ("success", 3)]  # fmt: skip
        assert seen[1][2] == "ValueError"
        assert seen[2][2] == "ProcessDiedError"
        assert os.getpid() not in {seen[0][2], seen[3][2]}
        assert worker.broker.lengths("jobs").in_flight == 4  # acks ride on next reserve

    def test_a_stop_returned_in_a_child_stops_the_worker(
        self, make_recording: Callable[..., _Recording]
    ) -> None:
        """stop() returned in a child stops the real worker; that child is replaced."""
        worker = make_recording(tasks_per_transaction=1)
        worker.push_task({"n": 0})
        worker.step()
        before = set(worker.executor.pids())
        worker.push_tasks([{"n": 1, "do": "stop"}, {"n": 2}])

        reason = worker.run()

        assert reason is StopReason.STOPPED
        assert [s[:2] for s in worker.seen] == [("success", 0), ("success", 1)]
        assert worker.broker.lengths("jobs").ready == 1
        assert len(before & set(worker.executor.pids())) == 1  # the stopped copy went

    def test_a_request_stop_called_in_a_child_stops_the_worker(
        self, make_recording: Callable[..., _Recording]
    ) -> None:
        """request_stop() in work() stops the copy in the child; the worker stops
        too (once, not spinning through the queue on NotStarted answers)."""
        worker = make_recording(tasks_per_transaction=1)
        worker.push_tasks([{"n": 0, "do": "request_stop"}, {"n": 1}, {"n": 2}])
        events: list[str] = []
        worker.subscribe(lambda event: events.append(type(event).__name__))
        stopper = threading.Timer(10.0, worker.request_stop)  # a hang's way out
        stopper.start()

        try:
            reason = worker.run()
        finally:
            stopper.cancel()

        assert reason is StopReason.STOPPED
        assert [s[:2] for s in worker.seen] == [("success", 0)]
        assert worker.broker.lengths("jobs").ready == 2
        assert events.count("Delivered") == 1  # task 0's only

    def test_a_watchdog_that_cannot_arm_in_a_child_ends_the_run(
        self, make_recording: Callable[..., _Recording]
    ) -> None:
        """A watchdog failing to arm in a child (its killer cannot start there)
        releases the task and stops the worker, whose run() raises the error, as
        under the serial executor; it does not release and re-reserve for ever."""
        parent = os.getpid()

        class ArmsInTheParentOnly(NullWatchdog):
            def arm(self, timeout: float, *, grace: float) -> object:
                if os.getpid() != parent:
                    raise WatchdogError("the killer process cannot start")
                return super().arm(timeout, grace=grace)

        worker = make_recording(
            watchdog=ArmsInTheParentOnly(),
            tasks_per_transaction=1,
            timeouts=Timeouts(timeout=5.0),
        )
        worker.push_tasks([{"n": 0}, {"n": 1}])
        events: list[str] = []
        worker.subscribe(lambda event: events.append(type(event).__name__))
        stopper = threading.Timer(10.0, worker.request_stop)
        stopper.start()

        try:
            with pytest.raises(WatchdogError, match="cannot start"):
                worker.run()
        finally:
            stopper.cancel()

        assert worker.seen == []
        assert worker.broker.lengths("jobs").ready == 2
        assert events == ["Delivered", "Released"]  # once, not over and over

    def test_tasks_not_handed_out_once_stopping_are_not_started(
        self, make_recording: Callable[..., _Recording]
    ) -> None:
        """Once the worker is stopping, tasks not yet handed out are NotStarted."""
        worker = make_recording()
        worker.request_stop()

        outcomes = worker.executor.run(worker.run_one, _tasks(3))

        assert outcomes == [NotStarted()] * 3

    def test_with_a_process_watchdog_each_child_enforces_its_deadlines(
        self, make_recording: Callable[..., _Recording]
    ) -> None:
        """In children a loop times out (on_timeout); a swallower is killed alone."""
        worker = make_recording(
            watchdog=ProcessWatchdog(),
            tasks_per_transaction=3,
            timeouts=Timeouts(timeout=0.3, grace_period=0.4),
        )
        worker.push_tasks([{"n": 0, "do": "spin"}, {"n": 1, "do": "swallow"},
                           {"n": 2}])  # fmt: skip
        start = time.monotonic()

        worker.step()
        elapsed = time.monotonic() - start

        seen = sorted(worker.seen, key=lambda s: s[1])
        assert [s[:2] for s in seen] == [("timeout", 0), ("failure", 1),
                                         ("success", 2)]  # fmt: skip
        assert seen[1][2] == "ProcessDiedError"
        assert elapsed < 0.3 + 0.4 + 1.5
        assert worker.watchdog.killer_pid is None  # the parent never armed

    def test_a_thread_watchdog_not_armed_before_the_fork_works_in_children(
        self, make_recording: Callable[..., _Recording]
    ) -> None:
        """A ThreadWatchdog first armed in the children starts its thread in each."""
        worker = make_recording(
            watchdog=ThreadWatchdog(),
            tasks_per_transaction=2,
            timeouts=Timeouts(timeout=0.3, grace_period=5.0),
        )
        worker.push_tasks([{"n": 0, "do": "spin"}, {"n": 1}])

        worker.step()

        assert sorted(s[:2] for s in worker.seen) == [("success", 1), ("timeout", 0)]
