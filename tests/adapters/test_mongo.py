"""Mongo-specific behaviour: indexes, the exact queries sent, claims, faults, nodes.

What every broker must do is in ``contract_tests/``. This file pins down what is
particular to MongoDB, and mostly what mongomock cannot prove: mongomock has no
query planner, so the tests record every call the broker makes (through a
recording ``Database`` stand-in) and check each filter, sort and update against
the index specs. A query that only works because mongomock scans everything shows
up here, in review, instead of in production.
"""

from __future__ import annotations

import collections
import copy
import datetime
import logging
import socket
import threading
import uuid
from typing import Any

import attrs
import mongomock
import pymongo
import pytest
from bson import Binary, ObjectId
from pymongo import ReturnDocument, WriteConcern
from pymongo.errors import AutoReconnect, OperationFailure
from sergeant.adapters.mongo import MongoBroker, MongoNodesBroker, from_url
from sergeant.adapters.mongo._guard import serialize_for
from sergeant.adapters.mongo.schema import KEY_INDEXES, LOCK_INDEXES, TASK_INDEXES

from sergeant.clock import FakeClock
from sergeant.errors import BrokerError, BrokerUnavailable, ConfigError
from sergeant.protocols import Delivery, QueueLengths
from sergeant.task import Priority
from tests.support.mongo_backend import mongo_url

T = 1_000_000.0
SORT = [("priority", 1), ("ready_at", 1), ("seq", 1)]
LEASE_FIELDS = {"lease_owner": "", "lease_id": ""}


@attrs.define
class Call:
    collection: str
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    cursor: list[tuple[str, tuple[Any, ...]]] = attrs.Factory(list)


class _Cursor:
    def __init__(self, inner: Any, call: Call) -> None:
        self._inner, self._call = inner, call

    def sort(self, *args: Any) -> _Cursor:
        self._call.cursor.append(("sort", args))
        self._inner = self._inner.sort(*args)
        return self

    def limit(self, n: int) -> _Cursor:
        self._call.cursor.append(("limit", (n,)))
        self._inner = self._inner.limit(n)
        return self

    def __iter__(self) -> Any:
        return iter(self._inner)


class _Collection:
    """Records each method call (and a find's cursor calls), then delegates."""

    def __init__(self, inner: Any, name: str, log: Recorder) -> None:
        self._inner, self._name, self._log = inner, name, log

    def __getattr__(self, attr: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self._log.fail_next:
                error = self._log.fail_next.pop(0)
                if error is not None:
                    raise error
            # Copied: mongomock mutates some arguments (it adds _id to projections).
            record = Call(self._name, attr, copy.deepcopy(args), copy.deepcopy(kwargs))
            self._log.calls.append(record)
            result = getattr(self._inner, attr)(*args, **kwargs)
            if self._log.lose_reply_of == attr:  # done, but the reply is lost
                self._log.lose_reply_of = None
                raise AutoReconnect("connection closed before the reply")
            return _Cursor(result, record) if attr == "find" else result

        return call


class Recorder:
    """A ``Database`` stand-in over a mongomock database that records every call.

    ``fail_next`` holds errors raised (without effect) by the next calls;
    ``lose_reply_of`` names a method whose next call takes effect and then fails,
    like a reply lost on the wire.
    """

    def __init__(self) -> None:
        self.db = mongomock.MongoClient()[f"t{uuid.uuid4().hex[:8]}"]
        self.calls: list[Call] = []
        self.options: dict[str, dict[str, Any]] = {}
        self.fail_next: list[Exception | None] = []
        self.lose_reply_of: str | None = None

    @property
    def client(self) -> Any:
        return self.db.client

    def get_collection(self, name: str, **options: Any) -> _Collection:
        short = name.rsplit(".", 1)[-1]
        self.options[short] = options
        return _Collection(self.db.get_collection(name, **options), short, self)

    def take(self) -> list[Call]:
        """The calls made since the last ``take`` (index creation excluded)."""
        calls = [c for c in self.calls if c.method != "create_index"]
        self.calls.clear()
        return calls


@pytest.fixture
def wall() -> FakeClock:
    """The broker's wall clock, moved by hand."""
    return FakeClock(start=T)


@pytest.fixture
def rec() -> Recorder:
    """A recording database."""
    return Recorder()


@pytest.fixture
def mb(rec: Recorder, wall: FakeClock) -> MongoBroker:
    """A broker over the recording database and the fake clock."""
    return MongoBroker(rec, clock=wall, retry_budget=0.3)


def _ids(got: list[Delivery]) -> list[ObjectId]:
    return [ObjectId(d.receipt.partition(":")[0]) for d in got]


def _token(got: list[Delivery]) -> str:
    return got[0].receipt.partition(":")[2]


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
        ({"lease_id": token, "_id": {"$in": ids}}, {"payload": 1, "deliveries": 1}),
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
        {"lease_id": batch[2].args[0]["lease_id"], "_id": {"$in": claimed_ids}},
    )
    assert [d.deliveries for d in one + two] == [1, 1, 1]
    assert ":" not in one[0].receipt


def test_settling_matches_on_the_lease_token(
    mb: MongoBroker, rec: Recorder, wall: FakeClock
) -> None:
    """ack, release and extend each send one call filtered on _id and lease token."""
    mb.push("q", [b"a", b"b"])
    got = mb.reserve("q", owner="w", count=2)
    rec.take()
    held = {"lease_id": _token(got), "_id": {"$in": _ids(got)}, "state": "leased"}

    mb.extend("q", got, lease=30)
    mb.release("q", got[:1])
    mb.release("q", got[1:], delay=5)
    mb.ack("q", got)

    extend, release, delayed, ack = rec.take()
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
                {"lease_id": _token(d), "_id": {"$in": _ids(d)}, "state": "leased"}
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
    assert update.args[0] == {"lease_id": _token(held), "_id": _ids(held)[0]}
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


# -- behaviour that the contract leaves open, on a fake clock --------------------------


def test_lapsed_task_returns_to_its_old_place(mb: MongoBroker, wall: FakeClock) -> None:
    """A task whose lease lapsed is reserved before tasks pushed after it."""
    mb.push("q", [b"a", b"b"])
    mb.reserve("q", owner="w1", lease=10)
    wall.advance(11)

    got = mb.reserve("q", owner="w2", count=2)

    assert [(d.payload, d.deliveries) for d in got] == [(b"a", 2), (b"b", 1)]


def test_release_keeps_the_place_and_a_delay_loses_it(
    mb: MongoBroker, wall: FakeClock
) -> None:
    """A released task keeps its place; one released with a delay goes behind."""
    mb.push("q", [b"a", b"b", b"c"])
    first, second = mb.reserve("q", owner="w", count=2)
    mb.release("q", [first])
    mb.release("q", [second], delay=5)
    wall.advance(6)

    got = mb.reserve("q", owner="w", count=3)

    assert [d.payload for d in got] == [b"a", b"c", b"b"]


def test_a_stale_receipt_cannot_touch_the_new_holder(
    mb: MongoBroker, wall: FakeClock
) -> None:
    """After a lapse and a redelivery, the old receipt can neither ack nor release."""
    mb.push("q", [b"a"])
    stale = mb.reserve("q", owner="w1", lease=10)
    wall.advance(11)
    fresh = mb.reserve("q", owner="w2", lease=10)

    mb.ack("q", stale)
    mb.release("q", stale)
    mb.extend("q", stale, lease=1000)
    wall.advance(11)
    lengths_after_lapse = mb.lengths("q")
    mb.ack("q", fresh)

    assert lengths_after_lapse == QueueLengths(ready=1)
    assert mb.lengths("q") == QueueLengths()


def test_closed_broker_refuses_work() -> None:
    """Every operation on a closed broker raises BrokerError."""
    broker = MongoBroker(mongomock.MongoClient())
    broker.close()

    with pytest.raises(BrokerError, match="closed"):
        broker.push("q", [b"a"])


# -- concurrency -----------------------------------------------------------------


@pytest.mark.parametrize(("tasks", "count"), [(2_000, 25), (200, 1)])
def test_threads_never_get_the_same_task(tasks: int, count: int) -> None:
    """8 threads, each with its own broker on one queue, get every task once."""
    client = mongomock.MongoClient()
    MongoBroker(client, database="t").push("q", [b"%d" % i for i in range(tasks)])
    seen: list[bytes] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        broker = MongoBroker(client, database="t")
        try:
            while got := broker.reserve("q", owner=f"w{n}", count=count, lease=600):
                seen.extend(d.payload for d in got)
                broker.ack("q", got)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)

    assert errors == []
    assert len(seen) == tasks
    assert collections.Counter(seen).most_common(1)[0][1] == 1


def test_mongomock_calls_are_serialized_and_real_ones_are_not() -> None:
    """Only a mongomock client gets the process-wide lock around each call."""
    real: pymongo.MongoClient[Any] = pymongo.MongoClient(connect=False)

    mock_lock = serialize_for(mongomock.MongoClient())
    real_lock = serialize_for(real)
    real.close()

    assert mock_lock is serialize_for(mongomock.MongoClient())
    assert real_lock is not mock_lock
    assert type(real_lock).__name__ == "nullcontext"


# -- faults ----------------------------------------------------------------------------


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_server_is_broker_unavailable() -> None:
    """A real client with no server behind it ends in BrokerUnavailable."""
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        f"mongodb://127.0.0.1:{_unused_port()}", serverSelectionTimeoutMS=100
    )
    broker = MongoBroker(client, retry_budget=0.3)

    with pytest.raises(BrokerUnavailable) as caught:
        broker.push("q", [b"a"])
    client.close()

    assert isinstance(
        caught.value.__cause__, pymongo.errors.ServerSelectionTimeoutError
    )


def test_network_errors_are_retried_until_the_budget_runs_out(
    mb: MongoBroker, rec: Recorder
) -> None:
    """AutoReconnect is retried with back-off, then raised as BrokerUnavailable."""
    mb.ensure_indexes()
    rec.fail_next = [AutoReconnect("down")] * 100

    with pytest.raises(BrokerUnavailable, match="push"):
        mb.push("q", [b"a"])

    assert 2 <= 100 - len(rec.fail_next) <= 6  # 0.05 + 0.1 + 0.2 s fit in 0.3 s


def test_a_short_outage_is_ridden_out_and_logged_once(
    mb: MongoBroker, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """Two failures then success: the push lands; one warning, one recovery line."""
    mb.ensure_indexes()
    rec.fail_next = [AutoReconnect("down"), AutoReconnect("still down")]

    with caplog.at_level(logging.INFO, logger="sergeant.adapters.mongo"):
        mb.push("q", [b"a"])

    assert mb.lengths("q") == QueueLengths(ready=1)
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]


def test_an_outage_is_logged_once_however_many_calls_fail(
    mb: MongoBroker, rec: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    """Calls failing during one outage log one warning; a new outage logs again."""
    mb.ensure_indexes()
    rec.fail_next = [AutoReconnect("down")] * 100

    with caplog.at_level(logging.INFO, logger="sergeant.adapters.mongo"):
        for _ in range(3):
            with pytest.raises(BrokerUnavailable):
                mb.lengths("q")
        rec.fail_next = []
        mb.lengths("q")
        rec.fail_next = [AutoReconnect("down again")] * 100
        with pytest.raises(BrokerUnavailable):
            mb.lengths("q")

    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO", "WARNING"]


def test_other_driver_errors_are_broker_errors_at_once(
    mb: MongoBroker, rec: Recorder
) -> None:
    """An OperationFailure is a BrokerError (not Unavailable) and is not retried."""
    mb.ensure_indexes()
    rec.fail_next = [OperationFailure("bad query"), None]

    with pytest.raises(BrokerError, match="bad query") as caught:
        mb.lengths("q")

    assert not isinstance(caught.value, BrokerUnavailable)
    assert rec.fail_next == [None]


def test_a_push_whose_reply_was_lost_is_not_stored_twice(
    mb: MongoBroker, rec: Recorder
) -> None:
    """A retried insert after a lost reply leaves each task stored once."""
    mb.ensure_indexes()
    rec.lose_reply_of = "insert_many"

    mb.push("q", [b"a", b"b"])

    assert [c.method for c in rec.take()] == ["insert_many", "insert_many"]
    assert mb.lengths("q") == QueueLengths(ready=2)


def test_a_claim_whose_reply_was_lost_still_returns_its_tasks(
    mb: MongoBroker, rec: Recorder
) -> None:
    """A retried claim after a lost reply hands out what the first attempt leased."""
    mb.push("q", [b"a", b"b", b"c"])
    rec.lose_reply_of = "update_many"

    got = mb.reserve("q", owner="w", count=3)

    assert [d.payload for d in got] == [b"a", b"b", b"c"]
    assert [d.deliveries for d in got] == [1, 1, 1]
    assert mb.lengths("q") == QueueLengths(in_flight=3)


def test_a_dead_letter_whose_reply_was_lost_is_recorded_once(
    mb: MongoBroker, rec: Recorder
) -> None:
    """A retried dead-lettering after a lost reply leaves one dead letter."""
    mb.push("q", [b"a"])
    (held,) = mb.reserve("q", owner="w")
    rec.take()
    rec.lose_reply_of = "update_one"

    mb.dead_letter("q", held, "poison")

    assert [c.method for c in rec.take()] == ["update_one", "update_one"]
    assert mb.lengths("q") == QueueLengths(dead=1)


# -- several deployments -------------------------------------------------------------


@pytest.fixture
def nodes(wall: FakeClock) -> tuple[MongoNodesBroker, list[MongoBroker]]:
    """A nodes broker over two separate mongomock deployments, and those nodes."""
    parts = [MongoBroker(mongomock.MongoClient(), clock=wall) for _ in range(2)]
    return MongoNodesBroker(parts), parts


def test_nodes_spread_pushes_and_sum_lengths(
    nodes: tuple[MongoNodesBroker, list[MongoBroker]],
) -> None:
    """Each push goes whole to the next node; lengths add up over the nodes."""
    broker, parts = nodes

    broker.push("q", [b"a", b"b"])
    broker.push("q", [b"c"], eta=T + 60)

    assert [p.lengths("q") for p in parts] == [
        QueueLengths(ready=2),
        QueueLengths(delayed=1),
    ]
    assert broker.lengths("q") == QueueLengths(ready=2, delayed=1)


def test_nodes_reserve_rotates_fills_up_and_routes_receipts(
    nodes: tuple[MongoNodesBroker, list[MongoBroker]],
) -> None:
    """A reserve drains several nodes if needed; acks reach each delivery's node."""
    broker, parts = nodes
    broker.push("q", [b"a1", b"a2"])
    broker.push("q", [b"b1", b"b2"])

    got = broker.reserve("q", owner="w", count=3)
    broker.ack("q", [*got, Delivery("9/forged", b""), Delivery("junk", b"")])

    assert len(got) == 3
    assert {d.receipt.split("/")[0] for d in got} == {"0", "1"}
    assert broker.lengths("q") == QueueLengths(ready=1)
    assert sum(p.lengths("q").ready for p in parts) == 1


def test_nodes_hand_out_high_first_from_any_start(
    nodes: tuple[MongoNodesBroker, list[MongoBroker]],
) -> None:
    """HIGH tasks live on the queue's home node and come first, whatever the start."""
    broker, parts = nodes
    broker.push("q", [b"n1"])
    broker.push("q", [b"n2"])
    broker.push("q", [b"h1", b"h2"], priority=Priority.HIGH)

    got = [broker.reserve("q", owner="w")[0].payload for _ in range(4)]

    assert got[:2] == [b"h1", b"h2"]
    assert sorted(got[2:]) == [b"n1", b"n2"]
    assert sorted(p.lengths("q").in_flight for p in parts) == [1, 3]


def test_nodes_release_owner_and_dead_letters_span_nodes(
    nodes: tuple[MongoNodesBroker, list[MongoBroker]], wall: FakeClock
) -> None:
    """release_owner sums over nodes; dead letters merge and replay oldest first."""
    broker, _ = nodes
    broker.push("q", [b"x"])
    broker.push("q", [b"y"])
    (first,) = broker.reserve("q", owner="w")
    (second,) = broker.reserve("q", owner="w")
    broker.dead_letter("q", second, "older")
    wall.advance(1)
    broker.dead_letter("q", first, "newer")
    broker.push("q", [b"z"])
    broker.reserve("q", owner="dead")

    released = broker.release_owner("q", "dead")
    letters = broker.dead_letters("q")
    replayed = broker.replay_dead("q", limit=1)

    assert released == 1
    assert [d.reason for d in letters] == ["older", "newer"]
    assert replayed == 1
    assert [d.reason for d in broker.dead_letters("q")] == ["newer"]
    assert broker.queues() == ["q"]


def test_nodes_keep_a_lock_on_one_node(
    nodes: tuple[MongoNodesBroker, list[MongoBroker]],
) -> None:
    """Two handles on one lock name exclude each other through the nodes broker."""
    broker, _ = nodes
    holder, other = broker.lock("job"), broker.lock("job")

    taken = holder.acquire(timeout=0)
    refused = other.acquire(timeout=0)
    broker.set_key("k", b"v")

    assert (taken, refused) == (True, False)
    assert broker.get_key("k") == b"v"
    assert broker.delete_key("k") is True


# -- URLs ------------------------------------------------------------------------------


def test_from_url_takes_the_database_from_the_path() -> None:
    """The URL's path names the database; without one it is 'sergeant'."""
    port = _unused_port()

    named = from_url(f"mongodb://127.0.0.1:{port}/jobs?serverSelectionTimeoutMS=50")
    plain = MongoBroker.from_url(f"mongodb://127.0.0.1:{port}")
    chosen = MongoBroker.from_url(f"mongodb://127.0.0.1:{port}", database="other")

    names = [b._tasks.database.name for b in (named, plain, chosen)]  # type: ignore[union-attr]
    for broker in (named, plain, chosen):
        broker.close()
    assert names == ["jobs", "sergeant", "other"]


def test_from_url_passes_options_through() -> None:
    """URL options (tls, replicaSet, w) reach the client; w=majority is kept."""
    url = (
        f"mongodb://127.0.0.1:{_unused_port()}/"
        "?tls=true&tlsAllowInvalidHostnames=true&replicaSet=rs&w=majority"
    )

    broker = MongoBroker.from_url(url)
    options = broker._client.options
    concern = broker._tasks.write_concern
    broker.close()

    assert options.pool_options.tls_allow_invalid_hostnames is True
    assert options.replica_set_name == "rs"
    assert concern == WriteConcern(w="majority")


def test_from_url_with_a_list_builds_a_nodes_broker() -> None:
    """A list of URLs is several independent deployments: a MongoNodesBroker."""
    port = _unused_port()

    broker = from_url(
        [f"mongodb://127.0.0.1:{port}/a", f"mongodb://127.0.0.1:{port}/b"]
    )
    broker.close()

    assert isinstance(broker, MongoNodesBroker)


def test_from_url_rejects_a_malformed_url_without_showing_its_password() -> None:
    """A URL pymongo cannot parse is a ConfigError naming it, password hidden."""
    with pytest.raises(ConfigError, match="mongodb://") as caught:
        MongoBroker.from_url("mongodb://user:s3cret@host:port/")

    assert "s3cret" not in str(caught.value)


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


def test_lapse_does_not_wait_for_the_ttl_monitor(
    mb: MongoBroker, rec: Recorder, wall: FakeClock
) -> None:
    """A lapsed lock is free while its document still exists (TTL not yet run)."""
    first, second = mb.lock("l"), mb.lock("l")
    first.acquire(timeout=0, ttl=5)
    wall.advance(6)

    still_stored = rec.db["sergeant.locks"].count_documents({"name": "l"})
    taken = second.acquire(timeout=0)

    assert still_stored == 1
    assert taken is True
    assert first.release() is False
