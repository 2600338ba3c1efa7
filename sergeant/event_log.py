"""Event logging: one log line per chosen lifecycle event, through standard ``logging``.

Logging hangs off the worker's events (``worker.subscribe``) rather than being
scattered through the loop, so which events are logged, at which level and where the
lines go is configuration, not code: pick the events and levels here, and the
handlers and thresholds with ``logging`` as usual (the lines go to the worker's
logger, ``sergeant.worker.<name>``, unless another is given).

The defaults keep the hot path quiet: failures and timeouts are warnings, exhausted
retries and crash-loop rejections are errors, and everything a healthy task does
(delivered, started, succeeded) is DEBUG. Nothing per task is logged at INFO. A line
for an event below the logger's threshold costs one dictionary lookup and one
``isEnabledFor`` call (cached by ``logging``), no formatting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping

from sergeant import lifecycle as lc
from sergeant.errors import ConfigError
from sergeant.worker import Worker

#: The level each event is logged at unless told otherwise.
DEFAULT_LEVELS: Mapping[type[lc.Event], int] = {
    lc.Promoted: logging.DEBUG,
    lc.Delivered: logging.DEBUG,
    lc.Started: logging.DEBUG,
    lc.Succeeded: logging.DEBUG,
    lc.Released: logging.DEBUG,
    lc.RetryScheduled: logging.DEBUG,
    lc.Requeued: logging.DEBUG,
    lc.Dropped: logging.DEBUG,
    lc.LeaseExpired: logging.WARNING,
    lc.Failed: logging.WARNING,
    lc.TimedOut: logging.WARNING,
    lc.RetriesExhausted: logging.ERROR,
    lc.Rejected: logging.ERROR,
}

#: The events logged by default: the ones that need a human's attention, plus the
#: routine ones at DEBUG for when a logger is turned all the way up.
DEFAULT_EVENTS: frozenset[type[lc.Event]] = frozenset(DEFAULT_LEVELS)


class EventLogger:
    """Writes one line per chosen event of ``worker``: event, task, queue, worker, pid.

    ``EventLogger(worker)`` subscribes itself; there is nothing else to call.

    Args:
        worker: the worker whose events to log.
        events: which event types to log; others are ignored. Defaults to all.
        levels: levels overriding ``DEFAULT_LEVELS`` for some event types, e.g.
            ``{Succeeded: logging.INFO}`` to see every success (slow in bulk).
        logger: where the lines go; defaults to the worker's own logger.

    Raises:
        ConfigError: ``events`` or ``levels`` names something that is not a
            lifecycle event type, or a level is not an int.
    """

    def __init__(
        self,
        worker: Worker,
        *,
        events: Iterable[type[lc.Event]] = DEFAULT_EVENTS,
        levels: Mapping[type[lc.Event], int] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        chosen = frozenset(events)
        overrides = dict(levels or {})
        for kind in chosen | overrides.keys():
            if not (isinstance(kind, type) and issubclass(kind, lc.Event)):
                raise ConfigError(f"EventLogger: {kind!r} is not a lifecycle event")
        for kind, level in overrides.items():
            if isinstance(level, bool) or not isinstance(level, int):
                raise ConfigError(
                    f"EventLogger: level for {kind.__name__} must be an int, "
                    f"got {level!r}"
                )
        merged = {**DEFAULT_LEVELS, **overrides}
        self.levels: dict[type[lc.Event], int] = {
            kind: merged.get(kind, logging.INFO) for kind in chosen
        }
        self.logger = logger or worker.logger
        self.worker_name = worker.config.name
        worker.subscribe(self)

    def __call__(self, event: lc.Event) -> None:
        """Log ``event`` if it is chosen and its level is enabled."""
        level = self.levels.get(type(event))
        if level is None or not self.logger.isEnabledFor(level):
            return
        task = event.task
        self.logger.log(
            level,
            "%s task=%s queue=%s attempt=%d worker=%s pid=%d%s",
            type(event).__name__,
            task.id,
            task.queue or self.worker_name,
            task.attempt,
            self.worker_name,
            os.getpid(),
            _detail(event),
        )


def _detail(event: lc.Event) -> str:
    """The event's own facts, as a suffix of its line (one line: no traceback)."""
    if isinstance(event, lc.Failed) and event.exception is not None:
        text = f": {type(event.exception).__name__}: {event.exception}"
    elif isinstance(event, lc.RetriesExhausted | lc.Rejected) and event.reason:
        text = f": {event.reason}"
    elif isinstance(event, lc.RetryScheduled):
        text = f": retry in {event.delay:.3g} s"
    else:
        return ""
    # Messages may hold newlines; one event stays one line for grep and log shippers.
    return " ".join(text.splitlines())
