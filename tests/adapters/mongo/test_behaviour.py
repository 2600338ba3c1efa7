"""Mongo broker behaviour the contract leaves open: places, concurrency, faults,
several deployments, URLs, locks.

What every broker must do is in ``contract_tests/``; the exact queries are in
``test_queries.py``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import socket
import threading
from typing import Any

import mongomock
import pymongo
import pytest
from bson.errors import InvalidDocument
from pymongo import WriteConcern
from pymongo.errors import AutoReconnect, DocumentTooLarge, OperationFailure
from sergeant.adapters.mongo import MongoBroker, MongoNodesBroker, from_url
from sergeant.adapters.mongo._guard import serialize_for

from sergeant.clock import FakeClock
from sergeant.errors import BrokerError, BrokerUnavailable, ConfigError
from sergeant.protocols import Delivery, QueueLengths
from sergeant.task import Priority
from tests.adapters.mongo.recording import (
    Recorder,
    T,
)

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


def test_settling_under_another_queue_leaves_the_tasks_alone(
    mb: MongoBroker, wall: FakeClock
) -> None:
    """ack, release and extend act only on tasks of the queue they name, as on
    every other broker: receipts of "emails" settled as "reports" change nothing."""
    mb.push("emails", [b"a", b"b"])
    got = mb.reserve("emails", owner="w1", count=2, lease=10)

    mb.ack("reports", got)
    mb.release("reports", got)
    mb.extend("reports", got, lease=1000)
    held = mb.lengths("emails")
    wall.advance(11)  # the leases lapse: the extend did not renew them

    assert held == QueueLengths(in_flight=2)
    assert mb.lengths("emails") == QueueLengths(ready=2)


def test_dead_lettering_under_another_queue_leaves_the_task_in_flight(
    mb: MongoBroker,
) -> None:
    """A dead-lettering that names another queue does not take the task out of its
    own queue's flight (the payload is recorded under the queue named, as for any
    receipt that holds no lease there)."""
    mb.push("emails", [b"a"])
    (held,) = mb.reserve("emails", owner="w1", lease=60)

    mb.dead_letter("reports", held, "wrong queue")

    assert mb.lengths("emails") == QueueLengths(in_flight=1)


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


@pytest.mark.parametrize(
    "error",
    [
        DocumentTooLarge("BSON document too large (200148 bytes)"),
        InvalidDocument("cannot encode object"),
        UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"),
        OverflowError("MongoDB can only handle up to 8-byte ints"),
    ],
    ids=type,
)
def test_client_side_encoding_errors_are_broker_errors_at_once(
    mb: MongoBroker, rec: Recorder, error: Exception
) -> None:
    """What pymongo raises outside PyMongoError while encoding a command (bson's
    errors, DocumentTooLarge among them, and ValueError or OverflowError) is a
    BrokerError, not retried; the raw exception is only its cause."""
    mb.ensure_indexes()
    rec.fail_next = [error, None]

    with pytest.raises(BrokerError, match="push failed") as caught:
        mb.push("q", [b"a"])

    assert not isinstance(caught.value, BrokerUnavailable)
    assert caught.value.__cause__ is error
    assert rec.fail_next == [None]


# What os.fsdecode makes of a file name that is not UTF-8: a lone surrogate.
_UNDECODABLE = os.fsdecode(b"report-\xff.csv")


def test_a_reason_with_a_lone_surrogate_is_stored_escaped(mb: MongoBroker) -> None:
    """A dead letter whose reason names an undecodable file is recorded, with the
    surrogate escaped, for a held task (updated in place) and a popped one
    (inserted), rather than lost to a UnicodeEncodeError."""
    mb.push("q", [b"held", b"popped"])
    (held,) = mb.reserve("q", owner="w", lease=60)
    (popped,) = mb.reserve("q", owner="w", lease=None)

    mb.dead_letter("q", held, f"cannot open {_UNDECODABLE}")
    mb.dead_letter("q", popped, f"cannot read {_UNDECODABLE}")

    assert [(d.payload, d.reason) for d in mb.dead_letters("q")] == [
        (b"held", "cannot open report-\\udcff.csv"),
        (b"popped", "cannot read report-\\udcff.csv"),
    ]
    assert mb.lengths("q") == QueueLengths(dead=2)


def test_a_name_with_a_lone_surrogate_is_a_broker_error(mb: MongoBroker) -> None:
    """A queue or key name BSON cannot encode is a BrokerError, not the driver's
    UnicodeEncodeError."""
    with pytest.raises(BrokerError, match="UnicodeEncodeError"):
        mb.push(f"q-{_UNDECODABLE}", [b"x"])
    with pytest.raises(BrokerError, match="UnicodeEncodeError"):
        mb.set_key(_UNDECODABLE, b"v")


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


@pytest.mark.parametrize("ttl", [30.0, None])
def test_a_lock_whose_taking_reply_was_lost_is_held_by_its_handle(
    mb: MongoBroker, rec: Recorder, ttl: float | None
) -> None:
    """The upsert took the lock but its reply was lost: the retry finds the
    handle's own token, so acquire says True and the handle can release it."""
    mb.ensure_indexes()
    lock, rival = mb.lock("job"), mb.lock("job")
    rec.lose_reply_of = "update_one"

    taken = lock.acquire(timeout=0.2, ttl=ttl)
    rival_took = rival.acquire(timeout=0.1)
    released = lock.release()

    assert (taken, rival_took, released) == (True, False, True)
    assert rival.acquire(timeout=0.1)


def test_a_popped_tasks_dead_letter_whose_reply_was_lost_is_recorded_once(
    mb: MongoBroker, rec: Recorder
) -> None:
    """A task reserved without lease is recorded as a new dead letter; that insert
    retried after a lost reply is not an error and stores one letter."""
    mb.push("q", [b"a"])
    (popped,) = mb.reserve("q", owner="w", lease=None)
    rec.lose_reply_of = "insert_one"

    mb.dead_letter("q", popped, "poison")

    assert mb.lengths("q") == QueueLengths(dead=1)


def test_a_lock_release_whose_reply_was_lost_says_released(
    mb: MongoBroker, rec: Recorder
) -> None:
    """The delete ran, its reply was lost: the retry finds the lock free."""
    mb.ensure_indexes()
    lock = mb.lock("job")
    assert lock.acquire(timeout=0.2)
    rec.lose_reply_of = "delete_one"

    released = lock.release()

    assert released is True
    assert not lock.is_locked()


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


@pytest.mark.parametrize("lease", [60.0, None], ids=["leased", "popped"])
def test_nodes_hand_out_tasks_in_hand_when_a_later_node_fails(
    wall: FakeClock, lease: float | None
) -> None:
    """Node 0's task is taken, then node 1 is unreachable: the task is handed out
    (popped ones exist nowhere else), and the next call meets the outage."""
    recs = [Recorder(), Recorder()]
    parts = [MongoBroker(r, clock=wall, retry_budget=0.2) for r in recs]
    broker = MongoNodesBroker(parts)
    queue = next(q for q in (f"q{i}" for i in range(100)) if broker._home(q) == 0)
    parts[0].push(queue, [b"on-node-0"])
    broker._reserve_turns = itertools.count(0)  # start the visits at node 0
    recs[1].fail_next = [AutoReconnect("node 1 down")] * 1000

    got = broker.reserve(queue, owner="w", count=2, lease=lease)
    with pytest.raises(BrokerUnavailable):
        broker.reserve(queue, owner="w", count=2, lease=lease)

    assert [d.payload for d in got] == [b"on-node-0"]


def test_a_pop_whose_hold_lapsed_before_its_delete_hands_out_nothing(
    mb: MongoBroker, wall: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """At most once, a batch is claimed under a one-minute hold, then deleted.
    Stalled past the hold, another reserve may take some of it first: the
    delete's count falls short, and the batch is dropped (logged), not handed
    out a second time."""
    mb.push("q", [b"a", b"b", b"c"])
    claimer = mb._claimer
    real_claim = claimer._claim
    stolen: list[bytes] = []

    def claim_then_stall(*args: Any, **kwargs: Any) -> Any:
        won = real_claim(*args, **kwargs)
        wall.advance(61.0)  # the hold lapses; another worker reclaims one task
        stolen.extend(d.payload for d in mb.reserve("q", owner="other", lease=60))
        return won

    claimer._claim = claim_then_stall  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="sergeant.adapters.mongo"):
        got = mb.reserve("q", owner="w", count=3, lease=None)

    assert stolen == [b"a"]
    assert got == []
    assert "dropping 3 tasks popped at most once" in caplog.text
