"""The filters, sorts and updates the mongo broker sends, built by pure functions.

A task document (collection ``<prefix>.tasks``)::

    _id         ObjectId, made by the client (a retried insert cannot duplicate)
    queue       str
    priority    int (Priority: HIGH=0 before NORMAL=1)
    ready_at    float, wall time: the task's place in line. The push time, or the
                eta of a delayed task, or the end of a release delay. Leasing never
                changes it, so a released or lapsed task goes back to its old place.
    seq         int64, tie-break for equal ready_at (see ``SeqSource``)
    visible_at  float, wall time from which reserve may hand the task out: equal
                to ready_at while queued, the lease deadline while leased; absent
                on dead letters, which therefore never match ``$lte``.
    state       "queued" | "leased" | "dead" (ready vs delayed is visible_at vs now)
    payload     Binary, the encoded task
    deliveries  int, handouts so far (a release takes its own back)
    lease_owner str: only while leased
    lease_id    str: the claim's token, while leased and on a dead letter
    reason str, dead_at float: only on dead letters

Filters list their most selective cheap field first. A server ignores the order
(its planner picks an index), but mongomock has no indexes and evaluates fields in
order for every document, so a leading ``lease_id`` or ``seq`` range spares it an
O(documents x list) ``$in`` scan.

Every task filter names the queue, even where ``_id`` alone would find the
document: a settle acts only on the queue it was called for (as on every other
broker), and on a collection sharded on ``queue`` the command goes to the one
shard that owns the queue instead of to all of them.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from bson import Binary, ObjectId
from bson.errors import InvalidId

from sergeant.protocols import Delivery

QUEUED, LEASED, DEAD = "queued", "leased", "dead"
RESERVE_SORT = [("priority", 1), ("ready_at", 1), ("seq", 1)]
DEAD_SORT = [("dead_at", 1), ("seq", 1)]
LEASE_FIELDS = {"lease_owner": "", "lease_id": ""}

Doc = dict[str, Any]


class SeqSource:
    """Strictly increasing int64s: nanoseconds since the epoch, bumped past the last.

    Why not the ObjectId: its order is seconds, then a per-process random value,
    then a counter that starts at random and wraps, so ids made in one second by two
    processes (or across a wrap) do not sort in creation order. These values are
    strictly increasing within a process (one source per process, shared by every
    broker, so two brokers in one process agree) and follow the wall clock across
    processes; they only break ties between equal ``ready_at`` values.
    """

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> range:
        """``n`` consecutive fresh values."""
        with self._lock:
            start = max(self._last + 1, time.time_ns())
            self._last = start + n - 1
            return range(start, start + n)


SEQ = SeqSource()


def new_tasks(
    queue: str, payloads: Sequence[bytes], priority: int, ready_at: float
) -> list[Doc]:
    """Documents for freshly pushed tasks, in push order."""
    return [
        {
            "_id": ObjectId(),
            "queue": queue,
            "priority": priority,
            "ready_at": ready_at,
            "seq": seq,
            "visible_at": ready_at,
            "state": QUEUED,
            "payload": Binary(bytes(payload)),
            "deliveries": 0,
        }
        for payload, seq in zip(payloads, SEQ.take(len(payloads)), strict=True)
    ]


def ready_filter(queue: str, now: float, priority: int | None = None) -> Doc:
    """Tasks reserve may hand out: queued and due, or leased with a lapsed lease.

    ``ready_at <= now`` is implied by ``visible_at <= now`` (visible_at is never
    earlier than ready_at, except after a release, when both are past); it is
    spelled out so the planner can bound the index scan on it. ``priority``
    restricts it to one priority (``MongoNodesBroker`` asks for HIGH alone).
    """
    where: Doc = {"queue": queue}
    if priority is not None:
        where["priority"] = priority
    where.update(ready_at={"$lte": now}, visible_at={"$lte": now})
    return where


def lease_update(owner: str, token: str, until: float) -> Doc:
    """Lease to ``owner`` under ``token`` until ``until``; count the delivery."""
    return {
        "$set": {
            "state": LEASED,
            "visible_at": until,
            "lease_owner": owner,
            "lease_id": token,
        },
        "$inc": {"deliveries": 1},
    }


def claim_filter(queue: str, candidates: Sequence[Doc], now: float) -> Doc:
    """The candidates that are still ready; re-checked per document on the server.

    ``visible_at <= now`` is what makes the claim safe: the server evaluates it
    again under each document's write lock, and a task another worker has just
    leased has ``visible_at`` in the future, so it is claimed once.
    """
    seqs = [doc["seq"] for doc in candidates]
    return {
        "seq": {"$gte": min(seqs), "$lte": max(seqs)},
        "_id": {"$in": [doc["_id"] for doc in candidates]},
        "visible_at": {"$lte": now},
        "queue": queue,
    }


def token_filter(queue: str, ids: Sequence[ObjectId], token: str) -> Doc:
    """The documents among ``ids`` that one claim (``token``) leased."""
    return {"lease_id": token, "_id": {"$in": list(ids)}, "queue": queue}


def receipt(doc: Doc, token: str | None) -> Delivery:
    """The ``Delivery`` for a claimed document; ``token`` is None when unleased."""
    handle = str(doc["_id"]) if token is None else f"{doc['_id']}:{token}"
    return Delivery(handle, bytes(doc["payload"]), doc["deliveries"])


def parse_receipt(handle: str) -> tuple[ObjectId, str | None] | None:
    """``(_id, lease token or None)``, or None for a receipt this broker never made."""
    oid, _, token = handle.partition(":")
    try:
        return ObjectId(oid), token or None
    except (InvalidId, TypeError):
        return None


def leased_filter(queue: str, deliveries: Iterable[Delivery]) -> Doc | None:
    """Leased tasks of ``queue`` still held under the receipts' leases, or None if
    there are none.

    A lease token names one claim, so a stale receipt (its lease lapsed and the task
    went to another worker) matches nothing and cannot disturb the new holder; a
    receipt of another queue's task matches nothing either. ``queue`` is repeated
    in each ``$or`` clause so that each clause stays a plain ``_id`` lookup.
    """
    groups: dict[str, list[ObjectId]] = {}
    for delivery in deliveries:
        parsed = parse_receipt(delivery.receipt)
        if parsed is not None and parsed[1] is not None:
            groups.setdefault(parsed[1], []).append(parsed[0])
    clauses = [
        {"lease_id": token, "_id": {"$in": ids}, "queue": queue, "state": LEASED}
        for token, ids in groups.items()
    ]
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}


def release_update(now: float, delay: float) -> Doc:
    """Back to queued, visible after ``delay``; the handout is not counted.

    Without a delay the task keeps ``ready_at`` and so its place at the head of the
    line; with one it is placed as if pushed when the delay ends.
    """
    fields: Doc = {"state": QUEUED, "visible_at": now + delay}
    if delay > 0:
        fields["ready_at"] = now + delay
    return {"$set": fields, "$unset": dict(LEASE_FIELDS), "$inc": {"deliveries": -1}}


def place_projection() -> Doc:
    """The fields ``reorder`` needs (a fresh dict: mongomock mutates projections)."""
    return {"_id": 1, "priority": 1, "ready_at": 1, "seq": 1, "lease_id": 1}


def reorder(
    queue: str,
    deliveries: Iterable[Delivery],
    held: Iterable[Doc],
    now: float,
    delay: float,
) -> list[tuple[Doc, Doc]] | None:
    """Per-task ``(filter, update)`` pairs that release ``held`` in the order of
    ``deliveries``; None when one ``release_update`` for all already does.

    A released task keeps its place in line (``ready_at``, ``seq``), which puts the
    tasks back in the order they were taken. Given in another order, they share
    out the same places again, per priority, in the order given (with a delay,
    the same ``ready_at`` and the ``seq`` values shared out), as the other
    brokers put them back.
    """
    docs = {doc["_id"]: doc for doc in held}
    order = []
    for delivery in deliveries:
        parsed = parse_receipt(delivery.receipt)
        doc = docs.pop(parsed[0], None) if parsed is not None else None
        if doc is not None:
            order.append(doc)
    lines: dict[int, list[Doc]] = {}
    for doc in order:
        lines.setdefault(doc["priority"], []).append(doc)
    places = {p: sorted((d["ready_at"], d["seq"]) for d in line)
              for p, line in lines.items()}  # fmt: skip
    if all(
        [(d["ready_at"], d["seq"]) for d in line] == places[p]
        for p, line in lines.items()
    ):
        return None
    writes = []
    for priority, line in lines.items():
        for doc, (ready_at, seq) in zip(line, places[priority], strict=True):
            update = release_update(now, delay)
            update["$set"]["seq"] = seq
            if delay <= 0:
                update["$set"]["ready_at"] = ready_at
            where = {"_id": doc["_id"], "lease_id": doc["lease_id"], "queue": queue,
                     "state": LEASED}  # fmt: skip
            writes.append((where, update))
    return writes


def extend_update(until: float) -> Doc:
    """Move the lease deadline to ``until``."""
    return {"$set": {"visible_at": until}}


def owner_filter(queue: str, owner: str) -> Doc:
    """Every task of ``queue`` leased to ``owner`` (lapsed or not)."""
    return {"queue": queue, "lease_owner": owner, "state": LEASED}


def owner_release_update(now: float) -> Doc:
    """Ready now, in its old place, delivery count kept (a crash, not a release)."""
    return {"$set": {"state": QUEUED, "visible_at": now}, "$unset": dict(LEASE_FIELDS)}


def holder_filter(queue: str, delivery: Delivery) -> Doc | None:
    """The task of ``queue`` still leased under this receipt (its lease may have
    lapsed: until a reserve retakes it, the holder may still settle it).

    Leased, not dead: ``lease_id`` stays on a dead letter, and a second
    dead-lettering with the same receipt (or one retried after a lost reply)
    would rewrite its reason, time and place among the dead letters. It matches
    nothing instead: the first one stands.
    """
    parsed = parse_receipt(delivery.receipt)
    if parsed is None or parsed[1] is None:
        return None
    return {"lease_id": parsed[1], "_id": parsed[0], "queue": queue, "state": LEASED}


def storable(text: str) -> str:
    """``text`` with any lone surrogate written as a ``\\udcxx`` escape.

    Python puts lone surrogates in a str decoded with ``surrogateescape``, such as
    a file name from ``os.fsdecode`` that is not UTF-8, so an exception's message
    can hold one; BSON strings are UTF-8, which cannot encode them. A dead
    letter's reason is kept this way rather than refused, so the task is still
    recorded. Any other text is returned unchanged.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def dead_update(reason: str, now: float) -> Doc:
    """Turn a task into a dead letter in place (one atomic document update).

    A fresh ``seq`` orders dead letters by when they died (ties of ``dead_at``).
    """
    return {
        "$set": {
            "state": DEAD,
            "reason": storable(reason),
            "dead_at": now,
            "seq": SEQ.take(1)[0],
        },
        "$unset": {"visible_at": "", "lease_owner": ""},
    }


def new_dead_letter(queue: str, payload: bytes, reason: str, now: float) -> Doc:
    """A dead letter for a task no longer stored (reserved without a lease)."""
    return {
        "_id": ObjectId(),
        "queue": queue,
        "priority": 1,
        "ready_at": now,
        "seq": SEQ.take(1)[0],
        "state": DEAD,
        "payload": Binary(bytes(payload)),
        "deliveries": 0,
        "reason": storable(reason),
        "dead_at": now,
    }


def dead_filter(queue: str) -> Doc:
    """The dead letters of ``queue``."""
    return {"queue": queue, "state": DEAD}


def replay_update(now: float) -> Doc:
    """A dead letter made a fresh ready NORMAL task at the back of the line.

    ``seq`` stays: dead-lettering set it, so replayed letters keep their order.
    """
    return {
        "$set": {
            "state": QUEUED,
            "priority": 1,
            "ready_at": now,
            "visible_at": now,
            "deliveries": 0,
        },
        "$unset": {"reason": "", "dead_at": "", "lease_id": ""},
    }


def count_filters(queue: str, now: float) -> dict[str, Doc]:
    """One ``count_documents`` filter per place, keyed like ``QueueLengths``."""
    return {
        "ready": ready_filter(queue, now),
        "delayed": {"queue": queue, "state": QUEUED, "visible_at": {"$gt": now}},
        "in_flight": {"queue": queue, "state": LEASED, "visible_at": {"$gt": now}},
        "dead": dead_filter(queue),
    }


def live_filter(queue: str) -> Doc:
    """Every task of ``queue`` that is not a dead letter (what ``purge`` drops)."""
    return {"queue": queue, "state": {"$in": [QUEUED, LEASED]}}


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """``items`` in consecutive slices of at most ``size``."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
