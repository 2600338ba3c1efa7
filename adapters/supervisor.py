"""The supervisor: keeps N worker processes running and carries out the policy.

A driving adapter: ``sergeant.supervision.SupervisionPolicy`` decides (respawn or
retire, recycle or kill, crash back-off); this module observes the children (exit
codes, RSS through psutil) and acts. Children are fresh interpreters
(``python -m sergeant.adapters.child TARGET --owner OWNER``), never forks.

The supervisor never imports the target: a helper process started like the
children (``sergeant.adapters.releaser``) builds one worker, never run, to learn
the queue and to ``release_owner`` on the children's own broker. Each child leases
under its own owner (``queue:host:supervisor-pid:slot:generation``), so when a
child exits or is killed its leased tasks are ready again at once, not after their
lease. Delivery counts stand: a killed worker's task counts a crash delivery,
and ``max_deliveries`` eventually dead-letters a task that keeps killing workers.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

import attrs
import psutil

from sergeant.errors import BrokerError
from sergeant.supervision import (
    ExitVerdict,
    MemoryVerdict,
    StopReason,
    SupervisionPolicy,
)

from .child import SETUP_ERROR
from .releaser import Releaser

__all__ = ["ChildExit", "SupervisionPolicy", "Supervisor"]

logger = logging.getLogger("sergeant.supervisor")


@attrs.frozen(kw_only=True)
class ChildExit:
    """What happened to one child process.

    Attributes:
        slot: the worker slot (0 .. workers - 1) the child filled.
        pid: its process id.
        owner: the name it held leases under.
        exit_code: its exit code; negative for a signal (``-9`` for SIGKILL).
        reason: why it left, in words (``"recycle"``, ``"crashed (exit 1)"``,
            ``"killed: rss ... over the hard limit ..."``).
        released: how many leased tasks were made ready again when it left.
        lifetime: seconds it lived.
    """

    slot: int
    pid: int
    owner: str
    exit_code: int
    reason: str
    released: int
    lifetime: float


@attrs.define
class _Child:
    owner: str
    process: subprocess.Popen[bytes]
    started: float
    ps: psutil.Process | None
    recycling: bool = False
    kill_reason: str | None = None


@attrs.define
class _Slot:
    index: int
    generation: int = 0
    child: _Child | None = None
    respawn_at: float | None = 0.0  # None: retired, never respawned
    rapid_crashes: int = 0


class _ReleaseLine:
    """Releases dead children's leases one after another, in a thread of its own.

    A release can take up to ``RELEASE_TIMEOUT`` (60 s) while the broker rides out
    an outage. Made inline, it held up the supervisor's loop for that long per
    exit: no reaping, no respawning, no memory checks, so a child could grow past
    the hard limit unchecked. Here the loop hands the release over and goes on;
    each ``then(released)`` runs once its release is done (0 when it failed: the
    tasks come back when their leases lapse).
    """

    def __init__(self, releaser: Releaser) -> None:
        self._releaser = releaser
        self._jobs: queue.SimpleQueue[tuple[str, Callable[[int], None]] | None]
        self._jobs = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="sergeant-releases", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def submit(self, owner: str, then: Callable[[int], None]) -> None:
        self._jobs.put((owner, then))

    def finish(self) -> None:
        """Carry out every release submitted, then end the thread."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            owner, then = job
            try:
                released = self._releaser.release(owner)
            except BrokerError as error:
                logger.warning(
                    "could not release the tasks of %s (they come back when their "
                    "leases lapse): %s", owner, error,
                )  # fmt: skip
                released = 0
            except Exception:  # a bug here must not strand every later release
                logger.exception("releasing the tasks of %s failed", owner)
                released = 0
            try:
                then(released)
            except Exception:  # likewise
                logger.exception("recording the exit of %s failed", owner)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


class Supervisor:
    """Runs ``policy.workers`` processes of the worker ``target`` until stopped.

    Args:
        target: ``"package.module:attr"``, a callable taking ``owner=`` and returning
            a ``Worker``; it must be importable in a fresh interpreter started in
            ``cwd`` (``python -m`` puts ``cwd`` first on ``sys.path``).
        policy: how many workers, memory limits, stop grace, crash back-off.
        python: the interpreter that runs the children.
        cwd: the children's working directory (default: ours).
        env: extra environment variables for the children (added to ours).
        log_level: the children's logging level.
        event_log: whether each child logs its worker's events with an
            ``EventLogger`` (turn off when the target attaches its own).
        tick: seconds between two looks at the children; a stop request, an exit
            or a memory reading is acted on within one tick.
        handle_signals: install SIGTERM/SIGINT handlers while ``run()`` runs (only
            possible in the main thread; elsewhere call ``request_stop``).
        clock: monotonic seconds (for lifetimes and back-off).

    Raises:
        SergeantError: the target cannot be loaded or does not build a worker in
            a process started like the children (see ``sergeant.adapters.releaser``).
    """

    def __init__(
        self,
        target: str,
        policy: SupervisionPolicy,
        *,
        python: str = sys.executable,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        log_level: str = "INFO",
        event_log: bool = True,
        tick: float = 0.25,
        handle_signals: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.policy = policy
        self.python = python
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.log_level = log_level
        self.event_log = event_log
        self.tick = tick
        self.handle_signals = handle_signals
        self.clock = clock
        self.hostname = socket.gethostname()
        self._releaser = Releaser(
            target,
            owner=f"releaser:{self.hostname}:{os.getpid()}",
            python=python,
            cwd=cwd,
            env=self.env,
        )
        self.queue = self._releaser.queue
        self._releases = _ReleaseLine(self._releaser)
        #: The most recent exits, oldest first (bounded: a long run recycles often).
        self.exits: collections.deque[ChildExit] = collections.deque(maxlen=1000)
        self._slots = [_Slot(index) for index in range(policy.workers)]
        self._stop_requested = False
        self._hurry = False
        self._stopping = False
        self._wake = threading.Event()

    # -- public ------------------------------------------------------------------

    def run(self) -> None:
        """Supervise until stopped or until every child retired; then clean up.

        Returns after a stop request (``request_stop``, SIGTERM, SIGINT) once every
        child has stopped (within ``policy.stop_grace``, else killed), or when all
        children asked to stop themselves. Closes the broker: run once.
        """
        previous = self._install_signals()
        self._releases.start()
        try:
            self._loop()
        finally:
            try:
                self._shutdown()
            finally:
                try:
                    self._releases.finish()  # every exit's release, then recorded
                finally:
                    for signum, handler in previous.items():
                        signal.signal(signum, handler)
                    self._releaser.close()

    def request_stop(self) -> None:
        """Ask ``run()`` to stop every child and return (thread-safe)."""
        self._stop_requested = True
        self._wake.set()

    def pids(self) -> dict[int, int]:
        """The pid of each live child, by slot."""
        return {
            slot.index: slot.child.process.pid
            for slot in self._slots
            if slot.child is not None
        }

    # -- the loop ----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop_requested:
            self._spawn_due()
            self._wake.wait(self.tick)
            self._reap()
            if all(slot.respawn_at is None for slot in self._slots):
                logger.info("every worker of %s retired", self.queue)
                return
            self._check_memory()

    def _spawn_due(self) -> None:
        now = self.clock()
        for slot in self._slots:
            due = slot.respawn_at
            if slot.child is None and due is not None and due <= now:
                self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        slot.generation += 1
        owner = self._owner(f"{slot.index}:{slot.generation}")
        command = [
            self.python, "-m", "sergeant.adapters.child", self.target,
            "--owner", owner, "--log-level", self.log_level,
            "--parent", str(os.getpid()),
        ]  # fmt: skip
        if not self.event_log:
            command.append("--no-event-log")
        try:
            process = subprocess.Popen(
                command, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL
            )
        except OSError as error:
            slot.rapid_crashes += 1
            delay = self.policy.respawn_delay(rapid_crashes=slot.rapid_crashes)
            slot.respawn_at = self.clock() + delay
            logger.error("cannot start worker %d (%s); again in %.1f s",
                         slot.index, error, delay)  # fmt: skip
            return
        try:
            ps: psutil.Process | None = psutil.Process(process.pid)
        except psutil.Error:
            ps = None  # already gone: the next reap reports it
        slot.child = _Child(owner=owner, process=process, started=self.clock(), ps=ps)
        slot.respawn_at = 0.0
        logger.info("spawned worker %d (pid %d, owner %s)", slot.index, process.pid,
                    owner)  # fmt: skip

    def _reap(self) -> None:
        for slot in self._slots:
            child = slot.child
            if child is not None:
                code = child.process.poll()
                if code is not None:
                    self._on_exit(slot, child, code)

    def _on_exit(self, slot: _Slot, child: _Child, code: int) -> None:
        """Decide the slot's future now; release the child's tasks off the loop.

        The exit is logged and recorded in ``exits`` once its release is done
        (``_ReleaseLine``), with how many tasks came back.
        """
        slot.child = None
        now = self.clock()
        lifetime = now - child.started
        reason = self._describe(child, code)
        crash = self.policy.is_crash(code)
        level = logging.WARNING if crash and not self._stopping else logging.INFO
        if self.policy.on_exit(code, stopping=self._stopping) is ExitVerdict.RETIRE:
            slot.respawn_at = None
            then = "retired"
        else:
            backs_off = self.policy.backs_off(code, lifetime=lifetime)
            slot.rapid_crashes = slot.rapid_crashes + 1 if backs_off else 0
            delay = self.policy.respawn_delay(rapid_crashes=slot.rapid_crashes)
            slot.respawn_at = now + delay
            then = f"respawning in {delay:.1f} s"
        pid = child.process.pid

        def record(released: int) -> None:
            self.exits.append(ChildExit(
                slot=slot.index, pid=pid, owner=child.owner, exit_code=code,
                reason=reason, released=released, lifetime=lifetime,
            ))  # fmt: skip
            logger.log(level, "worker %d (pid %d) exited: %s; released %d tasks; %s",
                       slot.index, pid, reason, released, then)  # fmt: skip

        self._releases.submit(child.owner, record)

    @staticmethod
    def _describe(child: _Child, code: int) -> str:
        if child.kill_reason is not None:
            return child.kill_reason
        reason = StopReason.from_exit_code(code)
        if reason is not None:
            return reason.value
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        if code == SETUP_ERROR:
            return f"setup error (exit {code}; see its message above)"
        return f"crashed (exit {code})"

    # -- memory --------------------------------------------------------------------

    def _check_memory(self) -> None:
        for slot in self._slots:
            child = slot.child
            if child is None or child.ps is None or child.kill_reason is not None:
                continue
            try:
                rss = child.ps.memory_info().rss
            except psutil.Error:
                continue  # exiting: the next reap sees it
            verdict = self.policy.on_memory(rss)
            if verdict is MemoryVerdict.KILL:
                self._kill_for_memory(slot, child, rss)
            elif verdict is MemoryVerdict.RECYCLE and not child.recycling:
                child.recycling = True
                logger.info(
                    "asking worker %d (pid %d) to recycle: rss %s over the soft "
                    "limit %s", slot.index, child.process.pid, _mib(rss),
                    _mib(self.policy.soft_memory or 0),
                )  # fmt: skip
                self._signal(child, signal.SIGUSR1)

    def _kill_for_memory(self, slot: _Slot, child: _Child, rss: int) -> None:
        limit = _mib(self.policy.hard_memory or 0)
        child.kill_reason = f"killed: rss {_mib(rss)} over the hard limit {limit}"
        logger.warning("killing worker %d (pid %d): rss %s over the hard limit %s",
                       slot.index, child.process.pid, _mib(rss), limit)  # fmt: skip
        self._signal(child, signal.SIGKILL)
        try:
            code = child.process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            return  # the next reap sees it go
        self._on_exit(slot, child, code)  # release its tasks and respawn now

    @staticmethod
    def _signal(child: _Child, signum: int) -> None:
        # Already gone (ProcessLookupError): the next reap sees it.
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signum)

    # -- stopping --------------------------------------------------------------------

    def _shutdown(self) -> None:
        """SIGTERM every child, wait ``stop_grace``, SIGKILL the rest, release all."""
        self._stopping = True
        for slot in self._slots:
            slot.respawn_at = None
        live = [slot.child for slot in self._slots if slot.child is not None]
        if not live:
            return
        grace = self.policy.stop_grace
        logger.info("stopping %d workers (grace %.1f s)", len(live), grace)
        for running in live:
            self._signal(running, signal.SIGTERM)
        deadline = self.clock() + grace
        while self.pids() and self.clock() < deadline and not self._hurry:
            time.sleep(0.05)
            self._reap()
        for slot in self._slots:
            child = slot.child
            if child is None:
                continue
            child.kill_reason = f"killed: still running {grace:.1f} s after SIGTERM"
            logger.warning("killing worker %d (pid %d): %s", slot.index,
                           child.process.pid, child.kill_reason)  # fmt: skip
            self._signal(child, signal.SIGKILL)
            self._on_exit(slot, child, child.process.wait())

    def _install_signals(self) -> dict[int, Any]:
        if not self.handle_signals:
            return {}
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only plain assignments here: taking a lock (Event.set) in a signal
        # handler can deadlock against the interrupted main thread.
        if self._stop_requested:
            self._hurry = True  # a second signal: kill now instead of waiting
        self._stop_requested = True

    # -- helpers -----------------------------------------------------------------

    def _owner(self, suffix: str) -> str:
        return f"{self.queue}:{self.hostname}:{os.getpid()}:{suffix}"
