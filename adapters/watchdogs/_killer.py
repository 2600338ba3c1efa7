"""The killer process of ``ProcessWatchdog``: run as a script, standard library only.

``ProcessWatchdog`` starts it with ``python -I _killer.py --pid PID ...`` as a child
of the worker process PID. It is a separate process so that it keeps running when
the worker's interpreter cannot: a task stuck in C code that holds the GIL stops
every thread of the worker, never this process.

Wire protocol (fixed-size records, each written with one ``os.write`` smaller than
``PIPE_BUF``, so a record is never split or interleaved):

- stdin, worker -> killer: ``ARM`` records ``(generation, deadline, grace)``. A
  positive generation arms (the deadline is a ``time.monotonic()`` reading, which is
  the system-wide ``CLOCK_MONOTONIC``, so both processes agree on it), a negative one
  disarms that generation. The worker has at most one arm at a time; a new arm
  replaces the previous one.
- stdout, killer -> worker: first one byte, ``READY``, once the killer is set up
  (the worker waits for it, so a killer that cannot run is an error in the worker,
  not a watchdog that silently enforces nothing); or instead a one-line reason
  why it cannot run, then exit status 2. After ``READY``: ``FIRED`` records
  ``(generation,)``, written *before* the SIGINT they announce, so the worker's
  SIGINT handler can tell the killer's signal (a record is waiting) from anyone
  else's (none is).
- SIGUSR1, worker -> killer: "read your stdin now". The worker sends it only when
  the pipe is full, so that its write waits for the killer to drain the pipe
  rather than for the killer's next poll.

At the deadline the killer writes the record and sends SIGINT; ``grace`` seconds
after that SIGINT, if that arm is still not disarmed, it sends SIGKILL and exits.
It also exits on SIGTERM (the worker's ``close()``: a process forked from the
worker may hold a copy of the pipe, so EOF alone may never come), when stdin
reaches EOF (the worker closed it, or died), when its parent is no longer the
worker (the worker died and it was re-parented), and after killing the worker
for using more than ``--memory-limit`` bytes of RSS (read with psutil, imported
only when a limit is set). It reads its stdin only when it wakes
(every ``--poll`` seconds, at a deadline, or on SIGUSR1): see ``Killer.serve``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import struct
import sys
import time
from typing import Any

ARM = struct.Struct("<qdd")
FIRED = struct.Struct("<q")
READY = b"\x01"
WAKE = signal.SIGUSR1
CANNOT_RUN = 2  # the exit status after writing why instead of READY


class _Arm:
    __slots__ = ("deadline", "fired_at", "generation", "grace")

    def __init__(self, generation: int, deadline: float, grace: float) -> None:
        self.generation = generation
        self.deadline = deadline
        self.grace = grace
        self.fired_at: float | None = None  # when the SIGINT went out

    def due(self) -> float:
        """When to act next: the deadline, then ``grace`` after the SIGINT.

        The grace runs from the SIGINT, not from the deadline: the killer may learn
        of an arm late (it reads arms only when it wakes), and a grace counted from
        the deadline would then be spent before the task was even told to stop.
        """
        if self.fired_at is None:
            return self.deadline
        return self.fired_at + self.grace


class Killer:
    """The killer's state: the current arm, the input buffer, the memory probe."""

    def __init__(
        self,
        pid: int,
        *,
        poll: float,
        memory_limit: int,
        memory_every: float,
        probe: Any = None,
    ) -> None:
        self.pid = pid
        self.poll = poll
        self.memory_limit = memory_limit
        self.memory_every = memory_every
        self.arm: _Arm | None = None
        self.buffer = b""
        self.probe = probe  # a psutil.Process when there is a memory limit
        self.next_probe = time.monotonic()
        # SIGUSR1 wakes the sleep in serve(): its C handler writes a byte here.
        self.wake, wake_write = os.pipe()
        os.set_blocking(self.wake, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(WAKE, lambda signum, frame: None)

    def serve(self) -> None:
        """Loop until the worker is gone, stdin closes, or the worker was killed.

        The killer never waits *on* the pipe: it sleeps until the next deadline or
        for ``poll`` seconds, whichever is sooner, then reads everything the worker
        wrote meanwhile. So the worker's writes do not wake it (an arm/disarm pair
        costs the worker two plain writes and no context switch), at the price of
        learning of an arm up to ``poll`` seconds late: a deadline nearer than that
        fires at most ``poll`` seconds after it. Only a worker whose write finds
        the pipe full wakes it, with SIGUSR1, to drain the pipe at once.
        """
        os.set_blocking(0, False)
        os.set_blocking(1, False)
        while True:
            if not self.read():
                return
            if os.getppid() != self.pid:
                return  # the worker died: we were re-parented
            now = time.monotonic()
            arm = self.arm
            # Everything the worker wrote up to now has been read, so a disarm
            # sent before the deadline has been applied and this arm is current.
            if arm is not None and now >= arm.due() and self.act(arm, now):
                return
            if self.probe is not None and now >= self.next_probe:
                self.next_probe = now + self.memory_every
                if self.over_memory():
                    return
            self.sleep(self.wait())

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or less if SIGUSR1 asks for the pipe to be read."""
        if select.select([self.wake], [], [], seconds)[0]:
            with contextlib.suppress(BlockingIOError):
                while os.read(self.wake, 4096):
                    pass

    def wait(self) -> float:
        now = time.monotonic()
        wait = self.poll
        if self.arm is not None:
            wait = min(wait, self.arm.due() - now)
        if self.probe is not None:
            wait = min(wait, self.next_probe - now)
        return max(wait, 0.0)

    def read(self) -> bool:
        """Apply every record the worker has written so far; False at EOF."""
        while True:
            try:
                data = os.read(0, 65536)
            except BlockingIOError:
                return True
            if not data:
                return False
            self.buffer += data
            whole = len(self.buffer) - len(self.buffer) % ARM.size
            for generation, deadline, grace in ARM.iter_unpack(self.buffer[:whole]):
                if generation > 0:
                    self.arm = _Arm(generation, deadline, grace)
                elif self.arm is not None and self.arm.generation == -generation:
                    self.arm = None
            self.buffer = self.buffer[whole:]

    def act(self, arm: _Arm, now: float) -> bool:
        """Fire (SIGINT) or escalate (SIGKILL); True when the killer is done."""
        fired_at = arm.fired_at
        try:
            if fired_at is None:
                arm.fired_at = now
                # Non-blocking: if a foreign SIGINT handler never reads the
                # announcements, dropping one beats blocking the escalation.
                with contextlib.suppress(BlockingIOError):
                    os.write(1, FIRED.pack(arm.generation))
                os.kill(self.pid, signal.SIGINT)
                return False
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, BrokenPipeError):
            return True  # the worker is gone already
        late = now - arm.deadline
        sys.stderr.write(
            f"sergeant ProcessWatchdog: killed worker pid {self.pid} with SIGKILL: "
            f"its task was still running {late:.2f} s after its deadline, "
            f"{now - fired_at:.2f} s after the SIGINT (grace {arm.grace:g} s); "
            "SIGINT did not stop it\n"
        )
        return True

    def over_memory(self) -> bool:
        """Kill the worker if its RSS is over the limit; True when it was killed."""
        try:
            rss = self.probe.memory_info().rss
        except Exception:  # psutil.Error: the worker is exiting
            return False
        if rss <= self.memory_limit:
            return False
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        sys.stderr.write(
            f"sergeant ProcessWatchdog: killed worker pid {self.pid} with SIGKILL: "
            f"rss {rss / 2**20:.1f} MiB over the limit "
            f"{self.memory_limit / 2**20:.1f} MiB\n"
        )
        return True


def _cannot_run(reason: str) -> int:
    """Tell the worker why the killer cannot run (instead of ``READY``).

    Only the worker is told: it raises the reason as ``WatchdogError``. A copy on
    stderr would say it twice, or, when the worker is gone, to nobody concerned.
    """
    # OSError: the worker is gone (EPIPE): nobody is waiting for an answer.
    with contextlib.suppress(OSError):
        os.write(1, reason.encode(errors="replace"))
    return CANNOT_RUN


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, tell the worker READY, serve until it is gone.

    Exit status 0 when the worker went away (there is nobody left to watch);
    ``CANNOT_RUN`` after telling the worker why the killer cannot run, which the
    worker raises as ``WatchdogError`` rather than running without deadlines.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--poll", type=float, default=0.02)
    parser.add_argument("--memory-limit", type=int, default=0)
    parser.add_argument("--memory-every", type=float, default=1.0)
    args = parser.parse_args(argv)
    # A Ctrl-C in a terminal signals the whole process group: it is for the worker.
    # The worker starts us with SIGINT blocked, so none can kill us before this.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    # The worker's close() stops us with SIGTERM; a worker that ignores SIGTERM
    # passed that on through exec.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parent = os.getppid()
    if parent != args.pid:
        # Either the worker died before we started (nobody reads this), or the
        # interpreter is a wrapper that ran us as its child instead of exec'ing.
        return _cannot_run(
            f"its parent is pid {parent}, not the worker pid {args.pid}: the worker "
            "died, or python= is a wrapper that does not exec the interpreter"
        )
    probe = None
    if args.memory_limit:
        # Only for a memory limit: a plain killer needs the standard library only.
        try:
            import psutil  # noqa: PLC0415
        except ImportError as error:
            return _cannot_run(
                f"a memory limit needs psutil, and {sys.executable} cannot import "
                f"it ({error}); install psutil for that interpreter, or pass "
                "python= one that has it"
            )
        try:
            probe = psutil.Process(args.pid)
        except psutil.NoSuchProcess:
            return 0  # the worker is already gone
    killer = Killer(
        args.pid,
        poll=args.poll,
        memory_limit=args.memory_limit,
        memory_every=args.memory_every,
        probe=probe,
    )
    try:
        os.write(1, READY)
    except BrokenPipeError:
        return 0  # the worker is gone
    killer.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
