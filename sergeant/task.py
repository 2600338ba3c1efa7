"""The task: an immutable value object, the unit of work that travels through brokers.

What a broker stores is the *encoded* task (see the ``Codec`` port); the broker itself
keeps one more number beside it, the delivery count, which lives on the ``Delivery``
receipt and never in the task, because crash redeliveries are not retries.
"""

from __future__ import annotations

import enum
import time
import uuid
from typing import Any

import attrs


class Priority(enum.IntEnum):
    """Ordering class of a task: ready HIGH tasks are handed out before NORMAL ones."""

    HIGH = 0
    NORMAL = 1


def new_task_id() -> str:
    """A random, collision-free task id (32 hex characters)."""
    return uuid.uuid4().hex


def _non_negative(
    _: object, attribute: attrs.Attribute[Any], value: float | None
) -> None:
    if value is not None and value < 0:
        raise ValueError(f"Task.{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Task:
    """One unit of work.

    Attributes:
        kwargs: the keyword arguments for the worker's ``work``; what the user sends.
        queue: name of the queue the task was pushed to.
        id: unique id, kept across retries so users can deduplicate.
        trace_id: correlation id for logs and tracing; kept across retries.
        created_at: wall-clock time of the first push, in seconds since the epoch.
        attempt: how many times the task has been *run* before (0 on the first run);
            incremented by retries and requeues, never by crash redeliveries.
        priority: HIGH tasks are reserved before NORMAL ones.
        eta: wall-clock time before which the task must not run, or None.
        timeout: per-task timeout in seconds overriding the worker's, or None.
    """

    kwargs: dict[str, Any] = attrs.field(factory=dict)
    queue: str = ""
    id: str = attrs.field(factory=new_task_id)
    trace_id: str = attrs.field(factory=new_task_id)
    created_at: float = attrs.field(factory=time.time)
    attempt: int = attrs.field(default=0, validator=_non_negative)
    priority: Priority = attrs.field(default=Priority.NORMAL, converter=Priority)
    eta: float | None = None
    timeout: float | None = attrs.field(default=None, validator=_non_negative)

    def next_attempt(self, *, eta: float | None = None) -> Task:
        """The same task, one attempt further, due at ``eta`` (a retry or a requeue)."""
        return attrs.evolve(self, attempt=self.attempt + 1, eta=eta)
