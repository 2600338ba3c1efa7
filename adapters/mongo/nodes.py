"""MongoNodesBroker: several independent MongoDB deployments used as one broker.

For throughput beyond one primary without sharding, as for Redis nodes: NORMAL
pushes go whole to the next node in turn, reserves start at the next node in turn
and fill up from the others, and counts are summed. FIFO within a priority holds
per node only, as the Broker port allows. HIGH before NORMAL holds across nodes:
every HIGH task of a queue is pushed to the queue's *home* node (CRC-32 of its
name), and a reserve that does not start there asks the home node for HIGH tasks
first. Receipts carry their node's index (``<index>/<receipt>``). A lock or a key
lives on the node its name hashes to, so every process must list the nodes in the
same order.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import TypeVar

from sergeant.errors import BrokerError, ConfigError
from sergeant.protocols import DeadLetter, Delivery, QueueLengths
from sergeant.protocols.broker import (
    check_eta,
    check_limit,
    check_reserve,
    check_seconds,
)
from sergeant.protocols.lock import check_ttl
from sergeant.task import Priority

from .broker import MongoBroker
from .lock import MongoLock

__all__ = ["MongoNodesBroker"]

T = TypeVar("T")


class MongoNodesBroker:
    """One broker over several ``MongoBroker`` nodes (every broker capability).

    Args:
        nodes: the brokers, one per deployment, in the same order everywhere.
    """

    def __init__(self, nodes: Sequence[MongoBroker]) -> None:
        if not nodes:
            raise ConfigError("MongoNodesBroker.nodes must name at least one node")
        self._nodes = list(nodes)
        self._push_turns = itertools.count()
        self._reserve_turns = itertools.count()
        self._turn_lock = threading.Lock()

    def _turn(self, turns: itertools.count[int]) -> int:
        with self._turn_lock:
            return next(turns) % len(self._nodes)

    def _home(self, name: str) -> int:
        return zlib.crc32(name.encode()) % len(self._nodes)

    def _by_name(self, name: str) -> MongoBroker:
        return self._nodes[self._home(name)]

    def _split(self, deliveries: Sequence[Delivery]) -> dict[int, list[Delivery]]:
        """Deliveries per node, receipts unwrapped; foreign receipts dropped."""
        per_node: dict[int, list[Delivery]] = {}
        for d in deliveries:
            index, sep, inner = d.receipt.partition("/")
            if sep and index.isdigit() and int(index) < len(self._nodes):
                per_node.setdefault(int(index), []).append(
                    Delivery(inner, d.payload, d.deliveries)
                )
        return per_node

    def _each(self, call: Callable[[MongoBroker], T]) -> list[T]:
        return [call(node) for node in self._nodes]

    def ensure_indexes(self) -> None:
        """Create the indexes on every node."""
        self._each(MongoBroker.ensure_indexes)

    def push(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        priority: Priority = Priority.NORMAL,
        eta: float | None = None,
    ) -> None:
        """Store the whole batch on one node: the queue's home node for HIGH."""
        check_eta(eta)
        priority = Priority(priority)  # ValueError for anything else
        if not payloads:
            return
        high = priority == Priority.HIGH
        index = self._home(queue) if high else self._turn(self._push_turns)
        self._nodes[index].push(queue, payloads, priority=priority, eta=eta)

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
        """Ack, then take up to ``count`` tasks, HIGH first, from a rotating start."""
        check_reserve(count, lease, wait)
        if ack:
            self.ack(queue, ack)
        give_up = time.monotonic() + wait
        pause = 0.005
        while True:
            got: list[Delivery] = []
            try:
                for index, priority in self._visits(queue):
                    batch = self._nodes[index]._reserve_once(
                        queue, owner, count - len(got), lease, priority
                    )
                    got += [
                        Delivery(f"{index}/{d.receipt}", d.payload, d.deliveries)
                        for d in batch
                    ]
                    if len(got) >= count:
                        break
            except BrokerError:
                # Tasks in hand are not given up for a node that failed after:
                # popped ones exist nowhere else, leased ones would wait for their
                # lease. The failure recurs on the next call.
                if not got:
                    raise
            left = give_up - time.monotonic()
            if got or left <= 0:
                return got
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.1)

    def _visits(self, queue: str) -> list[tuple[int, Priority | None]]:
        """The nodes a reserve asks, in order, and for which priority (None: any)."""
        size = len(self._nodes)
        start = self._turn(self._reserve_turns)
        visits: list[tuple[int, Priority | None]] = [
            ((start + step) % size, None) for step in range(size)
        ]
        home = self._home(queue)
        return visits if start == home else [(home, Priority.HIGH), *visits]

    def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Ack on each delivery's node."""
        for index, mine in self._split(deliveries).items():
            self._nodes[index].ack(queue, mine)

    def release(
        self, queue: str, deliveries: Sequence[Delivery], *, delay: float = 0.0
    ) -> None:
        """Release on each delivery's node."""
        check_seconds("delay", delay, zero=True)
        for index, mine in self._split(deliveries).items():
            self._nodes[index].release(queue, mine, delay=delay)

    def extend(
        self, queue: str, deliveries: Sequence[Delivery], *, lease: float
    ) -> None:
        """Extend on each delivery's node."""
        check_seconds("lease", lease)
        for index, mine in self._split(deliveries).items():
            self._nodes[index].extend(queue, mine, lease=lease)

    def release_owner(self, queue: str, owner: str) -> int:
        """Release the owner's tasks on every node; the total."""
        return sum(self._each(lambda n: n.release_owner(queue, owner)))

    def dead_letter(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Dead-letter on the delivery's node (node 0 for a foreign receipt)."""
        split = self._split([delivery])
        index, mine = next(iter(split.items()), (0, [delivery]))
        self._nodes[index].dead_letter(queue, mine[0], reason)

    def lengths(self, queue: str) -> QueueLengths:
        """Each place summed over the nodes."""
        parts = self._each(lambda n: n.lengths(queue))
        return QueueLengths(
            ready=sum(p.ready for p in parts),
            delayed=sum(p.delayed for p in parts),
            in_flight=sum(p.in_flight for p in parts),
            dead=sum(p.dead for p in parts),
        )

    def purge(self, queue: str) -> int:
        """Purge on every node; the total."""
        return sum(self._each(lambda n: n.purge(queue)))

    def close(self) -> None:
        """Close every node."""
        self._each(MongoBroker.close)

    def queues(self) -> list[str]:
        """The union of the nodes' queue names, sorted."""
        return sorted(set().union(*self._each(MongoBroker.queues)))

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters over all nodes, oldest first."""
        check_limit(limit)
        return [letter for _, letter in self._oldest_dead(queue, limit)]

    def _oldest_dead(self, queue: str, limit: int) -> list[tuple[int, DeadLetter]]:
        tagged = [
            (index, letter)
            for index, node in enumerate(self._nodes)
            for letter in node.dead_letters(queue, limit=limit)
        ]
        tagged.sort(key=lambda pair: pair[1].dead_at)  # stable: per-node order kept
        return tagged[:limit]

    def replay_dead(self, queue: str, *, limit: int | None = None) -> int:
        """Replay the globally oldest dead letters: each node replays its share."""
        check_limit(limit)
        if limit is None:
            return sum(self._each(lambda n: n.replay_dead(queue)))
        shares = [0] * len(self._nodes)
        for index, _ in self._oldest_dead(queue, limit):
            shares[index] += 1
        return sum(
            node.replay_dead(queue, limit=share)
            for node, share in zip(self._nodes, shares, strict=True)
            if share
        )

    def purge_dead(self, queue: str) -> int:
        """Purge dead letters on every node; the total."""
        return sum(self._each(lambda n: n.purge_dead(queue)))

    def lock(self, name: str) -> MongoLock:
        """A handle on the lock ``name``, kept on the node the name hashes to."""
        return self._by_name(name).lock(name)

    def get_key(self, key: str) -> bytes | None:
        """The value under ``key``, read from its node."""
        return self._by_name(key).get_key(key)

    def set_key(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` on the node ``key`` hashes to."""
        check_ttl(ttl)
        self._by_name(key).set_key(key, value, ttl=ttl)

    def delete_key(self, key: str) -> bool:
        """Remove ``key`` from its node."""
        return self._by_name(key).delete_key(key)
