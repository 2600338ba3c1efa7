"""Mongo broker: the indexes and the exact queries it sends, each served by an index.

What every broker must do is in ``contract_tests/``. These tests pin down what
mongomock cannot prove (see ``recording.py``): every filter, sort and update, and
that an index serves each filter.
"""

from __future__ import annotations

import collections
import datetime
import uuid
from typing import Any

import mongomock
import pymongo
import pytest
from bson import Binary, ObjectId
from pymongo import ReturnDocument, WriteConcern
from sergeant.adapters.mongo import MongoBroker
from sergeant.adapters.mongo.schema import KEY_INDEXES, LOCK_INDEXES, TASK_INDEXES

from sergeant.clock import FakeClock
from sergeant.errors import BrokerError
from sergeant.protocols import Delivery
from sergeant.task import Priority
from tests.adapters.mongo.recording import (
    LEASE_FIELDS,
    SORT,
    Recorder,
    T,
)
from tests.adapters.mongo.recording import (
    ids as _ids,
)
from tests.adapters.mongo.recording import (
    token as _token,
)
from tests.support.mongo_backend import mongo_url

# -- indexes ----------------------------------------------------------------------


def _index_info(collection: Any) -> dict[str, tuple[list[Any], dict[str, Any]]]:
    info = collection.index_information()
    return {
        name: (
            list(spec["key"]),
            {k: v for k, v in spec.items() if k not in ("key", "v")},
        )
        for name, spec in info.items()
    }


def test_ensure_indexes_creates_exactly_the_specified_indexes() -> None:
    """ensure_indexes creates these index keys and options and no others."""
    db = mongomock.MongoClient()["t"]
    broker = MongoBroker(db)

    broker.ensure_indexes()

    assert _index_info(db["sergeant.tasks"]) == {
        "_id_": ([("_id", 1)], {}),
        "reserve": (
            [
                ("queue", 1),
                ("priority", 1),
                ("ready_at", 1),
                ("seq", 1),
                ("visible_at", 1),
            ],
            {},
        ),
        "places": ([("queue", 1), ("state", 1), ("visible_at", 1)], {}),
        "owner": (
            [("queue", 1), ("lease_owner", 1)],
            {"partialFilterExpression": {"state": "leased"}},
        ),
        "dead": (
            [("queue", 1), ("dead_at", 1), ("seq", 1)],
            {"partialFilterExpression": {"state": "dead"}},
        ),
    }
    for name, field in (("locks", "name"), ("keys", "key")):
        assert _index_info(db[f"sergeant.{name}"]) == {
            "_id_": ([("_id", 1)], {}),
            field: ([(field, 1)], {"unique": True}),
            "expire": ([("expire_on", 1)], {"expireAfterSeconds": 0}),
        }


def test_ensure_indexes_is_idempotent() -> None:
    """Running ensure_indexes again changes nothing and raises nothing."""
    db = mongomock.MongoClient()["t"]
    MongoBroker(db).ensure_indexes()
    before = _index_info(db["sergeant.tasks"])

    MongoBroker(db).ensure_indexes()

    assert _index_info(db["sergeant.tasks"]) == before


def test_indexes_are_created_once_on_first_use(mb: MongoBroker, rec: Recorder) -> None:
    """The first operation creates every index; later operations create none."""
    mb.push("q", [b"a"])
    mb.reserve("q", owner="w")
    mb.lengths("q")

    created = [c for c in rec.calls if c.method == "create_index"]

    assert len(created) == len(TASK_INDEXES) + len(LOCK_INDEXES) + len(KEY_INDEXES)
    assert rec.calls.index(created[-1]) < [c.method for c in rec.calls].index(
        "insert_many"
    )


def test_conflicting_index_is_a_broker_error() -> None:
    """An existing index named like ours but with other keys is a BrokerError."""
    db = mongomock.MongoClient()["t"]
    db["sergeant.tasks"].create_index([("queue", 1)], name="reserve")

    with pytest.raises(BrokerError, match="create_indexes"):
        MongoBroker(db).ensure_indexes()


def test_write_concern_is_w1_by_default_and_configurable() -> None:
    """Collections are opened with w=1 by default and with the w asked for."""
    default, majority = Recorder(), Recorder()

    MongoBroker(default)
    MongoBroker(majority, w="majority")

    assert [o["write_concern"] for o in default.options.values()] == [
        WriteConcern(w=1)
    ] * 3
    assert majority.options["tasks"]["write_concern"] == WriteConcern(w="majority")


# -- the exact queries --------------------------------------------------------------


def test_push_inserts_the_documents_in_one_call(mb: MongoBroker, rec: Recorder) -> None:
    """push is one unordered insert_many of fully formed task documents."""
    mb.push("q", [b"a", b"b"], priority=Priority.HIGH)

    (call,) = rec.take()
    docs = call.args[0]

    assert (call.method, call.kwargs) == ("insert_many", {"ordered": False})
    assert [{k: v for k, v in d.items() if k not in ("_id", "seq")} for d in docs] == [
        {
            "queue": "q",
            "priority": 0,
            "ready_at": T,
            "visible_at": T,
            "state": "queued",
            "payload": Binary(p),
            "deliveries": 0,
        }
        for p in (b"a", b"b")
    ]
    assert all(isinstance(d["_id"], ObjectId) for d in docs)
    assert docs[0]["seq"] < docs[1]["seq"]


def test_push_places_delayed_tasks_at_their_eta(mb: MongoBroker, rec: Recorder) -> None:
    """A future eta sets ready_at and visible_at to it; a past eta means now."""
    mb.push("q", [b"later"], eta=T + 30)
    mb.push("q", [b"overdue"], eta=T - 30)

    later, overdue = (c.args[0][0] for c in rec.take())

    assert (later["ready_at"], later["visible_at"]) == (T + 30, T + 30)
    assert (overdue["ready_at"], overdue["visible_at"]) == (T, T)


def test_reserve_one_is_a_single_find_one_and_update(
    mb: MongoBroker, rec: Recorder
) -> None:
    """reserve(count=1) is one sorted find_one_and_update that leases and counts."""
    mb.push("q", [b"a"])
    rec.take()

    got = mb.reserve("q", owner="w1", lease=30)

    (call,) = rec.take()
    assert call.method == "find_one_and_update"
    assert call.args == (
        {"queue": "q", "ready_at": {"$lte": T}, "visible_at": {"$lte": T}},
        {
            "$set": {
                "state": "leased",
                "visible_at": T + 30,
                "lease_owner": "w1",
                "lease_id": _token(got),
            },
            "$inc": {"deliveries": 1},
        },
    )
    assert call.kwargs == {
        "projection": {"payload": 1, "deliveries": 1},
        "sort": SORT,
        "return_document": ReturnDocument.AFTER,
    }


def test_reserve_many_is_a_three_step_claim(mb: MongoBroker, rec: Recorder) -> None:
    """reserve(count=n) finds candidates, claims them re-checking, reads by token."""
    mb.push("q", [b"a", b"b", b"c"])
    seqs = [d["seq"] for d in rec.take()[0].args[0]]

    got = mb.reserve("q", owner="w1", count=3, lease=30)

    find, update, read = rec.take()
    ids, token = _ids(got), _token(got)
    assert (find.method, find.args) == (
        "find",
        (
            {"queue": "q", "ready_at": {"$lte": T}, "visible_at": {"$lte": T}},
            {"seq": 1},
        ),
    )
    assert find.cursor == [("sort", (SORT,)), ("limit", (3,))]
    assert (update.method, update.args) == (
        "update_many",
        (
            {
                "seq": {"$gte": seqs[0], "$lte": seqs[2]},
                "_id": {"$in": ids},
                "visible_at": {"$lte": T},
                "queue": "q",
            },
            {
                "$set": {
                    "state": "leased",
                    "visible_at": T + 30,
                    "lease_owner": "w1",
                    "lease_id": token,
                },
                "$inc": {"deliveries": 1},
            },
        ),
    )
    assert (read.method, read.args) == (
        "find",
        (
            {"lease_id": token, "_id": {"$in": ids}, "queue": "q"},
            {"payload": 1, "deliveries": 1},
        ),
    )


def test_reserve_without_lease_deletes(mb: MongoBroker, rec: Recorder) -> None:
    """lease=None uses find_one_and_delete, or the claim plus one delete_many."""
    mb.push("q", [b"a", b"b", b"c"])
    rec.take()

    one = mb.reserve("q", owner="w", lease=None)
    single = rec.take()
    two = mb.reserve("q", owner="w", count=2, lease=None)
    batch = rec.take()

    assert [c.method for c in single] == ["find_one_and_delete"]
    assert single[0].kwargs == {
        "projection": {"payload": 1, "deliveries": 1},
        "sort": SORT,
    }
    assert [c.method for c in batch] == ["find", "update_many", "find", "delete_many"]
    claimed_ids = batch[1].args[0]["_id"]["$in"]
    assert batch[3].args == (
        {
            "lease_id": batch[2].args[0]["lease_id"],
            "_id": {"$in": claimed_ids},
            "queue": "q",
        },
    )
    assert [d.deliveries for d in one + two] == [1, 1, 1]
    assert ":" not in one[0].receipt


def test_settling_matches_on_the_lease_token(
    mb: MongoBroker, rec: Recorder, wall: FakeClock
) -> None:
    """ack, release and extend each send one write filtered on _id and lease token
    (a release first reads the places of what it holds: see the next test)."""
    mb.push("q", [b"a", b"b"])
    got = mb.reserve("q", owner="w", count=2)
    rec.take()
    held = {
        "lease_id": _token(got),
        "_id": {"$in": _ids(got)},
        "queue": "q",
        "state": "leased",
    }

    mb.extend("q", got, lease=30)
    mb.release("q", got[:1])
    mb.release("q", got[1:], delay=5)
    mb.ack("q", got)

    extend, places, release, delayed_places, delayed, ack = rec.take()
    assert [places.method, delayed_places.method] == ["find", "find"]
    assert places.args[0]["_id"] == {"$in": _ids(got)[:1]}
    assert release.method == "update_many"
    assert (extend.method, extend.args) == (
        "update_many",
        (held, {"$set": {"visible_at": T + 30}}),
    )
    assert release.args[1] == {
        "$set": {"state": "queued", "visible_at": T},
        "$unset": LEASE_FIELDS,
        "$inc": {"deliveries": -1},
    }
    assert release.args[0]["_id"] == {"$in": _ids(got)[:1]}
    assert delayed.args[1]["$set"] == {
        "state": "queued",
        "visible_at": T + 5,
        "ready_at": T + 5,
    }
    assert (ack.method, ack.args) == ("delete_many", (held,))


def test_a_release_in_another_order_shares_the_places_out_again(
    mb: MongoBroker, rec: Recorder
) -> None:
    """Given in another order than taken, released tasks take the same places
    (ready_at, seq) in the order given: one update per task, on _id and token."""
    mb.push("q", [b"a", b"b"])
    got = mb.reserve("q", owner="w", count=2)
    rec.take()

    mb.release("q", got[::-1])

    find, *updates = rec.take()
    assert find.method == "find"
    assert [u.method for u in updates] == ["update_one", "update_one"]
    assert [u.args[0]["_id"] for u in updates] == _ids(got)[::-1]
    assert {u.args[0]["lease_id"] for u in updates} == {_token(got)}
    first_seq, second_seq = (u.args[1]["$set"]["seq"] for u in updates)
    assert first_seq < second_seq


def test_receipts_of_two_claims_settle_in_one_or_filter(
    mb: MongoBroker, rec: Recorder
) -> None:
    """Deliveries from two reserves are acked by one delete_many with an $or."""
    mb.push("q", [b"a", b"b"])
    first = mb.reserve("q", owner="w")
    second = mb.reserve("q", owner="w")
    rec.take()

    mb.ack("q", first + second + [Delivery("forged", b"")])

    (call,) = rec.take()
    assert call.args == (
        {
            "$or": [
                {
                    "lease_id": _token(d),
                    "_id": {"$in": _ids(d)},
                    "queue": "q",
                    "state": "leased",
                }
                for d in (first, second)
            ]
        },
    )


def test_places_and_owner_queries(mb: MongoBroker, rec: Recorder) -> None:
    """lengths, purge and release_owner send these filters and updates."""
    mb.lengths("q")
    mb.purge("q")
    mb.release_owner("q", "w9")

    *counts, purge, owner = rec.take()

    assert [c.args[0] for c in counts] == [
        {"queue": "q", "ready_at": {"$lte": T}, "visible_at": {"$lte": T}},
        {"queue": "q", "state": "queued", "visible_at": {"$gt": T}},
        {"queue": "q", "state": "leased", "visible_at": {"$gt": T}},
        {"queue": "q", "state": "dead"},
    ]
    assert purge.args == ({"queue": "q", "state": {"$in": ["queued", "leased"]}},)
    assert owner.args == (
        {"queue": "q", "lease_owner": "w9", "state": "leased"},
        {"$set": {"state": "queued", "visible_at": T}, "$unset": LEASE_FIELDS},
    )


def test_dead_letter_is_one_update_in_place(mb: MongoBroker, rec: Recorder) -> None:
    """dead_letter turns the held document dead; a lease-less one is inserted anew."""
    mb.push("q", [b"a"])
    held = mb.reserve("q", owner="w")
    rec.take()

    mb.dead_letter("q", held[0], "poison")
    mb.dead_letter("q", Delivery("unleased", b"gone"), "late")

    update, insert = rec.take()
    assert update.method == "update_one"
    assert update.args[1]["$set"]["state"] == "dead"
    assert update.args[1]["$set"]["reason"] == "poison"
    assert update.args[0] == {
        "lease_id": _token(held),
        "_id": _ids(held)[0],
        "queue": "q",
        "state": "leased",
    }
    assert update.args[1]["$unset"] == {"visible_at": "", "lease_owner": ""}
    assert insert.method == "insert_one"
    assert insert.args[0]["payload"] == Binary(b"gone")
    assert [d.payload for d in mb.dead_letters("q")] == [b"a", b"gone"]


def test_inspection_queries(mb: MongoBroker, rec: Recorder, wall: FakeClock) -> None:
    """Listing, replaying and purging dead letters send these queries."""
    mb.push("q", [b"a", b"b"])
    for delivery in mb.reserve("q", owner="w", count=2):
        mb.dead_letter("q", delivery, "poison")
    rec.take()
    dead = {"queue": "q", "state": "dead"}

    mb.queues()
    mb.dead_letters("q", limit=5)
    mb.replay_dead("q", limit=1)
    mb.purge_dead("q")

    queues, listing, oldest, replay, purge = rec.take()
    assert (queues.method, queues.args) == ("distinct", ("queue",))
    assert listing.args == (dead, {"payload": 1, "reason": 1, "dead_at": 1})
    assert listing.cursor == [
        ("sort", ([("dead_at", 1), ("seq", 1)],)),
        ("limit", (5,)),
    ]
    assert (oldest.args, oldest.cursor[-1]) == ((dead, {"_id": 1}), ("limit", (1,)))
    assert replay.method == "update_many"
    assert replay.args[0]["state"] == "dead"
    assert replay.args[1] == {
        "$set": {
            "state": "queued",
            "priority": 1,
            "ready_at": T,
            "visible_at": T,
            "deliveries": 0,
        },
        "$unset": {"reason": "", "dead_at": "", "lease_id": ""},
    }
    assert (purge.method, purge.args) == ("delete_many", (dead,))


# -- every query is served by an index ------------------------------------------------


def _equalities(where: dict[str, Any]) -> set[str]:
    """Fields the filter pins to a value (or a short $in list of values)."""
    return {
        k
        for k, v in where.items()
        if not k.startswith("$")
        and (not isinstance(v, dict) or set(v) <= {"$in", "$eq"})
    }


def _serving_index(
    where: dict[str, Any], sort: list[tuple[str, int]], models: list[Any]
) -> str | None:
    """The index a planner would use: equality prefix, then the sort, in order.

    A partial index counts only when the filter repeats its partial expression. A
    filter on _id is served by the _id index. Ties go to the longer equality
    prefix, then to a partial index (the smaller one).
    """
    if set(where) == {"$or"}:
        names = {_serving_index(clause, sort, models) for clause in where["$or"]}
        return None if None in names or len(names) != 1 else names.pop()
    if "_id" in where:
        return "_id_"
    equal, best, best_score = _equalities(where), None, (0, False)
    for model in models:
        spec = model.document
        keys = list(spec["key"])
        partial = spec.get("partialFilterExpression", {})
        if any(where.get(k) != v for k, v in partial.items()):
            continue
        prefix = 0
        while prefix < len(keys) and keys[prefix] in equal:
            prefix += 1
        wanted = [field for field, _ in sort]
        if prefix == 0 or keys[prefix : prefix + len(wanted)] != wanted:
            continue
        score = (prefix, bool(partial))
        if score > best_score:
            best, best_score = spec["name"], score
    return best


def _scenario(mb: MongoBroker, wall: FakeClock) -> None:
    """Every broker operation once, at least."""
    mb.push("q", [b"a", b"b", b"c", b"d"])
    one = mb.reserve("q", owner="w")
    many = mb.reserve("q", owner="w", count=2)
    mb.extend("q", many, lease=30)
    mb.release("q", many[:1])
    mb.ack("q", one)
    mb.dead_letter("q", many[1], "poison")
    mb.reserve("q", owner="x", count=3, lease=None)
    mb.reserve("q", owner="x", lease=None)
    mb.release_owner("q", "w")
    mb.lengths("q")
    mb.dead_letters("q")
    mb.replay_dead("q")
    mb.purge_dead("q")
    mb.purge("q")
    lock = mb.lock("l")
    lock.acquire(timeout=0)
    lock.is_locked()
    lock.get_ttl()
    lock.set_ttl(5)
    lock.release()
    mb.set_key("k", b"v", ttl=5)
    mb.get_key("k")
    mb.delete_key("k")


def test_every_filter_is_served_by_an_index(
    mb: MongoBroker, rec: Recorder, wall: FakeClock
) -> None:
    """Each filter and sort the broker sends has an index with a matching prefix."""
    _scenario(mb, wall)
    models = {"tasks": TASK_INDEXES, "locks": LOCK_INDEXES, "keys": KEY_INDEXES}

    served = collections.defaultdict(set)
    unserved = []
    for call in rec.take():
        where = call.kwargs.get("filter", call.args[0] if call.args else None)
        if call.method in ("insert_many", "insert_one", "distinct"):
            continue
        sort = call.kwargs.get("sort") or next(
            (a[0] for name, a in call.cursor if name == "sort"), []
        )
        name = _serving_index(where, sort, models[call.collection])
        if name is None:
            unserved.append((call.collection, call.method, where, sort))
        served[call.method].add(name)

    assert unserved == []
    assert {"reserve", "_id_"} <= served["find"] | served["find_one_and_update"]
    assert served["find_one_and_update"] >= {"reserve"}
    assert "owner" in served["update_many"]
    assert "dead" in served["find"]
    assert served["count_documents"] == {"reserve", "places"}


def test_every_task_filter_names_the_queue(
    mb: MongoBroker, rec: Recorder, wall: FakeClock
) -> None:
    """Every filter on the tasks collection (each clause of an $or) names the
    queue: a settle acts on the queue it is called for only, and on a collection
    sharded on queue each command is routed to the one shard owning the queue."""
    _scenario(mb, wall)

    unnamed = []
    for call in rec.take():
        if call.collection != "tasks" or call.method in (
            "insert_many",
            "insert_one",
            "distinct",
        ):
            continue
        where = call.kwargs.get("filter", call.args[0])
        clauses = where["$or"] if set(where) == {"$or"} else [where]
        if any(clause.get("queue") != "q" for clause in clauses):
            unnamed.append((call.method, where))

    assert unnamed == []


@pytest.mark.mongo
@pytest.mark.skipif(mongo_url() is None, reason="needs SERGEANT_TEST_MONGO_URL")
def test_real_server_plans_reserve_as_an_index_scan() -> None:
    """On a real server the reserve query's winning plan is an IXSCAN on 'reserve'."""
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_url())
    name = f"sergeant_test_{uuid.uuid4().hex[:12]}"
    broker = MongoBroker(client, database=name)
    broker.push("q", [b"%d" % i for i in range(200)])
    where = {"queue": "q", "ready_at": {"$lte": 2e9}, "visible_at": {"$lte": 2e9}}

    plan = client[name]["sergeant.tasks"].find(where).sort(SORT).limit(5).explain()
    client.drop_database(name)
    client.close()

    text = repr(plan["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in text
    assert "'reserve'" in text
    assert "COLLSCAN" not in text
    assert "'SORT'" not in text


def test_lock_and_key_queries(mb: MongoBroker, rec: Recorder, wall: FakeClock) -> None:
    """A lock is taken by an upsert on a lapsed document and freed by token."""
    lock = mb.lock("l")
    rec.take()
    live = {"$or": [{"expires_at": None}, {"expires_at": {"$gt": T}}]}

    lock.acquire(timeout=0, ttl=5)
    lock.release()
    mb.set_key("k", b"v")

    acquire, release, set_key = rec.take()
    token = acquire.args[1]["$set"]["token"]
    collect = acquire.args[1]["$set"]["expire_on"]
    assert acquire.args[0] == {"name": "l", "expires_at": {"$lte": T}}
    assert acquire.args[1]["$set"]["expires_at"] == T + 5
    assert acquire.kwargs == {"upsert": True}
    assert collect > datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        seconds=60
    )
    assert release.args == ({"name": "l", "token": token, **live},)
    assert set_key.args == (
        {"key": "k"},
        {
            "$set": {"expires_at": None, "value": Binary(b"v")},
            "$unset": {"expire_on": ""},
        },
    )
