"""ThreadWatchdog: stops a task that outlives its deadline with an async exception.

Theory of operation. ``arm()`` runs in the task's own thread: it records the thread
and pushes the deadline on a heap. One background thread per watchdog sleeps on a
condition until the earliest deadline, and then *fires*: it asks CPython, through
``PyThreadState_SetAsyncExc``, to raise ``TaskTimedOut`` in that thread. If the
handle is still not disarmed ``grace`` seconds after that, it *escalates* by calling
``on_escalate(handle)`` (by default: log at ERROR and raise ``TaskTimedOut`` once
more). ``disarm()`` ends the arm; disarmed entries are dropped from the heap lazily
when they come due, or in one sweep once they are most of it.

What it cannot stop. CPython delivers an asynchronous exception only when the thread
next runs Python bytecode. A thread blocked in one long C call (``time.sleep(100)``,
a socket read without timeout, a huge ``re`` backtrack, a C extension's loop) gets
its ``TaskTimedOut`` only after that call returns; a C call that also holds the GIL
(the regex) even keeps the watchdog's own thread from running until it is done. Such
tasks need the process watchdog, which kills the process instead.

Races, and why ``disarm`` is safe. Every state change of a handle (ARMED -> FIRED
-> ESCALATED, any of them -> DISARMED) happens under one lock, and the watchdog sets
an exception in a thread only under that lock and only for a handle that is not
DISARMED. ``disarm`` takes the lock and, if the handle fired, *clears* a possibly
still pending exception (``PyThreadState_SetAsyncExc(tid, NULL)``) before marking it
DISARMED. So once the locked section has run, nothing from this arm is pending and
nothing new can be set: no ``TaskTimedOut`` from this arm arrives after ``disarm``
returns. Before it returns, one may arrive anywhere in the thread, including inside
``disarm`` itself:

- inside disarm's body: it is this arm's own exception (a thread has one live arm),
  so ``disarm`` catches it, finishes (it is idempotent) and returns False;
- at the very entry of ``disarm`` (its first bytecode, before any ``try``), or in
  the caller's code between the task returning and the call: it propagates to the
  caller *without* disarming. Callers must treat ``TaskTimedOut`` from ``disarm`` as
  a timeout and call ``disarm`` again. As a safety net, the next ``arm()`` from the
  same thread disarms that thread's previous handle, so a missed disarm can at worst
  let one escalation run while the thread sits idle for ``grace`` seconds;
- inside ``arm`` (a timeout shorter than a thread switch): ``arm`` ends the new
  handle itself and lets the exception go on, for its caller never got the handle.

When is a fired exception still pending? A thread running bytecode gets it at the
point where it gave up the GIL for the watchdog to fire, so in practice only while
it sits in a C call that released the GIL, such as waiting for this very lock in
``disarm`` while the watchdog fires: the case the clearing is for. (CPython 3.11
keeps one interpreter-wide "async exception pending" flag, but sets it again whenever
a thread with a pending exception takes the GIL, so when two threads fire at once
the second is delivered too.)

The lock is held only for a few assignments and C calls; the raw ``threading.Lock``
is used in ``with`` statements because its C ``__enter__`` cannot be interrupted
between acquiring and entering the block (a Python-level ``__enter__`` could).
"""

from __future__ import annotations

import ctypes
import enum
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from sergeant.errors import ConfigError, TaskTimedOut, WatchdogError

_log = logging.getLogger(__name__)

# Two private prototypes of the same C function: a py_object argument would pass
# None as Py_None, which CPython would later "raise" as a SystemError; c_void_p passes
# None as NULL, which clears. Private, so the argtypes of the shared
# ctypes.pythonapi attribute that other libraries may call are never touched.
_raise_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)

# Sweep disarmed entries out of the heap once there are this many and they are
# more than half of it; below that, dropping them when they come due is cheaper.
_SWEEP_AT = 256


class _State(enum.Enum):
    ARMED = "armed"  # deadline ahead
    FIRED = "fired"  # TaskTimedOut raised (or pending) in the thread; grace running
    ESCALATED = "escalated"  # grace over, on_escalate called
    DISARMED = "disarmed"  # over; the watchdog never touches the thread again


class WatchdogHandle:
    """What ``ThreadWatchdog.arm`` returns, and what ``on_escalate`` receives.

    Attributes:
        thread_id: ``threading.get_ident()`` of the armed thread.
        thread_name: that thread's name, for log messages.
        timeout: seconds from arming to the deadline.
        grace: seconds from raising ``TaskTimedOut`` (at the deadline, or later
            if the watchdog's thread could not run then) to the escalation.
        deadline: the deadline as a ``time.monotonic()`` reading.
    """

    __slots__ = (
        "_fired",
        "_state",
        "_thread",
        "_watchdog",
        "deadline",
        "grace",
        "thread_id",
        "thread_name",
        "timeout",
    )

    def __init__(self, watchdog: ThreadWatchdog, timeout: float, grace: float) -> None:
        self._watchdog = watchdog
        self._thread = threading.current_thread()
        self.thread_id = threading.get_ident()
        self.thread_name = self._thread.name
        self.timeout = timeout
        self.grace = grace
        self.deadline = time.monotonic() + timeout
        self._state = _State.ARMED
        self._fired = False

    @property
    def fired(self) -> bool:
        """True once the deadline has fired (even if the exception was cleared)."""
        return self._fired

    @property
    def disarmed(self) -> bool:
        """True once ``disarm`` ran (a custom ``on_escalate`` may check it)."""
        return self._state is _State.DISARMED

    def __repr__(self) -> str:
        return (
            f"<WatchdogHandle thread={self.thread_name!r} timeout={self.timeout} "
            f"grace={self.grace} state={self._state.value}>"
        )


def _check(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"ThreadWatchdog.arm {name} must be >= 0, got {value!r}")


_Entry = tuple[float, int, WatchdogHandle, bool]  # when, tie-break, handle, escalation


class ThreadWatchdog:
    """Raises ``TaskTimedOut`` in a task thread at its deadline; one thread for all.

    Arm and disarm from the task's own thread. Arms on one thread do not nest: a new
    ``arm()`` ends that thread's previous handle. Pure-Python code is interrupted
    within about ``sys.getswitchinterval()`` (5 ms) of the deadline; code blocked in
    a C call only when that call returns (see the module docstring).

    Args:
        on_escalate: called from the watchdog's thread with the handle when a task
            is still running ``grace`` seconds after it was told to stop (at its
            deadline, or later if the watchdog could not run then). The default logs
            at ERROR and raises ``TaskTimedOut`` in the task once more. Exceptions
            it raises are logged and ignored.
        name: name of the watchdog's thread.
    """

    def __init__(
        self,
        *,
        on_escalate: Callable[[WatchdogHandle], object] | None = None,
        name: str = "sergeant-watchdog",
    ) -> None:
        self._on_escalate = self._raise_again if on_escalate is None else on_escalate
        self._name = name
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._heap: list[_Entry] = []
        self._order = itertools.count()
        self._live: dict[int, WatchdogHandle] = {}  # thread id -> its armed handle
        self._stale = 0  # entries in the heap whose handle is DISARMED
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, timeout: float, *, grace: float) -> WatchdogHandle:
        """Watch the calling thread: ``TaskTimedOut`` in it after ``timeout`` seconds.

        Raises:
            ConfigError: ``timeout`` or ``grace`` is negative or not a number.
            WatchdogError: the watchdog is closed.
            TaskTimedOut: the deadline passed before ``arm`` returned; the arm is
                already ended (nothing to disarm).
        """
        _check("timeout", timeout)
        _check("grace", grace)
        handle = WatchdogHandle(self, timeout, grace)
        try:
            with self._lock:
                if self._closed:
                    raise WatchdogError("ThreadWatchdog.arm() after close()")
                previous = self._live.get(handle.thread_id)
                if previous is not None:  # a missed disarm: see the module docstring
                    self._end(previous)
                self._live[handle.thread_id] = handle
                self._push(handle.deadline, handle, escalation=False)
                if self._thread is None:
                    self._start()
            return handle
        except TaskTimedOut:
            # This arm fired before arm() could return it (a timeout shorter than
            # a thread switch): the caller never gets the handle to disarm, so its
            # escalation would hit whatever the thread runs next. End it here; the
            # caller sees the timeout.
            self.disarm(handle)
            raise

    def disarm(self, handle: object) -> bool:
        """Stop watching; True when the deadline had not fired. Idempotent.

        After it returns, no ``TaskTimedOut`` from this arm is delivered. One that
        surfaces at its very entry propagates; call ``disarm`` again then.

        Raises:
            WatchdogError: ``handle`` did not come from this watchdog's ``arm``.
        """
        if not isinstance(handle, WatchdogHandle) or handle._watchdog is not self:
            raise WatchdogError(f"not a handle of this ThreadWatchdog: {handle!r}")
        caller = threading.get_ident()
        while True:
            try:
                with self._lock:
                    self._end(handle)
                return not handle._fired
            except TaskTimedOut:
                # Delivered before _end cleared it. In the armed thread it can only
                # be this arm's own exception: finish disarming. Elsewhere it
                # belongs to the caller's own arm and must go on.
                if caller != handle.thread_id:
                    raise

    def close(self) -> None:
        """Stop the watchdog's thread; armed handles never fire after this."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            self._wakeup.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- under the lock ---------------------------------------------------------

    def _push(self, when: float, handle: WatchdogHandle, *, escalation: bool) -> None:
        entry = (when, next(self._order), handle, escalation)
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:  # earlier than what the watchdog sleeps towards
            self._wakeup.notify()

    def _end(self, handle: WatchdogHandle) -> None:
        state = handle._state
        if state is _State.DISARMED:
            return
        if state is not _State.ARMED and handle._thread.is_alive():
            # It fired, so its exception may still be pending: clear it. Nothing
            # can set a new one once the handle is DISARMED (we hold the lock).
            _clear_in(handle.thread_id, None)
        if state is not _State.ESCALATED:  # its deadline or escalation entry remains
            self._stale += 1
        handle._state = _State.DISARMED
        if self._live.get(handle.thread_id) is handle:
            del self._live[handle.thread_id]
        if self._stale >= _SWEEP_AT and self._stale * 2 > len(self._heap):
            self._heap[:] = [
                e for e in self._heap if e[2]._state is not _State.DISARMED
            ]
            heapq.heapify(self._heap)
            self._stale = 0

    def _fire(self, handle: WatchdogHandle) -> None:
        handle._fired = True
        if not handle._thread.is_alive():
            # The thread ended without disarming; its id may already belong to a
            # new thread, which must not be interrupted.
            handle._state = _State.DISARMED
            if self._live.get(handle.thread_id) is handle:
                del self._live[handle.thread_id]
            _log.warning("%r: its thread ended without disarming", handle)
            return
        _raise_in(handle.thread_id, TaskTimedOut)
        handle._state = _State.FIRED
        # The grace counts from now, not from the deadline: a watchdog thread
        # kept from running past the deadline (a task holding the GIL in a C
        # call) fires late, and the task must still get its whole grace to stop,
        # not an escalation in the same instant (as ProcessWatchdog does).
        self._push(time.monotonic() + handle.grace, handle, escalation=True)

    # -- the watchdog's thread ---------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._serve, name=self._name, daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        escalated: list[WatchdogHandle] = []
        while self._act_on_due(escalated):
            for handle in escalated:  # outside the lock: callbacks may be slow
                try:
                    self._on_escalate(handle)
                except Exception:
                    _log.exception("%s: on_escalate(%r) raised", self._name, handle)
            escalated.clear()

    def _act_on_due(self, escalated: list[WatchdogHandle]) -> bool:
        """Sleep until an entry is due, act on all due ones; False once closed."""
        heap = self._heap
        with self._lock:
            while True:
                if self._closed:
                    return False
                now = time.monotonic()
                if heap and heap[0][0] <= now:
                    break
                wait = min(heap[0][0] - now, threading.TIMEOUT_MAX) if heap else None
                self._wakeup.wait(wait)
            while heap and heap[0][0] <= now:
                _, _, handle, escalation = heapq.heappop(heap)
                if handle._state is _State.DISARMED:
                    self._stale -= 1
                elif not escalation:
                    self._fire(handle)
                else:  # an escalation entry exists only for a FIRED handle
                    handle._state = _State.ESCALATED
                    escalated.append(handle)
        return True

    def _raise_again(self, handle: WatchdogHandle) -> None:
        """The default escalation: log at ERROR, raise ``TaskTimedOut`` once more."""
        _log.error(
            "task in thread %r still running %.3gs after TaskTimedOut was raised "
            "at or after its %.3gs deadline (it ignored it); raising it once more",
            handle.thread_name,
            handle.grace,
            handle.timeout,
        )
        with self._lock:
            if handle._state is _State.ESCALATED and handle._thread.is_alive():
                _raise_in(handle.thread_id, TaskTimedOut)
