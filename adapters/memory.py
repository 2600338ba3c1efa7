"""MemoryBroker: an in-process, thread-safe broker with the full semantics.

A working adapter, not a mock: it passes the same contract suites as the network
brokers and is the default in unit tests (dramatiq's ``StubBroker`` idea). Time is
read from an injected wall clock, so a test's fake clock makes leases, etas and
ttls lapse without sleeping. The hot path is deque and dict operations under one
lock; a ``threading.Condition`` on that lock serves ``reserve(wait=...)`` and
``join``.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Sequence

from sergeant.clock import Clock
from sergeant.errors import BrokerError
from sergeant.protocols import DeadLetter, Delivery, PendingReserve, QueueLengths
from sergeant.protocols.broker import (
    check_eta,
    check_limit,
    check_reserve,
    check_seconds,
)
from sergeant.task import Priority

from ._memory_lock import LocksAndKeys, MemoryLock
from ._memory_queue import Lease, QueueState, StoredTask

__all__ = ["MemoryBroker", "MemoryLock"]


# Marks the receipt of a task handed out without a lease (see ``dead_letter``).
_POPPED = "p"


class MemoryBroker(LocksAndKeys):
    """An in-process broker; implements Broker, SupportsInspection, locks and keys.

    Args:
        clock: wall clock for etas, leases, dead_at and ttls; inject a fake one
            in tests. Waits (``reserve(wait=...)``, ``join``, lock timeouts) are
            real time.
    """

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._queues: dict[str, QueueState] = {}
        self._seq = itertools.count()
        super().__init__(clock)
        self._closed = False

    def _queue(self, name: str) -> QueueState:
        if self._closed:
            raise BrokerError("MemoryBroker is closed")
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = QueueState()
        return q

    def push(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        priority: Priority = Priority.NORMAL,
        eta: float | None = None,
    ) -> None:
        """Store ``payloads`` in order, ready now or delayed until ``eta``."""
        check_eta(eta)
        priority = Priority(priority)
        with self._cond:
            q = self._queue(queue)
            now = self._clock()
            # Tasks that fell due meanwhile stay ahead of these. Lapsed leases
            # are left to the next reserve: until then their holders may settle.
            q.promote(now)
            if eta is not None and eta > now:
                for payload in payloads:
                    task = StoredTask(bytes(payload), priority)
                    heapq.heappush(q.delayed, (eta, next(self._seq), task))
            else:
                q.ready[priority].extend(
                    StoredTask(bytes(p), priority) for p in payloads
                )
            self._cond.notify_all()

    def begin_reserve(
        self,
        queue: str,
        *,
        owner: str,
        count: int = 1,
        lease: float = 60.0,
        ack: Sequence[Delivery] = (),
    ) -> PendingReserve:
        """Reserve now (memory answers at once), hand the batch over when asked.

        There is nothing to overlap in memory; this exists so tests of a
        prefetching worker can run on the in-memory broker.
        """
        check_seconds("lease", lease)
        got = self.reserve(queue, owner=owner, count=count, lease=lease, ack=ack)
        return lambda: got

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
        """Ack ``ack``, then lease up to ``count`` ready tasks (HIGH first).

        Blocks up to ``wait`` real seconds while nothing is ready, waking on a push
        or when the next eta or lease deadline is due.
        """
        check_reserve(count, lease, wait)
        give_up = time.monotonic() + wait
        with self._cond:
            q = self._queue(queue)
            self._ack(q, ack)
            while True:
                now = self._clock()
                q.settle(now)
                got = self._take(q, owner, count, lease, now)
                left = give_up - time.monotonic()
                if got or left <= 0:
                    return got
                due = q.next_change()
                if due is not None:
                    left = min(left, max(due - now, 0.001))
                self._cond.wait(left)
                self._queue(queue)  # raises if the broker was closed meanwhile

    def _take(
        self, q: QueueState, owner: str, count: int, lease: float | None, now: float
    ) -> list[Delivery]:
        got: list[Delivery] = []
        for ready in q.ready:
            while ready and len(got) < count:
                task = ready.popleft()
                task.deliveries += 1
                # A leased receipt is a bare number; a popped one is marked, so a
                # dead-lettering can tell it from a lease that is gone.
                receipt = str(next(self._seq))
                if lease is None:
                    receipt = _POPPED + receipt
                else:
                    q.leases[receipt] = Lease(task, owner, now + lease)
                    heapq.heappush(q.deadlines, (now + lease, receipt))
                got.append(Delivery(receipt, task.payload, task.deliveries))
        if lease is None and got:
            self._cond.notify_all()  # join() may be waiting for an empty queue
        return got

    def _ack(self, q: QueueState, deliveries: Sequence[Delivery]) -> None:
        removed = False
        for delivery in deliveries:
            removed |= q.leases.pop(delivery.receipt, None) is not None
        if removed:
            self._cond.notify_all()

    def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Remove settled tasks; unknown or already-acked receipts are ignored."""
        with self._cond:
            self._ack(self._queue(queue), deliveries)

    def release(
        self, queue: str, deliveries: Sequence[Delivery], *, delay: float = 0.0
    ) -> None:
        """Give leased tasks back, not counting the delivery; ready after ``delay``."""
        check_seconds("delay", delay, zero=True)
        with self._cond:
            q = self._queue(queue)
            eta = self._clock() + delay
            # Ready now: appendleft in reverse keeps the order given. Delayed: the
            # heap orders ties by sequence number, handed out in the order given.
            for delivery in deliveries if delay > 0 else reversed(deliveries):
                lease = q.leases.pop(delivery.receipt, None)
                if lease is None:
                    continue
                lease.task.deliveries -= 1
                if delay > 0:
                    heapq.heappush(q.delayed, (eta, next(self._seq), lease.task))
                else:
                    q.ready[lease.task.priority].appendleft(lease.task)
            self._cond.notify_all()

    def extend(
        self, queue: str, deliveries: Sequence[Delivery], *, lease: float
    ) -> None:
        """Make the leases still held lapse ``lease`` seconds from now."""
        check_seconds("lease", lease)
        with self._cond:
            q = self._queue(queue)
            deadline = self._clock() + lease
            for delivery in deliveries:
                held = q.leases.get(delivery.receipt)
                if held is not None:
                    held.deadline = deadline
                    heapq.heappush(q.deadlines, (deadline, delivery.receipt))

    def release_owner(self, queue: str, owner: str) -> int:
        """Make every task leased to ``owner`` ready now; their counts stand."""
        with self._cond:
            q = self._queue(queue)
            mine = [r for r, lease in q.leases.items() if lease.owner == owner]
            for receipt in reversed(mine):
                task = q.leases.pop(receipt).task
                q.ready[task.priority].appendleft(task)
            self._cond.notify_all()
            return len(mine)

    def dead_letter(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Store ``delivery``'s payload with ``reason`` and drop its lease.

        A task reserved without a lease (at-most-once; or a receipt this broker
        never issued) is recorded as given. A leased one only while its lease is
        held: a holder whose lease lapsed and went to another worker records
        nothing, for the task lives on there (a second record would run it twice
        once replayed), as on the other brokers.
        """
        with self._cond:
            q = self._queue(queue)
            receipt = delivery.receipt
            if q.leases.pop(receipt, None) is None and receipt.isdigit():
                return  # a lease of ours, gone: settled, or someone else's now
            q.dead.append(DeadLetter(delivery.payload, reason, self._clock()))
            self._cond.notify_all()

    def lengths(self, queue: str) -> QueueLengths:
        """Count the queue's tasks per place; due delayed tasks and lapsed leases
        count as ready (the next reserve hands them out), as on the other
        brokers.

        A lapsed lease is only counted, not reclaimed: the port leaves that to the
        next reserve, and until then the holder's late ack or dead-letter must
        still find its lease (else the task would run again, or be dead and
        ready at once).
        """
        with self._cond:
            q = self._queues.get(queue)
            if q is None:
                return QueueLengths()
            now = self._clock()
            q.promote(now)
            return q.lengths(now)

    def purge(self, queue: str) -> int:
        """Drop ready, delayed and in-flight tasks; keep dead letters."""
        with self._cond:
            q = self._queue(queue)
            n = q.lengths()
            q.clear_live()  # in place: a waiting reserve holds this object
            self._cond.notify_all()
            return n.ready + n.delayed + n.in_flight

    def close(self) -> None:
        """Mark the broker unusable; later queue operations raise ``BrokerError``."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # SupportsInspection

    def queues(self) -> list[str]:
        """Names of the queues holding any task or dead letter, sorted."""
        with self._cond:
            return sorted(n for n, q in self._queues.items() if q.lengths() != _EMPTY)

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``queue``, oldest first."""
        check_limit(limit)
        with self._cond:
            q = self._queues.get(queue)
            return [] if q is None else q.dead[:limit]

    def replay_dead(self, queue: str, *, limit: int | None = None) -> int:
        """Push dead letters back as fresh ready NORMAL tasks, oldest first."""
        check_limit(limit)
        with self._cond:
            q = self._queue(queue)
            letters = q.dead[:limit]
            del q.dead[: len(letters)]
        self.push(queue, [letter.payload for letter in letters])
        return len(letters)

    def purge_dead(self, queue: str) -> int:
        """Drop the queue's dead letters; return how many."""
        with self._cond:
            q = self._queue(queue)
            n, q.dead = len(q.dead), []
            return n

    # Test helpers: not part of any port.

    def drain(self, queue: str) -> list[bytes]:
        """Test helper: remove and return the payloads of ready and delayed tasks.

        Ready tasks come first in reserve order, then delayed ones by eta; leased
        tasks stay where they are.
        """
        with self._cond:
            q = self._queue(queue)
            ready = [t.payload for d in q.ready for t in d]
            delayed = [entry[2].payload for entry in sorted(q.delayed)]
            for d in q.ready:
                d.clear()
            q.delayed.clear()
            self._cond.notify_all()
            return ready + delayed

    def join(self, queue: str, timeout: float | None = None) -> None:
        """Test helper: wait until ``queue`` has nothing ready, delayed or in flight.

        Dead letters do not count. Lapsed leases are not reclaimed here (a worker's
        reserve does that), so a crashed consumer keeps ``join`` waiting.

        Raises:
            TimeoutError: the queue was still busy after ``timeout`` real seconds.
        """
        give_up = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                q = self._queues.get(queue)
                n = _EMPTY if q is None else q.lengths()
                if n.ready + n.delayed + n.in_flight == 0:
                    return
                left = None if give_up is None else give_up - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"queue {queue!r} still busy: {n}")
                self._cond.wait(left)


_EMPTY = QueueLengths()
