"""Queue listing and dead-letter handling for ``MongoBroker`` (SupportsInspection).

Dead letters stay in the tasks collection with ``state: "dead"`` (see
``_queries.py``): dead-lettering is then one atomic update of the task's own
document, with no window in which a task is in two places or none.
"""

from __future__ import annotations

import functools
from typing import Any

from sergeant.clock import Clock
from sergeant.protocols import DeadLetter

from . import _queries as q
from ._guard import Guard

__all__ = ["Inspector"]

_REPLAY_BATCH = 1000  # ids per update_many when replaying


class Inspector:
    """The SupportsInspection queries, over the tasks collection.

    Args:
        tasks: the tasks collection.
        guard: runs (and retries, and translates) each driver call.
        clock: the wall clock, for the new ``ready_at`` of replayed tasks.
    """

    def __init__(self, tasks: Any, guard: Guard, clock: Clock) -> None:
        self._tasks = tasks
        self._guard = guard
        self._clock = clock

    def queues(self) -> list[str]:
        """Every queue name with a document, sorted (``distinct`` on the index)."""
        names = self._guard.run("queues", lambda: self._tasks.distinct("queue"))
        return sorted(names)

    def dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, by ``dead_at`` then ``seq``."""
        if limit <= 0:  # limit(0) would mean "no limit" to the server
            return []
        docs = self._guard.run(
            "dead_letters",
            lambda: list(
                self._tasks.find(
                    q.dead_filter(queue), {"payload": 1, "reason": 1, "dead_at": 1}
                )
                .sort(q.DEAD_SORT)
                .limit(limit)
            ),
        )
        return [
            DeadLetter(bytes(doc["payload"]), doc["reason"], doc["dead_at"])
            for doc in docs
        ]

    def replay_dead(self, queue: str, limit: int | None) -> int:
        """Make the oldest dead letters fresh ready NORMAL tasks, in that order.

        Each is updated in place (``_id``, payload and ``seq`` kept) by an
        ``update_many`` whose filter repeats ``state: "dead"``, so two concurrent
        replays cannot revive one letter twice. They all get ``ready_at = now``
        and keep the ``seq`` that dead-lettering gave them, so they come out in
        the order they died. No ``bulk_write``: see docs/mongo.md on mongomock.
        """
        if limit is not None and limit <= 0:
            return 0

        def oldest() -> list[Any]:
            cursor = self._tasks.find(q.dead_filter(queue), {"_id": 1})
            cursor = cursor.sort(q.DEAD_SORT)
            if limit is not None:
                cursor = cursor.limit(limit)
            return [doc["_id"] for doc in cursor]

        ids = self._guard.run("replay_dead", oldest)
        replayed = 0
        for batch in q.chunks(ids, _REPLAY_BATCH):
            where = {"state": q.DEAD, "_id": {"$in": list(batch)}, "queue": queue}
            update = q.replay_update(self._clock())
            revive = functools.partial(self._tasks.update_many, where, update)
            result = self._guard.run("replay_dead", revive)
            replayed += result.modified_count
        return replayed

    def purge_dead(self, queue: str) -> int:
        """Delete the queue's dead letters in one ``delete_many``."""
        result = self._guard.run(
            "purge_dead", lambda: self._tasks.delete_many(q.dead_filter(queue))
        )
        return int(result.deleted_count)
