"""What running one task produced: values the executor hands back to the worker.

``work(task)`` may also *return* a control value, made by the worker's ``retry()``,
``requeue()``, ``reject()``, ``stop()`` and ``respawn()`` methods. Control flow is a
return value rather than an exception, so a task's own ``try/except`` cannot swallow
it.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen(slots=True)
class Outcome:
    """Base of every outcome."""


@attrs.frozen(slots=True)
class Returned(Outcome):
    """The work returned ``value`` normally."""

    value: Any = None


#: The outcome of work that returned None (immutable, so one instance serves all).
RETURNED_NONE = Returned(None)


@attrs.frozen(slots=True)
class Raised(Outcome):
    """The work raised ``exception``."""

    exception: BaseException


@attrs.frozen(slots=True)
class Expired(Outcome):
    """A watchdog stopped the work at its deadline."""


@attrs.frozen(slots=True)
class RetryRequested(Outcome):
    """Run again later, one attempt further; ``delay`` None means the retry policy's."""

    delay: float | None = None


@attrs.frozen(slots=True)
class RequeueRequested(Outcome):
    """Put the task back at the tail of its queue (an attempt, not a retry)."""


@attrs.frozen(slots=True)
class RejectRequested(Outcome):
    """The task is invalid (bad kwargs): dead-letter it with ``reason``, no retry."""

    reason: str = "rejected by the worker"


@attrs.frozen(slots=True)
class StopRequested(Outcome):
    """The task is done; the worker stops after settling the current batch."""


@attrs.frozen(slots=True)
class RespawnRequested(Outcome):
    """The task is done; the worker exits so its supervisor starts a fresh process."""


CONTROL = (
    RetryRequested,
    RequeueRequested,
    RejectRequested,
    StopRequested,
    RespawnRequested,
)


@attrs.frozen(slots=True)
class NotStarted(Outcome):
    """The worker was stopping, so it skipped the task; it is released unchanged."""
