"""MongoBroker: tasks kept durably, and queryable, in one MongoDB collection.

Every task is one document; its state changes are single-document updates, which
MongoDB applies atomically with the filter re-checked under the document's lock.
That is the whole concurrency story: nothing here needs transactions, so it runs
on a standalone server, a replica set or a sharded cluster alike.

How a reserve claims tasks without handing one to two workers: see ``_claim.py``.
"""

from __future__ import annotations

import contextlib
import functools
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from pymongo import MongoClient, WriteConcern
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from sergeant.clock import Clock
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

from . import _queries as q
from ._claim import Claimer
from ._guard import Guard, serialize_for
from ._inspect import Inspector
from .lock import MongoKeys, MongoLock
from .schema import KEY_INDEXES, LOCK_INDEXES, TASK_INDEXES, create_indexes

__all__ = ["MongoBroker"]

_FIRST_POLL, _MAX_POLL = 0.005, 0.1  # reserve(wait=...) polling, seconds
_DUPLICATE_KEY = 11000


class MongoBroker:
    """A broker on one MongoDB deployment; implements every broker capability.

    Args:
        client: a ``pymongo.MongoClient`` (or a ``Database``, whose name then wins
            over ``database``). Tests may hand in a ``mongomock`` client.
        database: the database holding the collections.
        prefix: collection name prefix: ``<prefix>.tasks``, ``.locks``, ``.keys``.
        clock: the wall clock for etas, leases, ``dead_at`` and ttls. Every client
            of one database must agree on it (keep hosts NTP-synced).
        w: write concern. None (the default) keeps one set on the client or in
            the URL (``?w=majority``) and otherwise uses 1: the primary has the
            write. Use ``"majority"`` on a replica set so that an acknowledged
            push survives a failover.
        retry_budget: seconds spent retrying a network failure before
            ``BrokerUnavailable``.
        owns_client: close ``client`` in ``close()`` (``from_url`` sets it).
    """

    def __init__(
        self,
        client: Any,
        *,
        database: str = "sergeant",
        prefix: str = "sergeant",
        clock: Clock = time.time,
        w: int | str | None = None,
        retry_budget: float = 10.0,
        owns_client: bool = False,
    ) -> None:
        is_client = hasattr(type(client), "list_database_names")
        db = client.get_database(database) if is_client else client
        concern = WriteConcern(w=1) if w is None else WriteConcern(w=w)
        # isinstance, not truthiness: a mongomock Database has no write_concern
        # attribute and hands back a collection of that name instead.
        inherited = getattr(db, "write_concern", None)
        if w is None and isinstance(inherited, WriteConcern) and inherited.document:
            concern = inherited
        self._client = client if is_client else db.client
        self._tasks = db.get_collection(f"{prefix}.tasks", write_concern=concern)
        self._locks = db.get_collection(f"{prefix}.locks", write_concern=concern)
        self._keys = db.get_collection(f"{prefix}.keys", write_concern=concern)
        self._clock = clock
        self._guard = Guard(retry_budget=retry_budget, serial=serialize_for(client))
        self._owns_client = owns_client
        self._indexed = False
        self._closed = False
        self._keystore = MongoKeys(self._keys, self._guard, clock)
        self._inspector = Inspector(self._tasks, self._guard, clock)
        self._claimer = Claimer(self._tasks, self._guard, clock)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MongoBroker:
        """A broker on a new ``MongoClient(url)``, closed with the broker.

        ``mongodb+srv://`` and every URL option (``tls=true``, ``replicaSet=...``,
        ``w=majority``, ``serverSelectionTimeoutMS=...``) pass through to pymongo.
        The database is ``options["database"]``, else the URL's path
        (``mongodb://host/jobs``), else ``sergeant``. Other ``options`` go to the
        constructor.

        Raises:
            ConfigError: pymongo cannot use the URL (the message hides passwords).
        """
        try:
            client: MongoClient[dict[str, Any]] = MongoClient(url)
        except (PyMongoError, ValueError) as error:  # bad URI, port, srv lookup
            shown = re.sub(r"//[^/@]*@", "//***@", url)
            raise ConfigError(f"bad MongoDB URL {shown!r}: {error}") from None
        name = options.pop("database", None)
        if name is None:
            name = client.get_default_database(default="sergeant").name
        return cls(client, database=name, owns_client=True, **options)

    def ensure_indexes(self) -> None:
        """Create the collections' indexes; idempotent, and called on first use.

        Raises:
            BrokerError: an index of the same name exists with another spec.
        """
        for collection, models in (
            (self._tasks, TASK_INDEXES),
            (self._locks, LOCK_INDEXES),
            (self._keys, KEY_INDEXES),
        ):
            self._guard.run(
                "create_indexes", functools.partial(create_indexes, collection, models)
            )
        self._indexed = True

    def _ready(self) -> Any:
        """The tasks collection, once indexed; refuses use after ``close``."""
        if self._closed:
            raise BrokerError("MongoBroker is closed")
        if not self._indexed:
            self.ensure_indexes()  # concurrent first calls both run it: idempotent
        return self._tasks

    def push(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        priority: Priority = Priority.NORMAL,
        eta: float | None = None,
    ) -> None:
        """Insert the tasks in one ``insert_many``; delayed until ``eta`` if future."""
        check_eta(eta)
        level = int(Priority(priority))  # ValueError for anything else
        tasks = self._ready()
        if not payloads:
            return
        now = self._clock()
        ready_at = now if eta is None else max(eta, now)
        docs = q.new_tasks(queue, payloads, level, ready_at)

        def insert() -> None:
            try:
                tasks.insert_many(docs, ordered=False)
            except BulkWriteError as error:
                # The _ids are ours and fresh: a duplicate means an earlier attempt
                # of this very insert landed before its connection failed.
                errors = error.details.get("writeErrors", [])
                if not errors or any(e["code"] != _DUPLICATE_KEY for e in errors):
                    raise

        self._guard.run("push", insert)

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
        """Ack ``ack``, then lease up to ``count`` ready tasks, HIGH first.

        Lapsed leases and due delayed tasks match the same ``visible_at <= now``
        filter as queued tasks, so reclaiming and promoting take no extra step.
        While nothing is ready it polls every 5 ms, growing to 100 ms, for up to
        ``wait`` seconds.
        """
        check_reserve(count, lease, wait)
        self._ready()
        if ack:
            self.ack(queue, ack)
        give_up = time.monotonic() + wait
        pause = _FIRST_POLL
        while True:
            got = self._reserve_once(queue, owner, count, lease)
            left = give_up - time.monotonic()
            if got or left <= 0:
                return got
            time.sleep(min(pause, left))
            pause = min(pause * 2, _MAX_POLL)

    def _reserve_once(
        self,
        queue: str,
        owner: str,
        count: int,
        lease: float | None,
        priority: Priority | None = None,
    ) -> list[Delivery]:
        """One reserve attempt without waiting; ``MongoNodesBroker`` calls it too.

        ``priority`` takes tasks of that priority only.
        """
        self._ready()
        level = None if priority is None else int(priority)
        return self._claimer.reserve_once(queue, owner, count, lease, level)

    def _on_held(
        self,
        what: str,
        queue: str,
        deliveries: Sequence[Delivery],
        op: Callable[[Any, q.Doc], Any],
    ) -> None:
        """``op(tasks, filter)`` on the tasks of ``queue`` still held under
        ``deliveries``' leases.

        A receipt whose lease lapsed and went to another worker matches nothing, so
        it cannot disturb the new holder; nor does one of another queue's task;
        unleased and unknown receipts are ignored.
        """
        tasks = self._ready()
        held = q.leased_filter(queue, deliveries)
        if held is not None:
            self._guard.run(what, lambda: op(tasks, held))

    def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Delete the tasks still held under these receipts, in one ``delete_many``."""
        self._on_held(
            "ack", queue, deliveries, lambda tasks, held: tasks.delete_many(held)
        )

    def release(
        self, queue: str, deliveries: Sequence[Delivery], *, delay: float = 0.0
    ) -> None:
        """Give held tasks back at the head of their line in the order given, or
        after ``delay``; the handout is not counted.

        Given in the order they were taken (the worker's case), they keep their
        places: one ``update_many``. In another order they share those places out
        again (``_queries.reorder``): one ``update_one`` per task, since a
        ``bulk_write`` is what mongomock cannot run (docs/mongo.md).
        """
        check_seconds("delay", delay, zero=True)
        now = self._clock()

        def give_back(tasks: Any, held: q.Doc) -> None:
            places = tasks.find(held, q.place_projection())
            writes = q.reorder(queue, deliveries, places, now, delay)
            if writes is None:
                tasks.update_many(held, q.release_update(now, delay))
                return
            for where, update in writes:
                tasks.update_one(where, update)

        self._on_held("release", queue, deliveries, give_back)

    def extend(
        self, queue: str, deliveries: Sequence[Delivery], *, lease: float
    ) -> None:
        """Move the deadline of the leases still held to ``lease`` s from now."""
        check_seconds("lease", lease)
        update = q.extend_update(self._clock() + lease)
        self._on_held(
            "extend", queue, deliveries, lambda t, h: t.update_many(h, update)
        )

    def release_owner(self, queue: str, owner: str) -> int:
        """Make every task leased to ``owner`` ready now, in its old place."""
        tasks = self._ready()
        update = q.owner_release_update(self._clock())
        result = self._guard.run(
            "release_owner",
            lambda: tasks.update_many(q.owner_filter(queue, owner), update),
        )
        return int(result.modified_count)

    def dead_letter(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Turn the held task into a dead letter in place (one atomic update).

        A task reserved with ``lease=None`` (or a receipt this broker never
        issued) gets its payload recorded as a new dead letter. A leased one only
        while its lease holds: a holder whose lease lapsed and went to another
        worker records nothing, for the task lives on there (a second record
        would run it twice once replayed), as on the other brokers. A lone
        surrogate in ``reason`` is stored escaped (see ``_queries.storable``).
        """
        tasks = self._ready()
        now = self._clock()
        held = q.holder_filter(queue, delivery)
        if held is not None:
            self._guard.run(
                "dead_letter",
                lambda: tasks.update_one(held, q.dead_update(reason, now)),
            )
            return
        letter = q.new_dead_letter(queue, delivery.payload, reason, now)

        def insert() -> None:
            # The _id is ours and fresh: a duplicate means an earlier attempt of
            # this very insert landed before its reply was lost. Recorded once.
            with contextlib.suppress(DuplicateKeyError):
                tasks.insert_one(letter)

        self._guard.run("dead_letter", insert)

    def lengths(self, queue: str) -> QueueLengths:
        """Count each place with an index-backed ``count_documents``.

        A lapsed lease counts as ready: reserve would hand it out now.
        """
        tasks = self._ready()
        filters = q.count_filters(queue, self._clock())
        counts = {
            place: self._guard.run(
                "lengths", functools.partial(tasks.count_documents, where)
            )
            for place, where in filters.items()
        }
        return QueueLengths(**counts)

    def purge(self, queue: str) -> int:
        """Delete the queue's ready, delayed and in-flight tasks; keep dead letters."""
        tasks = self._ready()
        result = self._guard.run(
            "purge", lambda: tasks.delete_many(q.live_filter(queue))
        )
        return int(result.deleted_count)

    def close(self) -> None:
        """Refuse further use; close the client if this broker made it."""
        self._closed = True
        if self._owns_client:
            self._client.close()

    # SupportsInspection: see _inspect.py

    def queues(self) -> list[str]:
        """Names of the queues holding any task or dead letter, sorted."""
        self._ready()
        return self._inspector.queues()

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``queue``, oldest first."""
        check_limit(limit)
        self._ready()
        return self._inspector.dead_letters(queue, limit)

    def replay_dead(self, queue: str, *, limit: int | None = None) -> int:
        """Make dead letters fresh ready NORMAL tasks, oldest first; return count."""
        check_limit(limit)
        self._ready()
        return self._inspector.replay_dead(queue, limit)

    def purge_dead(self, queue: str) -> int:
        """Delete the queue's dead letters; return how many."""
        self._ready()
        return self._inspector.purge_dead(queue)

    # SupportsLocks and SupportsKeys: see lock.py

    def lock(self, name: str) -> MongoLock:
        """A new handle, with its own random token, on the lock called ``name``."""
        self._ready()
        return MongoLock(self._locks, self._guard, self._clock, name)

    def get_key(self, key: str) -> bytes | None:
        """The value under ``key``, or None when missing or lapsed."""
        self._ready()
        return self._keystore.get(key)

    def set_key(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` (an upsert); it lapses after ``ttl`` s."""
        check_ttl(ttl)
        self._ready()
        self._keystore.set(key, value, ttl)

    def delete_key(self, key: str) -> bool:
        """Remove ``key``; True when it existed and had not lapsed."""
        self._ready()
        return self._keystore.delete(key)
