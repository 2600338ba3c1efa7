"""Worker configuration: frozen, validated attrs objects.

A bad value fails when the object is built, with a ``ConfigError`` naming the field
(``WorkerConfig.tasks_per_transaction must be >= 1, got 0``), never later in a loop.
Times are finite numbers of seconds, at most ten years (``MAX_SECONDS``).
"""

from __future__ import annotations

import enum
import random
from typing import Any

import attrs

from sergeant._numbers import finite_number
from sergeant.errors import ConfigError
from sergeant.protocols.broker import MAX_COUNT


class DeliveryMode(enum.Enum):
    """How the worker takes tasks from the broker."""

    AT_LEAST_ONCE = "at_least_once"
    """Reserve under a lease; a task leaves the broker only when settled."""
    AT_MOST_ONCE = "at_most_once"
    """Pop without a lease: fastest, but a worker crash loses the tasks it held."""


# The longest time any setting may give, in seconds (ten years). Longer ones are
# refused at construction: passed on to a wait (``threading`` caps timeouts at
# ``threading.TIMEOUT_MAX``, about 292 years), they would raise OverflowError deep
# in the loop or kill the lease keeper's thread instead.
MAX_SECONDS = 10 * 365 * 24 * 3600.0


def _at_least(minimum: float, maximum: float | None = None) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"{type(instance).__name__}.{attribute.name} must be a number, "
                f"got {value!r}"
            )
        if not finite_number(value):
            raise ConfigError(
                f"{type(instance).__name__}.{attribute.name} must be a finite number, "
                f"got {value!r}"
            )
        if value < minimum:
            raise ConfigError(
                f"{type(instance).__name__}.{attribute.name} must be >= {minimum}, "
                f"got {value!r}"
            )
        if maximum is not None and value > maximum:
            bound = f"{maximum}" if isinstance(maximum, int) else f"{maximum:g}"
            raise ConfigError(
                f"{type(instance).__name__}.{attribute.name} must be <= {bound}"
                f"{' s (ten years)' if maximum == MAX_SECONDS else ''}, got {value!r}"
            )

    return check


def _seconds(minimum: float) -> Any:
    """A time in seconds: finite, at least ``minimum``, at most ``MAX_SECONDS``."""
    return _at_least(minimum, MAX_SECONDS)


def _name(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value or not value.isprintable():
        raise ConfigError(
            f"{type(instance).__name__}.{attribute.name} must be a non-empty printable "
            f"string, got {value!r}"
        )


def _delivery_mode(value: DeliveryMode | str) -> DeliveryMode:
    try:
        return DeliveryMode(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in DeliveryMode)
        raise ConfigError(
            f"WorkerConfig.delivery must be one of {choices}, got {value!r}"
        ) from None


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Exponential back-off with jitter for retried tasks.

    The n-th retry (n = attempt, from 0) waits
    ``min(max_delay, base_delay * factor ** n)`` seconds, stretched by a random
    fraction up to ``jitter`` so that a burst of failures does not retry in lockstep.

    Attributes:
        base_delay: the first retry's delay, in seconds.
        factor: growth per attempt.
        max_delay: the cap, in seconds.
        jitter: extra random fraction in [0, jitter] of the delay (at most 10).
    """

    base_delay: float = attrs.field(default=1.0, validator=_seconds(0))
    factor: float = attrs.field(default=2.0, validator=_at_least(1))
    max_delay: float = attrs.field(default=300.0, validator=_seconds(0))
    jitter: float = attrs.field(default=0.1, validator=_at_least(0, 10))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        try:
            grown = self.base_delay * self.factor ** min(attempt, 64)
        except OverflowError:  # a big factor: the cap was passed long before
            grown = self.max_delay if self.base_delay else 0.0
        base = min(self.max_delay, grown)
        return base * (1.0 + rng.uniform(0.0, self.jitter))


@attrs.frozen(kw_only=True)
class Timeouts:
    """Per-task time limits enforced by the watchdog.

    Attributes:
        timeout: seconds a task may run before ``TaskTimedOut`` is raised in it;
            0 means no limit. A task's own ``timeout`` overrides it.
        grace_period: seconds after the timeout before the watchdog escalates
            (kills the process) if the task has not stopped.
    """

    timeout: float = attrs.field(default=0.0, validator=_seconds(0))
    grace_period: float = attrs.field(default=10.0, validator=_seconds(0))


@attrs.frozen(kw_only=True)
class Starvation:
    """When a worker counts as starving: no task for ``time_with_no_tasks`` seconds.

    Attributes:
        time_with_no_tasks: seconds without a task before ``on_starvation`` runs
            (then again after each further such stretch).
    """

    time_with_no_tasks: float = attrs.field(validator=_seconds(0.001))


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """How a worker consumes its queue.

    Attributes:
        name: the worker's name, and the queue it consumes.
        tasks_per_transaction: how many tasks one reserve takes (the batch size).
        max_tasks_per_run: the worker returns from ``run()`` after this many tasks so
            that its supervisor respawns a fresh process; 0 means never.
        max_retries: retries allowed per task before it is dead-lettered.
        retry: back-off between retries.
        timeouts: per-task time limits.
        starvation: when to call ``on_starvation``; None disables it.
        delivery: at-least-once (leases) or at-most-once (plain pop).
        lease: seconds a reserved task stays invisible to other workers; the worker
            renews it while the task runs, so it only matters when the worker dies.
        max_deliveries: deliveries without a settlement (crashes) before a task is
            dead-lettered instead of crashing its worker again.
        wait: seconds one reserve may block on an empty queue before returning.
        max_payload_bytes: encoded tasks larger than this are refused by pushes
            (``PayloadTooLarge``) and dead-lettered by the worker (past a slack
            of 64 bytes, what a retry adds to a task); None: no limit.
        prefetch: how many batches to reserve ahead of the one running, so the
            broker's work on them overlaps the worker's; 0 (the default) for
            none (at-least-once only, and a broker with ``SupportsPrefetch``).
            The worker then holds up to ``prefetch + 1`` batches; a prefetched
            batch that waited past half its lease, or that the worker will not
            run (it stops), is released untouched.
    """

    name: str = attrs.field(validator=_name)
    tasks_per_transaction: int = attrs.field(
        default=1,
        validator=_at_least(1, MAX_COUNT),  # what a reserve may ask
    )
    max_tasks_per_run: int = attrs.field(default=0, validator=_at_least(0))
    max_retries: int = attrs.field(default=0, validator=_at_least(0))
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    timeouts: Timeouts = attrs.field(factory=Timeouts)
    starvation: Starvation | None = None
    delivery: DeliveryMode = attrs.field(
        default=DeliveryMode.AT_LEAST_ONCE, converter=_delivery_mode
    )
    lease: float = attrs.field(default=60.0, validator=_seconds(0.01))
    max_deliveries: int = attrs.field(default=5, validator=_at_least(1))
    wait: float = attrs.field(default=1.0, validator=_seconds(0))
    max_payload_bytes: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_at_least(1))
    )
    prefetch: int = attrs.field(default=0, validator=_at_least(0))

    def __attrs_post_init__(self) -> None:
        for field in ("tasks_per_transaction", "max_tasks_per_run", "max_retries",
                      "max_deliveries", "prefetch", "max_payload_bytes"):  # fmt: skip
            if not isinstance(getattr(self, field), int | None):
                raise ConfigError(
                    f"WorkerConfig.{field} must be an integer, "
                    f"got {getattr(self, field)!r}"
                )
        for field, kind in (("retry", RetryPolicy), ("timeouts", Timeouts)):
            if not isinstance(getattr(self, field), kind):
                raise ConfigError(f"WorkerConfig.{field} must be a {kind.__name__}")
        if self.starvation is not None and not isinstance(self.starvation, Starvation):
            raise ConfigError("WorkerConfig.starvation must be a Starvation or None")
        if self.prefetch and self.delivery is DeliveryMode.AT_MOST_ONCE:
            raise ConfigError(
                "WorkerConfig.prefetch needs delivery='at_least_once': a prefetched "
                "batch that the worker does not run goes back with a release, and "
                "popped tasks cannot be released"
            )
