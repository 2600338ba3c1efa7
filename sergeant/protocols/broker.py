"""The Broker port and its capability protocols.

A broker stores *encoded* tasks (opaque bytes) per named queue and hands them to
workers at least once: ``reserve`` leases tasks to a named owner for a while, and a
task leaves the broker only when it is acked (or dead-lettered). A lease that lapses
makes its tasks ready again for any worker; the next ``reserve`` on the queue
reclaims them. The broker also keeps, per stored task, how many times it was
delivered, which the worker uses to cap crash redeliveries.

Every implementation passes ``contract_tests/test_broker.py``. Implementations are
safe to call from several threads (a worker renews leases from a second thread).
Failure contract: a backend that cannot be reached raises ``BrokerUnavailable``;
other backend failures raise ``BrokerError``; driver exceptions never escape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import attrs

from sergeant._numbers import finite_number
from sergeant.task import Priority


class _DeliverySlots:
    """Where a Delivery's fields live, shared with ``OpenDelivery`` (attrs reuses
    slots a base class declares, so Delivery adds none)."""

    __slots__ = ("__weakref__", "deliveries", "payload", "receipt")
    receipt: str
    payload: bytes
    deliveries: int


@attrs.frozen(slots=True)
class Delivery(_DeliverySlots):
    """A receipt for one reserved task.

    Attributes:
        receipt: the broker's handle on the stored task; pass the delivery back to
            ``ack``, ``release``, ``extend`` or ``dead_letter``.
        payload: the encoded task, as pushed.
        deliveries: how many times this stored task has been handed out, this time
            included. A release does not count; a lapsed lease does.
    """

    receipt: str
    payload: bytes
    deliveries: int = 1


class OpenDelivery(_DeliverySlots):
    """A Delivery under construction, for a broker's per-task hot path.

    Setting a frozen Delivery's fields goes through a descriptor call each; on
    this class the same slots take plain stores. Set all three fields, then
    ``delivery.__class__ = Delivery``: the object is then an ordinary, frozen
    Delivery. Anything else should call ``Delivery(...)``.
    """

    __slots__ = ()


if {*attrs.fields_dict(Delivery), "__weakref__"} != set(
    _DeliverySlots.__slots__
) or any(
    getattr(Delivery, name).__objclass__ is not _DeliverySlots
    for name in attrs.fields_dict(Delivery)
):  # pragma: no cover
    raise ImportError("Delivery's fields and its slots no longer agree")


@attrs.frozen(slots=True)
class QueueLengths:
    """How many tasks of one queue are in each place.

    Attributes:
        ready: can be reserved now.
        delayed: waiting for their eta (or a retry delay).
        in_flight: reserved under a lease and not yet settled.
        dead: in the dead-letter store.
    """

    ready: int = 0
    delayed: int = 0
    in_flight: int = 0
    dead: int = 0


@attrs.frozen(slots=True)
class DeadLetter:
    """A task in the dead-letter store.

    Attributes:
        payload: the encoded task exactly as it was stored (it may be undecodable).
        reason: why it was dead-lettered.
        dead_at: wall-clock time it was dead-lettered.
    """

    payload: bytes
    reason: str
    dead_at: float


@runtime_checkable
class Broker(Protocol):
    """**Port**: stores encoded tasks per queue and hands them out at least once."""

    def push(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        priority: Priority = Priority.NORMAL,
        eta: float | None = None,
    ) -> None:
        """Store ``payloads`` in order, all in one round trip where the backend can.

        Within one priority, ready tasks come out in the order they were pushed (per
        node). With ``eta`` (wall-clock seconds) in the future they are delayed and
        become ready when it passes; ``reserve`` promotes them.
        """
        ...

    def reserve(
        self,
        queue: str,
        *,
        owner: str,
        count: int = 1,
        lease: float | None = 60.0,
        wait: float = 0.0,
        ack: Sequence[Delivery] = (),
    ) -> list[Delivery]:
        """Hand out up to ``count`` ready tasks, HIGH priority first.

        One atomic step: first acks ``ack`` (so a one-at-a-time consumer pays one
        round trip per task), reclaims lapsed leases and promotes due delayed tasks,
        then leases what it returns to ``owner`` for ``lease`` seconds. With
        ``lease=None`` tasks are removed at once (at-most-once; ``owner`` unused).
        When nothing is ready, blocks up to ``wait`` seconds for a push.
        """
        ...

    def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Remove settled tasks. Acking an unknown or already-acked task is a no-op."""
        ...

    def release(
        self, queue: str, deliveries: Sequence[Delivery], *, delay: float = 0.0
    ) -> None:
        """Give leased tasks back unchanged (ready now, or after ``delay`` seconds).

        The release is not counted as a delivery. Unknown receipts are ignored.
        """
        ...

    def extend(
        self, queue: str, deliveries: Sequence[Delivery], *, lease: float
    ) -> None:
        """Renew the leases of tasks still held: they now lapse ``lease`` s from now."""
        ...

    def release_owner(self, queue: str, owner: str) -> int:
        """Make every task leased to ``owner`` ready again at once; return how many.

        The supervisor calls this when a worker process dies, so its tasks need not
        wait for their leases to lapse. Their delivery counts stand (a crash).
        """
        ...

    def dead_letter(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Move a delivered task to the queue's dead-letter store with ``reason``."""
        ...

    def lengths(self, queue: str) -> QueueLengths:
        """Count the queue's tasks per place."""
        ...

    def purge(self, queue: str) -> int:
        """Drop the queue's ready, delayed and in-flight tasks; return how many.

        Dead letters stay (see ``SupportsInspection.purge_dead``).
        """
        ...

    def close(self) -> None:
        """Release connections; the broker is unusable afterwards."""
        ...


#: What ``SupportsPrefetch.begin_reserve`` returns: call it once to collect the batch.
PendingReserve = Callable[[], list[Delivery]]


@runtime_checkable
class SupportsPrefetch(Protocol):
    """**Port** capability: start a reserve now, collect its batch later.

    A worker that prefetches asks for batch N+1 before it runs batch N, so the
    backend's work on the request overlaps the worker's own. Only at-least-once:
    a prefetched batch a worker never runs (it stopped) must go back with
    ``release``, which only leased tasks can.
    """

    def begin_reserve(
        self,
        queue: str,
        *,
        owner: str,
        count: int = 1,
        lease: float = 60.0,
        ack: Sequence[Delivery] = (),
    ) -> PendingReserve:
        """Start what ``reserve(..., wait=0)`` does and return without its answer.

        The returned function, called exactly once, waits for the batch and returns
        it (possibly empty), or raises what ``reserve`` raises. In between, the
        broker serves every other call as usual, from any thread. Leases start when
        the backend runs the request, not when the batch is collected.
        """
        ...


@runtime_checkable
class SupportsInspection(Protocol):
    """**Port** capability: list queues and inspect, replay or drop dead letters."""

    def queues(self) -> list[str]:
        """Names of the queues that hold any task or dead letter, sorted."""
        ...

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``queue``, oldest first."""
        ...

    def replay_dead(self, queue: str, *, limit: int | None = None) -> int:
        """Push dead letters back as ready NORMAL tasks (oldest first); return count."""
        ...

    def purge_dead(self, queue: str) -> int:
        """Drop the queue's dead letters; return how many."""
        ...


def check_limit(limit: int | None) -> None:
    """Raise ValueError unless ``limit`` is None or an int >= 0.

    For adapters' ``dead_letters`` and ``replay_dead``: a negative limit meant
    something different on each broker (all, none, all but one).
    """
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an int >= 0 or None, got {limit!r}")


def check_seconds(name: str, value: float | None, *, zero: bool = False) -> None:
    """Raise ValueError unless ``value`` is None or a finite number of seconds
    above 0 (or at 0 with ``zero``).

    For adapters, before anything is sent or changed: a lease or delay that is
    NaN, infinite or negative makes a deadline no clock reaches or every clock
    has passed, and a backend may refuse it only halfway through (a Redis
    script stops at its first refused command, the ones before it applied), so
    tasks would be stranded where nothing hands them out again.
    """
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not finite_number(value) or value < 0 or (value == 0 and not zero):
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds (finite), got {value!r}")


#: The most tasks one reserve may ask for: fits every backend's integers.
MAX_COUNT = 2**31 - 1


def check_reserve(count: int, lease: float | None, wait: float) -> None:
    """Raise ValueError unless a reserve's ``count`` is an int from 1 to
    ``MAX_COUNT``, ``lease`` None or a finite number of seconds above 0, and
    ``wait`` one of 0 or more.

    For adapters, first thing in ``reserve``: a reserve acks before it takes,
    and a bad value found only by the backend (a count of 1.5 that a Redis
    script refuses, a wait of None that a driver trips on) would fail it with
    the acks applied and nothing handed out, on some brokers and not others.
    """
    if isinstance(count, bool) or not isinstance(count, int):
        raise ValueError(f"count must be an int, got {count!r}")
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be from 1 to {MAX_COUNT}, got {count!r}")
    check_seconds("lease", lease)
    if wait is None:
        raise ValueError("wait must be a number of seconds, got None")
    check_seconds("wait", wait, zero=True)


def check_eta(eta: float | None) -> None:
    """Raise ValueError unless ``eta`` is None or a finite wall-clock time."""
    if eta is None:
        return
    if isinstance(eta, bool) or not isinstance(eta, int | float):
        raise ValueError(f"eta must be a wall-clock time in seconds, got {eta!r}")
    if not finite_number(eta):
        raise ValueError(f"eta must be a finite time, got {eta!r}")
