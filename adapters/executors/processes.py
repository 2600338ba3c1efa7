"""ProcessExecutor: runs a batch's jobs in N forked child processes.

For CPU-bound Python (N processes use N cores; threads would take turns on the
GIL) and for isolation (a task that crashes its process, by a segfault in a C
extension, ``os._exit`` or the kernel's OOM killer, fails alone; the worker goes on).

Theory of operation. The pool is *forked* on the first ``run()``, after the job is
known: the job is the worker's bound ``run_one``, and the worker holds a broker
connection, threads and locks that cannot be pickled, so the children inherit it
through ``fork`` instead (hence POSIX only). Each child then loops: receive one
pickled task on its pipe, run ``job(task)``, send the pickled outcome back. The
parent hands a task to every idle child, waits on all busy children's pipes and
process sentinels at once (``multiprocessing.connection.wait``) and gives each child
its next task as soon as it answers, so at most N jobs run at once and the outcomes
land in input order whatever order they finish in. A later ``run()`` with another
job re-forks the pool (the worker always passes the same one).

A child that dies before answering is replaced at once, and its task becomes
``Raised(ProcessDiedError(pid, exitcode))``: the worker settles it as a failure
(``on_failure`` may ask for a retry), and the rest of the batch goes on.

What crosses the pipes must pickle. A ``Raised`` exception that cannot be pickled,
or pickles but cannot be rebuilt (a custom exception whose ``__init__`` needs
arguments it does not pass to ``super()``), comes back as a ``RuntimeError`` with
its repr; a returned value that cannot be pickled comes back as its repr (the task
still succeeded). Exceptions carry their child-side traceback as a note.

What the fork implies. Hooks and ``work`` run in the child on a *copy* of the worker:
what they change in it (counters, caches) stays in that child. A stop asked of
the copy (``stop()``/``respawn()`` returned, ``request_stop()`` called, a watchdog
that cannot arm: ``Worker.stop_request``) travels back with the outcome and is
asked of the real worker, and that child is replaced (its copy would answer
``NotStarted`` for ever); once the worker is stopping, the tasks not yet handed
out come back ``NotStarted``. Children ignore
SIGINT (a Ctrl-C on the terminal is for the worker, which then stops after the
batch) and die on SIGTERM. They are daemonic: a job cannot start
``multiprocessing`` children of its own, and the pool dies with the worker
process, even a child in the middle of a job (see ``_die_with``).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from sergeant.errors import ConfigError, SergeantError, WatchdogError
from sergeant.outcome import (
    NotStarted,
    Outcome,
    Raised,
    Returned,
)
from sergeant.protocols.executor import Job
from sergeant.supervision import StopReason
from sergeant.task import Task
from sergeant.worker import Worker

from ._worker_job import worker_of

_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: What a child's copy of the worker was asked to stop for (``Worker.stop_request``).
_Stop = tuple[StopReason, WatchdogError | None]


class ProcessDiedError(SergeantError):
    """The child process running a task died before reporting the task's outcome.

    Attributes:
        pid: the child's process id.
        exitcode: its exit code; negative for a signal (``-9``: SIGKILL, the OOM
            killer or a process watchdog), None if unknown.
    """

    def __init__(self, pid: int, exitcode: int | None) -> None:
        super().__init__(pid, exitcode)
        self.pid = pid
        self.exitcode = exitcode

    def __str__(self) -> str:
        code = self.exitcode
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        return f"the process running the task (pid {self.pid}) died: {how}"


class _Child:
    __slots__ = ("conn", "index", "process")

    def __init__(self, process: BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.index = -1  # the task it runs, -1 when idle


class _Batch:
    """One ``run()``'s bookkeeping in the parent."""

    __slots__ = ("busy", "fatal", "pending", "results", "tasks", "worker")

    def __init__(self, job: Job, tasks: Sequence[Task]) -> None:
        self.tasks = tasks
        self.worker: Worker | None = worker_of(job)
        self.results: list[Outcome | None] = [None] * len(tasks)
        self.pending = collections.deque(range(len(tasks)))
        self.busy: dict[Connection, _Child] = {}
        self.fatal: list[BaseException] = []

    def outcomes(self) -> list[Outcome]:
        """The results, every one of which is set once ``busy`` and ``pending`` are."""
        lost = RuntimeError("ProcessExecutor recorded no outcome for this task")
        return [Raised(lost) if r is None else r for r in self.results]


class ProcessExecutor:
    """Runs the jobs of a batch in a pool of ``processes`` forked child processes.

    Outcomes come back in input order; at most ``processes`` jobs run at once; an
    exception escaping a job becomes ``Raised`` for that task while the others run;
    a child that dies is replaced and its task becomes ``Raised(ProcessDiedError)``.
    A ``SystemExit`` or ``KeyboardInterrupt`` escaping a job is recorded as
    ``Raised`` and re-raised by ``run()`` once the batch has finished. An
    exception reaching ``run()`` itself while it waits (a Ctrl-C) goes on once the
    running jobs have answered (a second one at once, killing the busy children).
    Calls to ``run()`` from several threads take turns.

    Args:
        processes: size of the pool, at least 1.
        name: prefix of the children's process names.

    Raises:
        ConfigError: ``processes`` is not an int >= 1, or this platform cannot fork.
    """

    def __init__(self, processes: int, *, name: str = "sergeant-process") -> None:
        if (
            isinstance(processes, bool)
            or not isinstance(processes, int)
            or processes < 1
        ):
            raise ConfigError(
                f"ProcessExecutor.processes must be an int >= 1, got {processes!r}"
            )
        try:
            self._context = multiprocessing.get_context("fork")
        except ValueError as error:
            raise ConfigError(f"ProcessExecutor needs fork(): {error}") from None
        self._size = processes
        self._name = name
        self._children: list[_Child] = []
        self._job: Job | None = None
        self._lock = threading.Lock()  # one batch at a time; shutdown waits for it
        self._closed = False

    @property
    def concurrency(self) -> int:
        """The pool size: how many jobs may run at the same time."""
        return self._size

    def pids(self) -> list[int]:
        """The process ids of the pool's children (empty before the first run)."""
        return [child.process.pid or 0 for child in self._children]

    def run(self, job: Job, tasks: Sequence[Task]) -> list[Outcome]:
        """Run ``job(task)`` for every task in the pool; return outcomes in order.

        Raises:
            RuntimeError: the executor has been shut down.
        """
        if not tasks:
            return []
        with self._lock:
            if self._closed:
                raise RuntimeError("ProcessExecutor.run() after shutdown()")
            if self._job is None or job != self._job:
                self._stop_children()  # the children hold the previous job
                self._job = job
            batch = _Batch(job, tasks)
            self._run(batch)
        if batch.fatal:
            raise batch.fatal[0]
        return batch.outcomes()

    def shutdown(self) -> None:
        """Stop the children after the running batch, if any; wait for them."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stop_children()

    # -- the batch ---------------------------------------------------------------------

    def _run(self, batch: _Batch) -> None:
        for position, child in enumerate(self._children):
            if not child.process.is_alive():  # died while idle, between batches
                self._children[position] = self._replace(child)
        while len(self._children) < self._size:
            self._children.append(self._spawn())
        busy = batch.busy
        try:
            for child in self._children:
                self._hand_out(child, batch)
            while busy:
                sentinels = {c.process.sentinel: c for c in busy.values()}
                ready = wait([*busy, *sentinels])
                done = {busy[r] for r in ready if isinstance(r, Connection)}
                done |= {sentinels[r] for r in ready if isinstance(r, int)}
                for child in done:
                    del busy[child.conn]
                    self._hand_out(self._collect(child, batch), batch)
        except BaseException:
            # Abandoned mid-batch (a Ctrl-C, a failed fork): start no more of it,
            # and wait for the jobs already running, as ThreadExecutor does. Their
            # answers are read and dropped: left in the pipes, a later run() would
            # take them for its own tasks' outcomes. Which children still owe an
            # answer is read off the children (``index``), not off ``busy``: the
            # interrupt may have come between the two bookkeepings. The batch is
            # not settled; its tasks come back through the broker.
            batch.pending.clear()
            try:
                self._drain(batch)
            except BaseException:
                # A second interrupt goes on at once; the children that still
                # owe an answer go too (a later run() forks fresh ones).
                self._retire([c for c in self._children if c.index != -1])
            raise

    def _hand_out(self, child: _Child, batch: _Batch) -> None:
        """Give ``child`` the next pending task (settling the ones it cannot run)."""
        while batch.pending:
            index = batch.pending.popleft()
            if batch.worker is not None and batch.worker.stopping:
                batch.results[index] = NotStarted()
                continue
            try:
                message = pickle.dumps(batch.tasks[index], _PROTOCOL)
            except Exception as error:
                batch.results[index] = Raised(error)
                continue
            child.index = index  # before the send: it may owe an answer from then
            try:
                child.conn.send_bytes(message)
            except OSError:  # it died while idle: the task has not started
                child.index = -1
                batch.pending.appendleft(index)
                child = self._replace(child)
                continue
            batch.busy[child.conn] = child
            return

    def _collect(self, child: _Child, batch: _Batch) -> _Child:
        """Store the outcome ``child`` sent (or its death); return the child to use."""
        index = child.index
        try:
            data = child.conn.recv_bytes() if child.conn.poll() else None
        except (EOFError, OSError):
            data = None
        child.index = -1  # only once read: until then it owes an answer
        if data is None:
            child.process.join(timeout=5.0)
            pid, code = child.process.pid or 0, child.process.exitcode
            batch.results[index] = Raised(ProcessDiedError(pid, code))
            return self._replace(child)
        outcome, stop = _load(data)
        batch.results[index] = outcome
        if isinstance(outcome, Raised) and isinstance(
            outcome.exception, SystemExit | KeyboardInterrupt
        ):
            batch.fatal.append(outcome.exception)
        if stop is not None:
            _pass_on(batch.worker, stop)
            # The child's copy of the worker is stopping, and would answer
            # NotStarted from now on: a fresh fork takes its place.
            return self._replace(child)
        return child

    # -- the children ------------------------------------------------------------------

    def _spawn(self) -> _Child:
        parent_end, child_end = self._context.Pipe(duplex=True)
        # The child must not keep the parent's ends open (its own and its
        # siblings'): then it sees EOF, and exits, when the parent dies.
        inherited = [parent_end, *(c.conn for c in self._children)]
        process = self._context.Process(
            target=_serve,
            args=(
                child_end,
                self._job,
                inherited,
                os.getpid(),
                threading.current_thread() is threading.main_thread(),
            ),
            name=f"{self._name}-{len(self._children)}",
            daemon=True,
        )
        process.start()
        child_end.close()
        return _Child(process, parent_end)

    def _replace(self, child: _Child) -> _Child:
        with contextlib.suppress(OSError):
            child.conn.close()
        child.process.join(timeout=1.0)
        if child.process.is_alive():
            child.process.kill()
            child.process.join()
        fresh = self._spawn()
        position = self._children.index(child)
        self._children[position] = fresh
        return fresh

    def _drain(self, batch: _Batch) -> None:
        """Wait for the answer of every child that owes one, and drop it. A child
        that died instead, or whose copy of the worker is stopping (it would
        answer NotStarted from now on), leaves the pool; such a stop is passed on
        to the worker, as ``_collect`` does."""
        while owing := {c.conn: c for c in self._children if c.index != -1}:
            sentinels = {c.process.sentinel: c for c in owing.values()}
            ready = wait([*owing, *sentinels])
            done = {owing[r] for r in ready if isinstance(r, Connection)}
            done |= {sentinels[r] for r in ready if isinstance(r, int)}
            for child in done:
                try:
                    data = child.conn.recv_bytes() if child.conn.poll() else None
                except (EOFError, OSError):
                    data = None
                stop = None if data is None else _load(data)[1]
                if stop is not None:
                    _pass_on(batch.worker, stop)
                if data is None or stop is not None:
                    self._retire([child])
                child.index = -1

    def _retire(self, children: list[_Child]) -> None:
        """Kill ``children`` (mid-job) and drop them from the pool."""
        for child in children:
            with contextlib.suppress(OSError):
                child.conn.close()
            child.process.kill()
            child.process.join()
            with contextlib.suppress(ValueError):
                self._children.remove(child)

    def _stop_children(self) -> None:
        children, self._children = self._children, []
        for child in children:
            with contextlib.suppress(OSError):
                child.conn.send_bytes(b"")  # the stop message
        for child in children:
            child.process.join(timeout=5.0)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()
            child.conn.close()


# -- in the child --------------------------------------------------------------------


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with(parent: int, *, kernel: bool) -> None:
    """End this process when ``parent`` (the worker) dies, even mid-job.

    The pipe's EOF tells an idle child, but a child inside a job (a busy loop, a
    hung C call) would run on as an orphan: when the supervisor SIGKILLs its
    worker (hard memory limit, a stop past its grace) the task is released and
    runs elsewhere while the orphan still runs it. A thread polls the parent pid,
    which needs the GIL but covers Python code. With ``kernel`` (the pool was
    forked from the parent's main thread), on Linux the kernel also sends SIGKILL
    at the parent's death (``PR_SET_PDEATHSIG``), which covers C code too. Not
    otherwise: the kernel sends it when the *thread* that forked the child ends,
    and a pool forked from a short-lived thread would die under the next caller's
    jobs.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="sergeant-pool-parent", daemon=True).start()
    if kernel:
        with contextlib.suppress(OSError, AttributeError):  # not Linux
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the lines above took effect
        os._exit(1)


def _serve(
    conn: Connection,
    job: Job,
    inherited: list[Connection],
    parent: int,
    kernel_watch: bool,
) -> None:
    """A child's loop: a task in, ``job(task)``, its outcome out, until told to stop."""
    _die_with(parent, kernel=kernel_watch)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for other in inherited:
        other.close()
    receive, send = conn.recv_bytes, conn.send_bytes
    worker = worker_of(job)  # this process's copy of the worker, if it is one
    while True:
        try:
            message = receive()
        except (EOFError, OSError):
            return  # the parent is gone
        if not message:
            return
        try:
            outcome: Any = job(pickle.loads(message))
        except BaseException as exc:  # every escape, even SystemExit, is an outcome
            outcome = Raised(exc)
        stop = worker.stop_request if worker is not None else None
        try:
            send(_dump(outcome, stop))
        except OSError:
            return


def _dump(outcome: Any, stop: _Stop | None = None) -> bytes:
    """Pickle ``outcome`` and the stop the child's copy of the worker was asked
    for; what cannot make the trip is replaced by its repr."""
    if isinstance(outcome, Raised):
        _note_traceback(outcome.exception)
    try:
        data = pickle.dumps((outcome, stop), _PROTOCOL)
        if isinstance(outcome, Raised) or stop is not None:
            pickle.loads(data)  # exceptions may pickle and still fail to unpickle
        return data
    except Exception as error:
        if not _round_trips(outcome):
            outcome = _portable(outcome, error)
        if stop is not None and not _round_trips(stop):
            reason, fault = stop
            stop = reason, WatchdogError(_repr(fault))
        return pickle.dumps((outcome, stop), _PROTOCOL)


def _round_trips(value: object) -> bool:
    try:
        pickle.loads(pickle.dumps(value, _PROTOCOL))
    except Exception:
        return False
    return True


def _pass_on(worker: Worker | None, stop: _Stop) -> None:
    """A stop asked of a child's copy of the worker, asked of the worker itself."""
    if worker is not None:
        reason, error = stop
        worker.request_stop(reason, error=error)


def _portable(outcome: Any, error: Exception) -> Outcome:
    if isinstance(outcome, Raised):
        what = _repr(outcome.exception)
        return Raised(RuntimeError(f"{what} (not picklable: {error!r})"))
    if isinstance(outcome, Returned):
        return Returned(_repr(outcome.value))
    return Raised(RuntimeError(f"the job returned {_repr(outcome)} ({error!r})"))


def _repr(value: object) -> str:
    try:
        return f"{type(value).__qualname__}: {value!r}"
    except Exception:
        return f"<{type(value).__qualname__} with a broken repr>"


def _note_traceback(exception: BaseException) -> None:
    if exception.__traceback__ is None:
        return
    lines = traceback.format_tb(exception.__traceback__)
    with contextlib.suppress(Exception):
        exception.add_note(
            f"Traceback in executor process {os.getpid()}:\n{''.join(lines)}"
        )


def _load(data: bytes) -> tuple[Outcome, _Stop | None]:
    try:
        outcome, stop = pickle.loads(data)
    except Exception as error:
        what = RuntimeError(f"cannot unpickle a child's outcome: {error!r}")
        return Raised(what), None
    return outcome, stop
