"""How ``MongoBroker.reserve`` takes tasks without handing one to two workers.

One task: a single ``find_one_and_update`` (or ``find_one_and_delete`` without a
lease) with the reserve filter and sort, one round trip. The server picks the first
matching document and updates it atomically; a racing worker's identical command
re-evaluates the filter and moves on to the next document.

Several tasks: a *batched claim* in three round trips, whatever ``count`` is,
instead of ``count`` ``find_one_and_update`` calls:

1. ``find`` up to ``count`` candidate ids in reserve order;
2. ``update_many`` them to leased under a fresh random lease token, with a filter
   that repeats ``visible_at <= now``. The server evaluates that filter again for
   each document under its write lock, and a document another worker has just
   leased has ``visible_at`` in the future: it is claimed once, by one of them;
3. ``find`` what carries the token: exactly this claim's tasks.

A claim that lost candidates to a racing worker comes back short and tries again,
at most ``_CLAIM_ROUNDS`` times. ``modified_count`` is never trusted: after a lost
reply the guard retries the update, which then modifies nothing, while the token
still finds what the first attempt leased.
"""

from __future__ import annotations

import os
from typing import Any

from pymongo import ReturnDocument

from sergeant.clock import Clock
from sergeant.protocols import Delivery

from . import _queries as q
from ._guard import Guard, log

__all__ = ["Claimer"]

_CLAIM_ROUNDS = 3


def _payload_fields() -> dict[str, int]:
    # A fresh dict per call: mongomock adds "_id" to the projection it is given.
    return {"payload": 1, "deliveries": 1}


# Without a lease a batch is still claimed under a lease of this many seconds, then
# deleted. Should the delete fail, the error reaches the caller, which never got the
# tasks, and they come back by themselves when this lease lapses.
_UNLEASED_HOLD = 60.0


class Claimer:
    """One reserve attempt (no waiting) over the tasks collection.

    Args:
        tasks: the tasks collection.
        guard: runs (and retries, and translates) each driver call.
        clock: the wall clock for ``now`` and lease deadlines.
    """

    def __init__(self, tasks: Any, guard: Guard, clock: Clock) -> None:
        self._tasks = tasks
        self._guard = guard
        self._clock = clock

    def reserve_once(
        self,
        queue: str,
        owner: str,
        count: int,
        lease: float | None,
        priority: int | None = None,
    ) -> list[Delivery]:
        """Up to ``count`` tasks, leased to ``owner`` (removed if ``lease`` is None).

        ``priority`` takes tasks of that priority only.
        """
        if count <= 0:
            return []
        if count == 1:
            return self._take_one(queue, owner, lease, priority)
        token = os.urandom(8).hex()
        hold = _UNLEASED_HOLD if lease is None else lease
        claimed_at = self._clock()
        docs: list[q.Doc] = []
        for _ in range(_CLAIM_ROUNDS):
            want = count - len(docs)
            won, complete = self._claim(
                queue, owner, want, token, lease=hold, priority=priority
            )
            docs += won
            if complete:
                break
        if lease is not None:
            return [q.receipt(doc, token) for doc in docs]
        if docs:
            gone = q.token_filter(queue, [doc["_id"] for doc in docs], token)
            result = self._guard.run("reserve", lambda: self._tasks.delete_many(gone))
            if self._clock() >= claimed_at + hold and result.deleted_count < len(docs):
                # The hold lapsed before the delete (a stall of a minute), and
                # another reserve may have taken some of these: the count cannot
                # say which, and at most once must not hand any out twice.
                log.warning(
                    "dropping %d tasks popped at most once from queue %s: their "
                    "hold lapsed before they were deleted (%d deleted)",
                    len(docs),
                    queue,
                    result.deleted_count,
                )
                return []
        return [q.receipt(doc, None) for doc in docs]

    def _claim(
        self,
        queue: str,
        owner: str,
        want: int,
        token: str,
        *,
        lease: float,
        priority: int | None,
    ) -> tuple[list[q.Doc], bool]:
        """Lease up to ``want`` tasks under ``token`` (steps 1 to 3 above).

        Returns the won documents in reserve order, and whether every candidate
        was won (if not, a racing worker took some and another round may find more).
        """
        tasks, now = self._tasks, self._clock()
        candidates = self._guard.run(
            "reserve",
            lambda: list(
                tasks.find(q.ready_filter(queue, now, priority), {"seq": 1})
                .sort(q.RESERVE_SORT)
                .limit(want)
            ),
        )
        if not candidates:
            return [], True
        ids = [doc["_id"] for doc in candidates]
        update = q.lease_update(owner, token, now + lease)
        self._guard.run(
            "reserve",
            lambda: tasks.update_many(q.claim_filter(queue, candidates, now), update),
        )
        won = self._guard.run(
            "reserve",
            lambda: list(
                tasks.find(q.token_filter(queue, ids, token), _payload_fields())
            ),
        )
        place = {oid: i for i, oid in enumerate(ids)}
        won.sort(key=lambda doc: place[doc["_id"]])
        return won, len(won) == len(candidates)

    def _take_one(
        self, queue: str, owner: str, lease: float | None, priority: int | None
    ) -> list[Delivery]:
        """One task in one round trip: ``find_one_and_update`` / ``_and_delete``."""
        now = self._clock()
        ready = q.ready_filter(queue, now, priority)
        if lease is None:
            doc = self._guard.run(
                "reserve",
                lambda: self._tasks.find_one_and_delete(
                    ready,
                    projection=_payload_fields(),
                    sort=q.RESERVE_SORT,
                ),
            )
            if doc is None:
                return []
            doc["deliveries"] += 1  # this handout, on a document that is gone
            return [q.receipt(doc, None)]
        token = os.urandom(8).hex()
        doc = self._guard.run(
            "reserve",
            lambda: self._tasks.find_one_and_update(
                ready,
                q.lease_update(owner, token, now + lease),
                projection=_payload_fields(),
                sort=q.RESERVE_SORT,
                return_document=ReturnDocument.AFTER,
            ),
        )
        return [] if doc is None else [q.receipt(doc, token)]
