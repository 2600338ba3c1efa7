"""The collections and indexes of the mongo broker, as data.

Three collections per prefix (default ``sergeant``): ``<prefix>.tasks`` holds every
task of every queue, live or dead; ``<prefix>.locks`` and ``<prefix>.keys`` hold the
locks and the key-value store. ``docs/mongo.md`` describes each field. The index
specs live here, apart from the code that relies on them, so that a unit test can
compare them with the queries the broker sends.
"""

from __future__ import annotations

from typing import Any

from pymongo import IndexModel

__all__ = [
    "KEY_INDEXES",
    "LOCK_INDEXES",
    "TASK_INDEXES",
    "create_indexes",
]

TASK_INDEXES = [
    # reserve: equality on queue, the sort (priority, ready_at, seq) read in index
    # order, ready_at <= now as an index bound (skips future delayed tasks) and
    # visible_at <= now checked on the index key (skips live leases without a
    # fetch). Also counts the ready tasks.
    IndexModel(
        [("queue", 1), ("priority", 1), ("ready_at", 1), ("seq", 1), ("visible_at", 1)],
        name="reserve",
    ),
    # lengths (delayed, in flight, dead per state and visible_at), purge, queues().
    IndexModel([("queue", 1), ("state", 1), ("visible_at", 1)], name="places"),
    # release_owner: only leased tasks are indexed, so the index stays as small as
    # the number of tasks in flight.
    IndexModel(
        [("queue", 1), ("lease_owner", 1)],
        name="owner",
        partialFilterExpression={"state": "leased"},
    ),
    # dead_letters and replay_dead: oldest first, dead letters only.
    IndexModel(
        [("queue", 1), ("dead_at", 1), ("seq", 1)],
        name="dead",
        partialFilterExpression={"state": "dead"},
    ),
]

# TTL indexes only collect garbage: the TTL monitor runs every 60 s, so every query
# checks ``expires_at`` itself and never relies on a lapsed document being gone.
LOCK_INDEXES = [
    IndexModel([("name", 1)], name="name", unique=True),
    IndexModel([("expire_on", 1)], name="expire", expireAfterSeconds=0),
]

KEY_INDEXES = [
    IndexModel([("key", 1)], name="key", unique=True),
    IndexModel([("expire_on", 1)], name="expire", expireAfterSeconds=0),
]


def create_indexes(collection: Any, models: list[IndexModel]) -> None:
    """Create ``models`` on ``collection``; a no-op for those that already exist.

    One ``create_index`` call per model rather than one ``create_indexes`` call:
    mongomock 4.3's ``create_indexes`` drops ``partialFilterExpression``. The server
    treats an identical (name, key, options) request as a no-op and refuses a
    conflicting one, which surfaces as ``BrokerError``.
    """
    for model in models:
        spec = dict(model.document)
        keys = list(spec.pop("key").items())
        collection.create_index(keys, **spec)
