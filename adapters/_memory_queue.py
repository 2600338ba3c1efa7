"""The state of one queue of ``MemoryBroker``: plain containers, no locking.

The broker holds its lock around every call here. Ready tasks sit in one deque per
priority; delayed tasks and lease deadlines sit in heaps whose stale entries (a
lease extended or settled since) are skipped when they surface, which keeps push,
reserve and ack O(1) or O(log n) per task. Only a reserve reclaims lapsed leases
(``settle``); ``lengths`` counts them as ready by walking the leases, O(in flight),
so that counting never takes a task from a holder that may still settle it.
"""

from __future__ import annotations

import heapq
from collections import deque

from sergeant.protocols import DeadLetter, QueueLengths
from sergeant.task import Priority


class StoredTask:
    """One stored task; ``deliveries`` counts its handouts (releases undo theirs)."""

    __slots__ = ("deliveries", "payload", "priority")

    def __init__(self, payload: bytes, priority: Priority) -> None:
        self.payload = payload
        self.priority = priority
        self.deliveries = 0


class Lease:
    """A stored task leased to ``owner`` until ``deadline`` (wall time)."""

    __slots__ = ("deadline", "owner", "task")

    def __init__(self, task: StoredTask, owner: str, deadline: float) -> None:
        self.task, self.owner, self.deadline = task, owner, deadline


class QueueState:
    """The state of one queue. Heaps hold stale entries that are skipped lazily."""

    def __init__(self) -> None:
        self.ready: tuple[deque[StoredTask], ...] = tuple(deque() for _ in Priority)
        self.delayed: list[tuple[float, int, StoredTask]] = []  # (eta, seq, task)
        self.leases: dict[str, Lease] = {}  # receipt -> lease
        self.deadlines: list[tuple[float, str]] = []  # (deadline, receipt)
        self.dead: list[DeadLetter] = []

    def lengths(self, now: float | None = None) -> QueueLengths:
        """The counts per place; with ``now``, a lapsed lease counts as ready.

        Counting does not reclaim: a lapsed lease stays its holder's, whose late
        ack or dead-letter still settles it, until a reserve retakes it (as on
        the other brokers). Without ``now`` every lease counts as in flight.
        """
        lapsed = 0
        if now is not None:
            lapsed = sum(1 for lease in self.leases.values() if lease.deadline <= now)
        return QueueLengths(
            ready=sum(len(d) for d in self.ready) + lapsed,
            delayed=len(self.delayed),
            in_flight=len(self.leases) - lapsed,
            dead=len(self.dead),
        )

    def clear_live(self) -> None:
        """Drop every ready, delayed and leased task; keep the dead letters."""
        for ready in self.ready:
            ready.clear()
        self.delayed.clear()
        self.leases.clear()
        self.deadlines.clear()

    def settle(self, now: float) -> None:
        """Reclaim lapsed leases (to the head, in the order they were handed out)
        and promote due delayed tasks (to the tail, in eta order): what a reserve
        does first, and only a reserve, so a lapsed lease stays its holder's
        until another worker retakes the task."""
        self.reclaim(now)
        self.promote(now)

    def reclaim(self, now: float) -> None:
        """Put the tasks of lapsed leases back at the head, first handed out first."""
        lapsed: list[tuple[int, Lease]] = []
        while self.deadlines and self.deadlines[0][0] <= now:
            _, receipt = heapq.heappop(self.deadlines)
            lease = self.leases.get(receipt)
            if lease is not None and lease.deadline <= now:  # else extended/settled
                del self.leases[receipt]
                lapsed.append((int(receipt), lease))  # receipts count up
        lapsed.sort(key=lambda pair: pair[0])
        for _, lease in reversed(lapsed):  # appendleft: the first taken ends first
            self.ready[lease.task.priority].appendleft(lease.task)

    def promote(self, now: float) -> None:
        """Move due delayed tasks to the tail of their line, in eta order.

        Safe at any time (it changes no one's lease): a push does it first so
        that tasks which fell due before it stay ahead of the pushed ones.
        """
        while self.delayed and self.delayed[0][0] <= now:
            task = heapq.heappop(self.delayed)[2]
            self.ready[task.priority].append(task)

    def next_change(self) -> float | None:
        """The earliest wall time at which ``settle`` would find something to do."""
        times = [h[0][0] for h in (self.delayed, self.deadlines) if h]
        return min(times) if times else None
