"""ProcessWatchdog: a separate killer process enforces deadlines with signals.

Theory of operation. On the first ``arm()`` in a process, the watchdog starts a
small killer process (``_killer.py``, standard library only) as a child of the
worker, connected by two pipes, and waits (at most ``_READY_TIMEOUT`` seconds) for
it to say it is ready: a killer that cannot run (psutil missing for a memory
limit, ``python=`` not a Python) raises ``WatchdogError`` with its reason, rather
than leaving a watchdog that enforces no deadline. ``arm()`` writes one 24-byte
record (generation, deadline, grace) down the first pipe; ``disarm()`` writes one
more. Neither waits for an answer, nor wakes the killer (it reads the pipe when it
wakes by itself, every ``poll_interval`` seconds or at a deadline): an arm/disarm
pair costs two ``os.write`` calls, a few microseconds.

The one bound on that: the pipe holds what the worker wrote since the killer last
woke. On Linux it is enlarged to ``_PIPE_SIZE`` (256 KiB: 10,922 records, 5,461
arm/disarm pairs per ``poll_interval``, more than a worker runs in the default
20 ms at 7 µs a pair); elsewhere it keeps the system's size (often 64 KiB: 1,365
pairs). A write that finds it full wakes the killer with SIGUSR1 and waits for it
to drain the pipe: the time the killer takes to be scheduled and read it (a few
milliseconds at most), not the rest of its ``poll_interval``.

At the deadline the killer writes the generation up the second pipe and sends
SIGINT to the worker; the watchdog's SIGINT handler turns it into ``TaskTimedOut``
in the task (the worker then runs ``on_timeout`` and settles the task as timed
out). If the arm is still not disarmed ``grace`` seconds after that SIGINT, the
killer sends SIGKILL: the worker process dies, its supervisor respawns it, and the
task comes back through its lease. (The grace runs from the SIGINT, not from the
deadline: a killer that learns of an arm late still gives the task all of it.)

Because the killer is another process, it fires whatever the worker is doing: a
task stuck in C code that holds the GIL (a catastrophic regex) does not even let a
watchdog *thread* run, but it cannot stop the killer. SIGINT also cuts blocking
system calls short (``time.sleep``, socket reads, lock waits: Python retries them
after running the handler, and the handler raises). What SIGINT cannot interrupt,
SIGKILL ends.

Whose SIGINT is it? The handler reads the generations the killer announced. A
SIGINT with no announcement is someone else's (a Ctrl-C, a supervisor) and is
passed to the handler that was installed before (``child.py``'s graceful stop, or
``KeyboardInterrupt``), so installing the watchdog changes nothing for them. An
announced generation that is not the current arm is a *late* SIGINT: the task
finished and disarmed while the killer was firing. It is ignored; that is how
``disarm`` stays a one-way write and still guarantees that no ``TaskTimedOut``
from an arm arrives after it returns (the handler raises only for the arm that is
current, and ``disarm`` ends it in one attribute store). Two SIGINTs that arrive
together are one signal to the process: a Ctrl-C landing in the same instant as
the killer's SIGINT is taken as the timeout.

Main thread only. Python runs signal handlers in the main thread, so the task must
run there: use it with ``SerialExecutor``, with ``work_batch``, or inside
``ProcessExecutor`` children (each child is its own process, with its own killer:
the watchdog notices the fork and starts a new one). ``arm()`` from another thread
raises ``WatchdogError``.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import logging
import os
import select
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sergeant.errors import ConfigError, TaskTimedOut, WatchdogError
from sergeant.supervision import parse_size

from ._killer import ARM, FIRED, READY, WAKE

_log = logging.getLogger(__name__)
_KILLER = str(Path(__file__).with_name("_killer.py"))
# Seconds to wait for a new killer's READY: an interpreter starts in tens of ms,
# and a busy machine gets ample slack before the watchdog gives up on it.
_READY_TIMEOUT = 5.0
# The pipe to the killer, on Linux. Larger means fewer SIGUSR1 wake-ups for a
# worker that arms faster than the killer polls; but every pipe's size counts
# against its user's fs/pipe-user-pages-soft (64 MiB by default), past which
# *every* new pipe of that user is cut to two pages: 256 KiB keeps 256 workers
# under it, and a worker needs 270,000 arm/disarm pairs a second to fill it
# between two 20 ms polls.
_PIPE_SIZE = 256 * 1024


class ProcessArm:
    """What ``ProcessWatchdog.arm`` returns.

    Attributes:
        generation: the arm's number, unique within the watchdog's process.
        timeout: seconds from arming to the SIGINT.
        grace: seconds from the SIGINT to the SIGKILL.
        deadline: the deadline as a ``time.monotonic()`` reading.
    """

    __slots__ = ("_fired", "_watchdog", "deadline", "generation", "grace", "timeout")

    def __init__(
        self, watchdog: ProcessWatchdog, generation: int, timeout: float, grace: float
    ) -> None:
        self._watchdog = watchdog
        self.generation = generation
        self.timeout = timeout
        self.grace = grace
        self.deadline = time.monotonic() + timeout
        self._fired = False

    @property
    def fired(self) -> bool:
        """True once ``TaskTimedOut`` was raised in the task for this arm."""
        return self._fired

    def __repr__(self) -> str:
        return (
            f"<ProcessArm #{self.generation} timeout={self.timeout} "
            f"grace={self.grace} fired={self._fired}>"
        )


def _check(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"ProcessWatchdog.arm {name} must be >= 0, got {value!r}")


class ProcessWatchdog:
    """Stops a task at its deadline from a separate killer process: SIGINT, SIGKILL.

    Arm and disarm from the main thread of the worker process. The killer process
    starts on the first ``arm()`` (or ``start()``) and exits on ``close()``, or by
    itself when the worker process dies.

    Args:
        memory_limit: RSS in bytes (or a size such as ``"512MiB"``) over which the
            killer SIGKILLs the worker, checked every ``memory_interval`` seconds
            from the killer's start until ``close()``; None: no limit.
        memory_interval: seconds between two RSS readings.
        poll_interval: how often the killer wakes to read the arms and disarms
            sent meanwhile and to check that the worker is alive. A deadline fires
            at most this late (the killer learns of an arm when it next wakes);
            larger values cost fewer wake-ups. Past 5,461 arm/disarm pairs in one
            interval (1,365 where the pipe cannot be enlarged), the pipe is full
            and the next write wakes the killer and waits for it to drain it.
        python: the interpreter that runs the killer (it must ``exec`` Python
            itself, not run it as a child, and have psutil for ``memory_limit``).

    Raises:
        ConfigError: a limit or interval is not a positive number.
    """

    def __init__(
        self,
        *,
        memory_limit: int | str | None = None,
        memory_interval: float = 1.0,
        poll_interval: float = 0.02,
        python: str = sys.executable,
    ) -> None:
        for name, value in (("memory_interval", memory_interval),
                            ("poll_interval", poll_interval)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"ProcessWatchdog.{name} must be a number")
            if not value > 0:
                raise ConfigError(f"ProcessWatchdog.{name} must be > 0, got {value!r}")
        self.memory_limit = None if memory_limit is None else parse_size(memory_limit)
        self.memory_interval = float(memory_interval)
        self.poll_interval = float(poll_interval)
        self.python = python
        self._generations = itertools.count(1)
        self._armed: ProcessArm | None = None
        self._owner = 0  # pid of the process that started the killer (0: none)
        self._killer = 0  # the killer's pid
        self._to_killer = -1
        self._from_killer = -1
        self._previous: Any = None  # the SIGINT handler we delegate to
        self._closed = False

    @property
    def killer_pid(self) -> int | None:
        """The pid of this process's killer, None before it starts."""
        return self._killer if self._owner == os.getpid() else None

    def start(self) -> None:
        """Start the killer now (for the memory limit before any task is armed).

        Raises:
            WatchdogError: not called from the main thread, after ``close()``, or
                the killer cannot start (the message says why).
        """
        self._ensure_started()

    def arm(self, timeout: float, *, grace: float) -> ProcessArm:
        """Watch the task about to run: SIGINT after ``timeout``, SIGKILL ``grace``
        seconds later. A new arm replaces an arm that was not disarmed.

        Raises:
            ConfigError: ``timeout`` or ``grace`` is negative or not a number.
            WatchdogError: not in the main thread, closed, or the killer cannot start.
            TaskTimedOut: the deadline passed before ``arm`` returned; the arm is
                already ended (nothing to disarm).
        """
        _check("timeout", timeout)
        _check("grace", grace)
        self._ensure_started()
        handle = ProcessArm(self, next(self._generations), timeout, grace)
        # Current before the killer hears of it: a 0 s deadline may fire at once.
        self._armed = handle
        record = ARM.pack(handle.generation, handle.deadline, handle.grace)
        try:
            self._send_arm(record)
            return handle
        except TaskTimedOut:
            # The deadline fired before arm() could return (a timeout shorter than
            # the write and a thread switch): the caller never gets the handle to
            # disarm, and the killer would SIGKILL the worker once the grace ran
            # out, whatever it does by then. End the arm here; the caller sees the
            # timeout (as ThreadWatchdog.arm does).
            self.disarm(handle)
            raise

    def _send_arm(self, record: bytes) -> None:
        """Write an arm record; a killer found dead is replaced first."""
        try:
            self._send(record)
        except BrokenPipeError:  # someone killed the killer: start another
            _log.warning("ProcessWatchdog: the killer process died; restarting it")
            self._forget_killer(reap=True)
            try:
                self._ensure_started()
            except WatchdogError:
                self._armed = None  # nothing watches it: the caller gets no handle
                raise
            self._send(record)

    def disarm(self, handle: object) -> bool:
        """Stop watching; True when no ``TaskTimedOut`` was raised for this arm.

        After it returns no ``TaskTimedOut`` from this arm is raised; one that
        surfaces before (even inside ``disarm``) means the task timed out: call
        ``disarm`` again, it is idempotent.

        Raises:
            WatchdogError: ``handle`` did not come from this watchdog's ``arm``.
        """
        if not isinstance(handle, ProcessArm) or handle._watchdog is not self:
            raise WatchdogError(f"not a handle of this ProcessWatchdog: {handle!r}")
        if self._armed is handle:
            self._armed = None  # from here on the handler ignores this arm
            if self._owner == os.getpid():
                # OSError: the killer is gone, there is nothing left to disarm.
                with contextlib.suppress(OSError):
                    self._send(ARM.pack(-handle.generation, 0.0, 0.0))
        return not handle._fired

    def close(self) -> None:
        """Stop this process's killer and restore the previous SIGINT handler."""
        self._closed = True
        self._armed = None
        if self._owner != os.getpid():
            return  # nothing started here (a forked copy leaves the parent's alone)
        self._forget_killer(reap=True)
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) == self._on_sigint
        ):
            previous = self._previous
            signal.signal(
                signal.SIGINT, signal.SIG_DFL if previous is None else previous
            )

    # -- the killer ----------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._closed:
            raise WatchdogError("ProcessWatchdog.arm() after close()")
        if threading.current_thread() is not threading.main_thread():
            raise WatchdogError(
                "ProcessWatchdog needs tasks to run in the main thread (signals are "
                "handled there): use SerialExecutor, work_batch or ProcessExecutor, "
                f"not {threading.current_thread().name!r}"
            )
        if self._owner == os.getpid():
            return
        if self._owner:  # a forked copy: the killer and pipes are the parent's
            self._forget_killer(reap=False)
            self._armed = None
        self._spawn()
        # Checked once per process (getsignal is slow): a handler installed after
        # the first arm replaces ours, and its owner then gets the killer's SIGINT.
        # Installed once the killer runs (it sends nothing before an arm), so a
        # killer that cannot start leaves the SIGINT handler as it was.
        if signal.getsignal(signal.SIGINT) != self._on_sigint:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _spawn(self) -> None:
        """Start the killer and wait for its READY; WatchdogError if it fails."""
        to_read, to_write = os.pipe()
        back_read, back_write = os.pipe()
        if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux
            # OSError: over the user's pipe-buffer limit: the default size works,
            # only with more SIGUSR1 wake-ups under a flood of arms.
            with contextlib.suppress(OSError):
                fcntl.fcntl(to_write, fcntl.F_SETPIPE_SZ, _pipe_size())
        argv = [self.python, "-I", _KILLER, "--pid", str(os.getpid()),
                "--poll", repr(self.poll_interval),
                "--memory-limit", str(self.memory_limit or 0),
                "--memory-every", repr(self.memory_interval)]  # fmt: skip
        try:
            pid = os.posix_spawnp(
                self.python,
                argv,
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, to_read, 0),
                    (os.POSIX_SPAWN_DUP2, back_write, 1),
                ],
                # A Ctrl-C in a terminal signals the whole process group: blocked
                # until the killer ignores SIGINT, or one arriving while its
                # interpreter starts would kill it (and fail the arm).
                setsigmask=[signal.SIGINT],
            )
        except OSError as error:
            for fd in (to_read, to_write, back_read, back_write):
                os.close(fd)
            raise WatchdogError(f"cannot start the killer process: {error}") from error
        os.close(to_read)
        os.close(back_write)
        os.set_blocking(to_write, False)  # a full pipe: see _send
        os.set_blocking(back_read, False)
        try:
            self._await_ready(pid, back_read)
        except BaseException:  # WatchdogError, or a Ctrl-C while waiting
            os.close(to_write)
            os.close(back_read)
            _stop(pid)
            raise
        self._owner, self._killer = os.getpid(), pid
        self._to_killer, self._from_killer = to_write, back_read

    def _await_ready(self, pid: int, fd: int) -> None:
        """Wait for the killer's READY byte on ``fd``, at most ``_READY_TIMEOUT`` s.

        Without this, a killer that cannot run (no psutil for a memory limit, a
        ``python`` that is not Python) exits unseen: every arm then only restarts
        it, and no deadline is enforced at all. The killer answers READY once it is
        set up, or instead why it cannot run, then exits.

        Raises:
            WatchdogError: with the killer's reason, its exit status, or a timeout.
        """
        deadline = time.monotonic() + _READY_TIMEOUT
        answer = b""
        ended = False
        while not ended and (remaining := deadline - time.monotonic()) > 0:
            if not _ready(fd, select.POLLIN, remaining):
                continue
            with contextlib.suppress(BlockingIOError):
                # One byte first: anything after READY is FIRED records.
                chunk = os.read(fd, 4096 if answer else 1)
                if not answer and chunk == READY:
                    return
                ended = not chunk
                answer += chunk
        status = _stop(pid)
        killer = f"the ProcessWatchdog killer process ({self.python} {_KILLER})"
        reason = answer.decode(errors="replace").strip()
        if reason:
            raise WatchdogError(f"{killer} cannot run: {reason}")
        if not ended:
            raise WatchdogError(
                f"{killer} was not ready after {_READY_TIMEOUT:g} s; killed it"
            )
        raise WatchdogError(
            f"{killer} exited with status {status} before it was ready "
            "(is python= a Python interpreter? its stderr may say more)"
        )

    def _send(self, record: bytes) -> None:
        """Write one record to the killer: at once, unless the pipe is full.

        The pipe is non-blocking. A full one (the killer drains it only when it
        wakes) would otherwise hold the write until the killer's next poll: instead
        wake the killer with SIGUSR1 and wait for room, which takes as long as the
        killer needs to run and read, not the rest of its ``poll_interval``.

        Raises:
            BrokenPipeError: the killer is gone.
        """
        fd = self._to_killer
        while True:
            try:
                os.write(fd, record)  # < PIPE_BUF: all of it, or BlockingIOError
            except BlockingIOError:
                pass
            else:
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._killer, WAKE)
            # Writable when there is room, or the killer is gone (EPIPE then).
            _ready(fd, select.POLLOUT, 1.0)

    def _forget_killer(self, *, reap: bool) -> None:
        """Close our ends of the pipes; ``reap``: wait for the killer to exit."""
        for fd in (self._to_killer, self._from_killer):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_killer = self._from_killer = -1
        killer, self._killer, self._owner = self._killer, 0, 0
        if reap and killer:
            # EOF on its stdin would make it exit, but a process forked after it
            # started (a ProcessExecutor's pool) holds copies of the pipe, and
            # the EOF never comes: tell it, while it is our unreaped child (its
            # pid cannot be anyone else's then; with SIGCHLD ignored the kernel
            # reaps it, and waitpid says it is not ours any more).
            with contextlib.suppress(ChildProcessError, ProcessLookupError):
                if os.waitpid(killer, os.WNOHANG) == (0, 0):
                    os.kill(killer, signal.SIGTERM)
            _reap(killer)

    # -- the signal handler ----------------------------------------------------------

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        announced = self._announced()
        if not announced:
            self._delegate(signum, frame)
            return
        armed = self._armed
        if armed is not None and armed.generation in announced:
            armed._fired = True
            raise TaskTimedOut
        # Otherwise a late SIGINT for an arm that was disarmed meanwhile: ignore it.

    def _announced(self) -> list[int]:
        """The generations the killer fired since the last look (never blocks)."""
        if self._owner != os.getpid() or self._from_killer < 0:
            return []
        data = b""
        while True:
            try:
                chunk = os.read(self._from_killer, 4096)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            data += chunk
        whole = len(data) - len(data) % FIRED.size
        return [generation for (generation,) in FIRED.iter_unpack(data[:whole])]

    def _delegate(self, signum: int, frame: FrameType | None) -> None:
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:  # SIG_DFL (or a handler not set from Python): die as by default
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)


def _ready(fd: int, event: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``event`` (or an error, or EOF) on ``fd``.

    ``poll``, not ``select``: a worker with many connections may have its pipes
    past ``FD_SETSIZE`` (1024), which ``select`` cannot watch.
    """
    poller = select.poll()
    poller.register(fd, event)
    return bool(poller.poll(timeout * 1000))


@functools.cache
def _pipe_size() -> int:
    """``_PIPE_SIZE``, or the system's maximum if that is smaller."""
    try:
        maximum = int(Path("/proc/sys/fs/pipe-max-size").read_text())
    except (OSError, ValueError):
        return _PIPE_SIZE
    return min(_PIPE_SIZE, maximum)


def _stop(pid: int) -> int | None:
    """SIGKILL our child ``pid`` if it still runs, and reap it.

    Returns:
        Its exit code (negative: the signal that ended it); None if it was
        reaped elsewhere.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)  # a zombie keeps its status
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status)


def _reap(pid: int, timeout: float = 2.0) -> None:
    """Wait for our child ``pid`` to exit; SIGKILL it if it takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() > deadline:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            return
        time.sleep(0.005)
