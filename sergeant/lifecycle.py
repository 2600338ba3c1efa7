"""The task lifecycle: a state machine kept as data.

Rules (after h11's ``_state.py``):

1. The whole machine is the ``TRANSITIONS`` table below. Nothing else in sergeant
   decides which state follows which; the worker only translates what happened
   (an executor outcome, a handler's decision, a broker fact) into an *event* and asks
   ``advance()`` for the next state.
2. ``advance()`` is pure: it returns the next state or raises ``IllegalTransition``,
   and mutates nothing, so a rejected event leaves the caller's state as it was.

Theory of operation. A task is pushed as QUEUED (or DELAYED when it has an eta in the
future). A DELAYED task is *Promoted* to QUEUED when its eta passes. A worker's
reserve *Delivers* it (RESERVED, under a lease); the worker *Starts* it (RUNNING) and
the run ends in one of: SUCCEEDED; FAILED (the work raised) or TIMED_OUT (a watchdog
fired), after which a handler decides whether it is *Dropped* (DROPPED), retried
(RETRYING), requeued (REQUEUED) or, retries spent, dead-lettered (DEAD). Work may also
ask for a retry or requeue directly. A RESERVED or RUNNING task whose lease lapses
(its worker died) goes back to QUEUED; a RESERVED one may be *Released* by a stopping
worker, or *Rejected* into DEAD (delivered too often without being settled: the crash
cap). Work may also reject its task outright (bad input): RUNNING is *Rejected* into
DEAD. RETRYING behaves as DELAYED and REQUEUED as QUEUED. SUCCEEDED, DROPPED and DEAD
are terminal.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from sergeant.errors import IllegalTransition
from sergeant.task import Task


class TaskState(enum.Enum):
    """Where a task is in its life."""

    QUEUED = "queued"
    DELAYED = "delayed"
    RESERVED = "reserved"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    RETRYING = "retrying"
    REQUEUED = "requeued"
    DROPPED = "dropped"
    DEAD = "dead"

    # Enum's own __hash__ is Python code; members are singletons, so identity hashing
    # is equivalent and keeps the per-task table lookups cheap.
    __hash__ = object.__hash__


@attrs.frozen(slots=True)
class Event:
    """Base of lifecycle events; every event names the task it happened to."""

    task: Task


@attrs.frozen(slots=True)
class Promoted(Event):
    """A delayed task's eta passed; it is ready to be reserved."""


@attrs.frozen(slots=True)
class Delivered(Event):
    """A worker reserved the task under a lease."""


@attrs.frozen(slots=True)
class Released(Event):
    """A worker gave back a reserved task it did not start (a graceful stop)."""


@attrs.frozen(slots=True)
class LeaseExpired(Event):
    """The lease lapsed before the task was settled: its worker is presumed dead."""


@attrs.frozen(slots=True)
class Rejected(Event):
    """The task was dead-lettered without a retry: the crash-redelivery cap, or the
    work rejected it as invalid input."""

    reason: str = ""


@attrs.frozen(slots=True)
class Started(Event):
    """The worker began running the task."""


@attrs.frozen(slots=True)
class Succeeded(Event):
    """The work returned normally."""

    result: Any = None


@attrs.frozen(slots=True)
class Failed(Event):
    """The work raised an exception."""

    exception: BaseException | None = None


@attrs.frozen(slots=True)
class TimedOut(Event):
    """A watchdog stopped the work at its deadline."""


@attrs.frozen(slots=True)
class RetryScheduled(Event):
    """The task was pushed again, one attempt further, after ``delay`` seconds."""

    delay: float = 0.0


@attrs.frozen(slots=True)
class Requeued(Event):
    """The task was pushed back to the queue's tail to run again."""


@attrs.frozen(slots=True)
class RetriesExhausted(Event):
    """A retry was asked for but ``max_retries`` is spent: the task is dead."""

    reason: str = ""


@attrs.frozen(slots=True)
class Dropped(Event):
    """A failed or timed-out task was settled without a retry (handlers ran)."""


_S = TaskState

TRANSITIONS: dict[tuple[TaskState, type[Event]], TaskState] = {
    (_S.QUEUED, Delivered): _S.RESERVED,
    (_S.DELAYED, Promoted): _S.QUEUED,
    (_S.RESERVED, Started): _S.RUNNING,
    (_S.RESERVED, Released): _S.QUEUED,
    (_S.RESERVED, LeaseExpired): _S.QUEUED,
    (_S.RESERVED, Rejected): _S.DEAD,
    (_S.RUNNING, Succeeded): _S.SUCCEEDED,
    (_S.RUNNING, Failed): _S.FAILED,
    (_S.RUNNING, TimedOut): _S.TIMED_OUT,
    (_S.RUNNING, RetryScheduled): _S.RETRYING,
    (_S.RUNNING, Requeued): _S.REQUEUED,
    (_S.RUNNING, RetriesExhausted): _S.DEAD,
    (_S.RUNNING, Rejected): _S.DEAD,
    (_S.RUNNING, LeaseExpired): _S.QUEUED,
    (_S.RETRYING, Promoted): _S.QUEUED,
    (_S.REQUEUED, Delivered): _S.RESERVED,
}
for _settled in (_S.FAILED, _S.TIMED_OUT):
    TRANSITIONS[(_settled, RetryScheduled)] = _S.RETRYING
    TRANSITIONS[(_settled, Requeued)] = _S.REQUEUED
    TRANSITIONS[(_settled, RetriesExhausted)] = _S.DEAD
    TRANSITIONS[(_settled, Dropped)] = _S.DROPPED
    TRANSITIONS[(_settled, Rejected)] = _S.DEAD

TERMINAL: frozenset[TaskState] = frozenset({_S.SUCCEEDED, _S.DROPPED, _S.DEAD})

EVENT_TYPES: tuple[type[Event], ...] = (
    Promoted, Delivered, Released, LeaseExpired, Rejected, Started, Succeeded, Failed,
    TimedOut, RetryScheduled, Requeued, RetriesExhausted, Dropped,
)  # fmt: skip


def initial_state(task: Task, *, now: float) -> TaskState:
    """The state of a freshly pushed task: DELAYED when its eta is still ahead."""
    return _S.DELAYED if task.eta is not None and task.eta > now else _S.QUEUED


def next_state(state: TaskState, kind: type[Event]) -> TaskState:
    """The state an event of type ``kind`` leads to from ``state``.

    The worker's hot path asks this with the event *type*, so that no event object
    is built when nobody listens; ``advance`` is the same rule for an event.

    Raises:
        IllegalTransition: the table has no such transition; nothing was changed.
    """
    try:
        return TRANSITIONS[(state, kind)]
    except KeyError:
        raise IllegalTransition(
            f"{kind.__name__} is not allowed in state {state.name}"
        ) from None


def advance(state: TaskState, event: Event) -> TaskState:
    """Return the state that ``event`` leads to from ``state``.

    Raises:
        IllegalTransition: the table has no such transition; nothing was changed.
    """
    return next_state(state, type(event))
