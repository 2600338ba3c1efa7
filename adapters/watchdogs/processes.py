"""ProcessWatchdog: a separate killer process enforces deadlines with signals.

Theory of operation. On the first ``arm()`` in a process, the watchdog starts a
small killer process (``_killer.py``, standard library only) as a child of the
worker, connected by two pipes. ``arm()`` writes one 24-byte record (generation,
deadline, grace) down the first pipe; ``disarm()`` writes one more. Neither waits
for an answer, nor wakes the killer (it reads the pipe when it wakes by itself, every
``poll_interval`` seconds or at a deadline): an arm/disarm pair costs two
``os.write`` calls, a few microseconds. At the deadline the
killer writes the generation up the second pipe and sends SIGINT to the worker; the
watchdog's SIGINT handler turns it into ``TaskTimedOut`` in the task (the worker
then runs ``on_timeout`` and settles the task as timed out). If the arm is still
not disarmed ``grace`` seconds later, the killer sends SIGKILL: the worker process
dies, its supervisor respawns it, and the task comes back through its lease.

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
import itertools
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sergeant.errors import ConfigError, TaskTimedOut, WatchdogError
from sergeant.supervision import parse_size

from ._killer import ARM, FIRED

_log = logging.getLogger(__name__)
_KILLER = str(Path(__file__).with_name("_killer.py"))


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
            larger values cost fewer wake-ups.
        python: the interpreter that runs the killer.

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
            WatchdogError: not called from the main thread, or after ``close()``.
        """
        self._ensure_started()

    def arm(self, timeout: float, *, grace: float) -> ProcessArm:
        """Watch the task about to run: SIGINT after ``timeout``, SIGKILL ``grace``
        seconds later. A new arm replaces an arm that was not disarmed.

        Raises:
            ConfigError: ``timeout`` or ``grace`` is negative or not a number.
            WatchdogError: not in the main thread, closed, or the killer cannot start.
        """
        _check("timeout", timeout)
        _check("grace", grace)
        self._ensure_started()
        handle = ProcessArm(self, next(self._generations), timeout, grace)
        # Current before the killer hears of it: a 0 s deadline may fire at once.
        self._armed = handle
        record = ARM.pack(handle.generation, handle.deadline, handle.grace)
        try:
            os.write(self._to_killer, record)
        except BrokenPipeError:  # someone killed the killer: start another
            _log.warning("ProcessWatchdog: the killer process died; restarting it")
            self._forget_killer(reap=True)
            self._ensure_started()
            os.write(self._to_killer, record)
        return handle

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
                    os.write(self._to_killer, ARM.pack(-handle.generation, 0.0, 0.0))
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
        # Checked once per process (getsignal is slow): a handler installed after
        # the first arm replaces ours, and its owner then gets the killer's SIGINT.
        if signal.getsignal(signal.SIGINT) != self._on_sigint:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        self._spawn()

    def _spawn(self) -> None:
        to_read, to_write = os.pipe()
        back_read, back_write = os.pipe()
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
            )
        except OSError as error:
            for fd in (to_read, to_write, back_read, back_write):
                os.close(fd)
            raise WatchdogError(f"cannot start the killer process: {error}") from error
        os.close(to_read)
        os.close(back_write)
        os.set_blocking(back_read, False)
        self._owner, self._killer = os.getpid(), pid
        self._to_killer, self._from_killer = to_write, back_read

    def _forget_killer(self, *, reap: bool) -> None:
        """Close our ends of the pipes; ``reap``: wait for the killer to exit."""
        for fd in (self._to_killer, self._from_killer):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._to_killer = self._from_killer = -1
        killer, self._killer, self._owner = self._killer, 0, 0
        if reap and killer:
            _reap(killer)  # EOF on its stdin makes it exit at once

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
