"""Redis-specific behaviour: key layout, scripts, node routing, the cluster.

Everything runs against real ``redis-server`` processes started by the fixtures in
``tests/support/redis_backend.py``; the broker contract itself is in
``contract_tests/``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry
from sergeant.adapters.redis import RedisBroker
from sergeant.adapters.redis._node import LISTED_FROM, new_batch_id
from sergeant.adapters.registry import broker_from_url

from sergeant.errors import BrokerError, BrokerUnavailable, ConfigError
from sergeant.protocols import QueueLengths
from sergeant.task import Priority
from tests.support.redis_backend import (
    FAST_FAIL,
    TEST_RETRY,
    delete_namespace,
    new_namespace,
    payloads,
)
from tests.support.redis_servers import LocalCluster, RedisServer

pytestmark = pytest.mark.redis


# -- key layout and scripts ----------------------------------------------------------


def test_every_key_of_a_queue_hashes_to_one_cluster_slot(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Ready, delayed, lease, batch, wake-up and dead keys of a queue share one slot."""
    broker, raw, namespace = single
    broker.push("q", [b"n1", b"n2", b"n3"])
    broker.push("q", [b"h"], priority=Priority.HIGH)
    broker.push("q", [b"later"], eta=time.time() + 60)
    first, *_ = broker.reserve("q", owner="w", count=3)
    broker.dead_letter("q", first, "poison")

    keys = sorted(k.decode() for k in raw.scan_iter(match=f"{{{namespace}:q}}*"))

    suffixes = {k.split("}:", 1)[1].split(":")[0] for k in keys}
    assert suffixes == {"ready", "delayed", "leases", "notify", "dead"}
    assert any(k.count(":leases:") == 1 for k in keys)  # the batch's own list
    assert len({key_slot(k.encode()) for k in keys}) == 1


@pytest.mark.parametrize("size", [8, LISTED_FROM + 8], ids=["popped", "sorted"])
def test_settling_part_of_a_batch_keeps_the_rest_leased_in_order(
    single: tuple[RedisBroker, redis.Redis, str], size: int
) -> None:
    """Acks, a dead letter and a release take only their tasks out of a batch;
    the rest stay leased, and a reclaim returns them in hand-out order."""
    broker, raw, namespace = single
    numbers = [b"%d" % i for i in range(size)]
    broker.push("q", numbers)
    got = broker.reserve("q", owner="gone", count=size)
    (batch,) = raw.scan_iter(match=f"{{{namespace}:q}}:leases:*")
    assert raw.type(batch) == b"list"

    broker.ack("q", [got[5], got[0]])
    broker.dead_letter("q", got[3], "poison")
    broker.release("q", [got[6]])

    rest = [n for i, n in enumerate(numbers) if i not in {0, 3, 5, 6}]
    # Partly settled, the batch became a hash rid -> entry (see scripts.py).
    assert raw.type(batch) == b"hash"
    assert sorted(e[29:] for e in raw.hvals(batch)) == sorted(rest)
    assert broker.lengths("q") == QueueLengths(ready=1, in_flight=size - 4, dead=1)
    assert broker.release_owner("q", "gone") == size - 4
    back = broker.reserve("q", owner="w", count=size)
    assert payloads(back) == [*rest, b"6"]
    assert [d.deliveries for d in back] == [2] * (size - 4) + [1]
    broker.ack("q", back)
    assert list(raw.scan_iter(match=f"{{{namespace}:q}}:leases*")) == []


@pytest.mark.parametrize("count", [1, LISTED_FROM], ids=["script", "listed"])
def test_scripts_are_loaded_again_after_a_script_flush(
    single: tuple[RedisBroker, redis.Redis, str], count: int
) -> None:
    """After SCRIPT FLUSH (as after a restart) the broker reloads its scripts,
    for a reserve the script answers and for one an LRANGE reads."""
    broker, raw, _ = single
    broker.push("q", [b"a", b"b"])
    first = broker.reserve("q", owner="w")

    raw.script_flush()
    second = broker.reserve("q", owner="w", count=count, ack=first)

    assert payloads(first + second) == [b"a", b"b"]
    assert broker.lengths("q") == QueueLengths(in_flight=1)


def test_a_client_that_decodes_responses_is_refused(redis_server: RedisServer) -> None:
    """Payloads are bytes, so a client with decode_responses=True is a config error."""
    client = redis_server.client(decode_responses=True)

    with pytest.raises(ConfigError, match="decode_responses"):
        RedisBroker(client)

    client.close()


def test_a_partly_acked_batch_returns_only_its_unacked_tasks(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Leases are per batch, yet a lapse brings back exactly the tasks not acked."""
    broker, _, _ = single
    broker.push("q", [b"%d" % i for i in range(10)])
    got = broker.reserve("q", owner="w1", count=10, lease=0.3)
    broker.ack("q", got[::2])
    time.sleep(0.6)

    again = broker.reserve("q", owner="w2", count=10)

    assert payloads(again) == [b"1", b"3", b"5", b"7", b"9"]
    assert {d.deliveries for d in again} == {2}


def test_a_stale_receipt_cannot_ack_the_next_holders_lease(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """A worker whose lease lapsed acks nothing once the task was handed out again."""
    broker, _, _ = single
    broker.push("q", [b"a"])
    stale = broker.reserve("q", owner="slow", lease=0.3)
    time.sleep(0.6)
    fresh = broker.reserve("q", owner="w2", lease=60)

    broker.ack("q", stale)

    assert payloads(fresh) == [b"a"]
    assert broker.lengths("q") == QueueLengths(in_flight=1)


def test_a_queue_state_survives_the_wrong_type_with_a_broker_error(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """A key clobbered by someone else gives BrokerError, not a driver exception."""
    broker, raw, namespace = single
    raw.set(f"{{{namespace}:q}}:ready:1", b"not a list")

    with pytest.raises(BrokerError) as caught:
        broker.push("q", [b"a"])

    assert not isinstance(caught.value, BrokerUnavailable)


class _LosesAReply(redis.Redis):
    """A client whose next call of command ``losing`` runs on the server but loses
    its reply (``lose_next``: the next script call)."""

    losing = ""

    @property
    def lose_next(self) -> bool:
        return self.losing == "EVALSHA"

    @lose_next.setter
    def lose_next(self, value: bool) -> None:
        self.losing = "EVALSHA" if value else ""

    def execute_command(self, *args: Any, **options: Any) -> Any:
        result = super().execute_command(*args, **options)
        if self.losing and args[0] == self.losing:
            self.losing = ""
            raise redis.ConnectionError("reply lost")
        return result


def test_retried_calls_whose_reply_was_lost_do_not_act_twice(
    redis_server: RedisServer,
) -> None:
    """A retried reserve leases no extra tasks; a retried dead letter is one record."""
    namespace = new_namespace()
    client = _LosesAReply(host="127.0.0.1", port=redis_server.port)
    broker = RedisBroker(client, namespace=namespace, retry=TEST_RETRY)
    broker.push("q", [b"%d" % i for i in range(10)])

    client.lose_next = True
    got = broker.reserve("q", owner="w", count=5)
    client.lose_next = True
    broker.dead_letter("q", got[0], "poison")
    lengths = broker.lengths("q")
    broker.close()
    delete_namespace([redis_server], namespace)

    assert payloads(got) == [b"0", b"1", b"2", b"3", b"4"]
    assert lengths == QueueLengths(ready=5, in_flight=4, dead=1)


class _RepliesLost(redis.Connection):
    """A connection that reads the reply to the next script call, then reports a
    timeout, as a reply slower than ``socket_timeout`` does: the script ran, and
    redis-py's own retry sends it again."""

    armed = False

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        self.last = args[0]
        super().send_command(*args, **kwargs)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        reply = super().read_response(*args, **kwargs)
        if _RepliesLost.armed and self.last == "EVALSHA":
            _RepliesLost.armed = False
            raise redis.TimeoutError("reply lost")
        return reply


def _retrying_client(redis_server: RedisServer) -> redis.Redis:
    """A client on the normal path (``single_connection_client``) that keeps one
    redis-py retry, on connections that lose a script's reply when armed."""
    pool = redis.ConnectionPool(
        host="127.0.0.1",
        port=redis_server.port,
        retry=Retry(NoBackoff(), 1),
        connection_class=_RepliesLost,
    )
    return redis.Redis(connection_pool=pool, single_connection_client=True)


@pytest.mark.parametrize("count", [5, LISTED_FROM], ids=["popped", "sorted"])
def test_a_reserve_retried_by_redis_py_itself_hands_out_its_first_batch(
    redis_server: RedisServer, count: int
) -> None:
    """A client on the normal path (here ``single_connection_client``) that keeps
    redis-py's retries re-sends a reserve whose reply was lost without the broker
    knowing: the script sees it was run already and hands out the same batch,
    instead of leasing more into it (the whole-batch ack would drop tasks never
    run) or overwriting it (its first tasks would be lost)."""
    namespace = new_namespace()
    client = _retrying_client(redis_server)
    broker = RedisBroker(client, namespace=namespace, retry=TEST_RETRY)
    broker.push("q", [b"%d" % i for i in range(2 * count)])  # loads the scripts

    _RepliesLost.armed = True
    got = broker.reserve("q", owner="w", count=count)
    retried = not _RepliesLost.armed
    held = broker.lengths("q")
    broker.ack("q", got)
    left = broker.lengths("q")
    broker.close()
    delete_namespace([redis_server], namespace)

    assert retried
    assert payloads(got) == [b"%d" % i for i in range(count)]
    assert held == QueueLengths(ready=count, in_flight=count)
    assert left == QueueLengths(ready=count)


def test_a_lean_reserve_on_a_client_of_the_normal_path_retried_by_redis_py(
    redis_server: RedisServer,
) -> None:
    """On a client whose calls go through ``execute_command`` (as a cluster
    client's do) a small reserve between upkeeps is the lean script too: no
    lookup for lapsed leases or due tasks; and when redis-py itself re-sends it
    after a lost reply, the same batch comes back, nothing more is leased."""
    namespace = new_namespace()
    client = _retrying_client(redis_server)
    raw = redis_server.client()
    broker = RedisBroker(client, namespace=namespace, retry=TEST_RETRY)
    broker._nodes[0].monotonic = lambda: 50.0  # never past MAINTAIN_EVERY
    broker.push("q", [b"%d" % i for i in range(12)])
    first = broker.reserve("q", owner="w", count=4)  # the whole script: maintains
    raw.config_resetstat()

    _RepliesLost.armed = True
    second = broker.reserve("q", owner="w", count=4, ack=first)
    retried = not _RepliesLost.armed
    lookups = raw.info("commandstats").get("cmdstat_zrangebyscore", {})
    held = broker.lengths("q")
    broker.close()
    raw.close()
    delete_namespace([redis_server], namespace)

    assert not broker._nodes[0].direct
    assert retried
    assert lookups == {}
    assert payloads(first + second) == [b"%d" % i for i in range(8)]
    assert held == QueueLengths(ready=4, in_flight=4)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "script"])
def test_a_lean_reserve_of_one_task_takes_high_first_and_counts_redeliveries(
    redis_server: RedisServer, direct: bool
) -> None:
    """The lean script moves a single task with LMOVE: HIGH before NORMAL, and
    an entry delivered before (reclaimed from a lapsed lease, then released)
    reports its count, as the whole script does."""
    namespace = new_namespace()
    broker = RedisBroker(
        redis_server.client(single_connection_client=not direct),
        namespace=namespace,
        retry=TEST_RETRY,
    )
    node = broker._nodes[0]
    lean: list[bool] = []
    may_skip = node._may_skip_upkeep

    def spy(queue: str, args: list[Any]) -> bool:
        lean.append(may_skip(queue, args))
        return lean[-1]

    try:
        broker.push("q", [b"a", b"b"])
        broker.reserve("q", owner="w", lease=0.05)
        time.sleep(0.1)  # its lease lapses
        again = broker.reserve("q", owner="w", lease=30.0)  # reclaims it
        broker.release("q", again)  # back at the head, its count kept
        broker.push("q", [b"h"], priority=Priority.HIGH)
        node._may_skip_upkeep = spy  # type: ignore[method-assign]
        got = [broker.reserve("q", owner="w", lease=30.0) for _ in range(3)]
        left = broker.lengths("q")
    finally:
        broker.close()
        delete_namespace([redis_server], namespace)

    assert payloads(again) == [b"a"]
    assert [(d.payload, d.deliveries) for batch in got for d in batch] == [
        (b"h", 1),
        (b"a", 2),
        (b"b", 1),
    ]
    assert lean == [True, True, True]
    assert left == QueueLengths(in_flight=3)


def test_a_replay_limit_past_what_a_lua_number_prints_whole_still_replays(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """A limit of 10**17 (a Lua number prints it '1e+17', which LPOP refuses)
    replays what there is, as SQLite and the memory broker do."""
    broker, _, _ = single
    broker.push("q", [b"a"])
    (popped,) = broker.reserve("q", owner="w", lease=None)
    broker.dead_letter("q", popped, "poison")

    replayed = broker.replay_dead("q", limit=10**17)

    assert replayed == 1
    assert broker.lengths("q") == QueueLengths(ready=1)


def test_a_retried_replay_or_popped_dead_letter_acts_once(
    redis_server: RedisServer,
) -> None:
    """A replay of n whose reply was lost replays n, not 2n; a popped task's dead
    letter retried after a lost reply is one record."""
    namespace = new_namespace()
    client = _LosesAReply(host="127.0.0.1", port=redis_server.port)
    broker = RedisBroker(client, namespace=namespace, retry=TEST_RETRY)
    broker.push("q", [b"%d" % i for i in range(10)])
    for delivery in broker.reserve("q", owner="w", count=6, lease=None):
        client.lose_next = True
        broker.dead_letter("q", delivery, "poison")

    client.lose_next = True
    replayed = broker.replay_dead("q", limit=2)
    lengths = broker.lengths("q")
    broker.close()
    delete_namespace([redis_server], namespace)

    assert replayed == 2
    assert lengths == QueueLengths(ready=6, dead=4)


def test_a_lock_whose_taking_reply_was_lost_is_held_by_its_handle(
    redis_server: RedisServer,
) -> None:
    """SET NX ran but its reply was lost: the retry finds the handle's own token,
    so acquire says True; a release whose reply was lost says True too."""
    namespace = new_namespace()
    client = _LosesAReply(host="127.0.0.1", port=redis_server.port)
    broker = RedisBroker(client, namespace=namespace, retry=TEST_RETRY)
    lock, rival = broker.lock("job"), broker.lock("job")

    client.losing = "SET"
    taken = lock.acquire(timeout=0.5, ttl=None)
    rival_took = rival.acquire(timeout=0.1)
    client.losing = "EVALSHA"  # the release runs, its reply is lost
    released = lock.release()
    rival_after = rival.acquire(timeout=0.1)
    rival.release()
    broker.close()
    delete_namespace([redis_server], namespace)

    assert (taken, rival_took, released, rival_after) == (True, False, True, True)


def test_a_release_of_several_batches_puts_them_back_in_the_order_taken(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Batches released together return to the head of the queue in order (what a
    stopping worker's prefetched batches rely on), whatever the hash seed."""
    broker, _, _ = single
    broker.push("q", [b"t%02d" % i for i in range(40)])
    batches = [broker.reserve("q", owner="w", count=n) for n in (3, 3, 3, 3, 32)]
    taken = [d for batch in batches for d in batch]

    broker.release("q", taken)
    again = broker.reserve("q", owner="w", count=40, lease=None)

    assert payloads(again) == [b"t%02d" % i for i in range(40)]


def test_maintenance_runs_after_a_script_flush_while_a_backlog_lasts(
    redis_server: RedisServer,
) -> None:
    """At most once, the scripts lost (restart, SCRIPT FLUSH) while tasks are ready:
    a HIGH task falling due is promoted by the next maintenance pass, not after the
    whole backlog has drained."""
    namespace = new_namespace()
    now = [1_000_000.0]
    broker = RedisBroker(
        redis_server.client(), namespace=namespace, retry=TEST_RETRY,
        clock=lambda: now[0],
    )  # fmt: skip
    broker._nodes[0].monotonic = lambda: now[0]  # the maintenance interval's clock
    broker.push("q", [b"n%d" % i for i in range(200)])
    broker.push("q", [b"urgent"], priority=Priority.HIGH, eta=now[0] + 1)
    redis_server.client().script_flush()
    now[0] += 2

    seen: list[bytes] = []
    for _ in range(3):
        now[0] += 0.1  # past the broker's maintenance interval every time
        seen += payloads(broker.reserve("q", owner="w", count=5, lease=None))
    broker.close()
    delete_namespace([redis_server], namespace)

    assert b"urgent" in seen


# -- waiting -------------------------------------------------------------------------


def test_waiting_on_an_empty_queue_does_not_poll(
    private: Callable[..., tuple[RedisServer, RedisBroker]],
) -> None:
    """A one-second wait costs one reserve and one blocking wait, not a polling
    loop. A wait that runs out without a wake-up token is not followed by a
    second reserve: whatever a push, a release or another node makes ready
    leaves a token, so it would find nothing (an idle worker waits again at
    once, and thousands of them would double the server's idle load)."""
    server, broker = private()
    raw = server.client()
    broker.reserve("q", owner="w")  # loads the script
    raw.config_resetstat()

    started = time.monotonic()
    got = broker.reserve("q", owner="w", wait=1.0)
    waited = time.monotonic() - started
    stats = raw.info("commandstats")

    assert got == []
    assert waited >= 0.95
    assert stats["cmdstat_evalsha"]["calls"] == 1
    assert stats["cmdstat_blpop"]["calls"] == 1
    raw.close()


def test_a_waiting_reserve_takes_a_lapsed_lease_when_it_lapses(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """A reserve finding nothing ready waits only until the next lease deadline,
    which leaves no wake-up token, and then takes the lapsed task."""
    broker, _, _ = single
    broker.push("q", [b"a"])
    broker.reserve("q", owner="lost", lease=0.5)
    started = time.monotonic()

    got = broker.reserve("q", owner="w", wait=10.0)
    elapsed = time.monotonic() - started

    assert payloads(got) == [b"a"]
    assert [d.deliveries for d in got] == [2]
    assert 0.4 <= elapsed < 3.0


def test_a_push_wakes_a_waiting_reserve_at_once(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """A task pushed to an idle, waiting worker is handed out right after the push."""
    broker, _, _ = single
    pushed_at: list[float] = []

    def push() -> None:
        broker.push("q", [b"a"])
        pushed_at.append(time.monotonic())

    pusher = threading.Timer(0.3, push)
    pusher.start()
    got = broker.reserve("q", owner="w", wait=10.0)
    woke_at = time.monotonic()
    pusher.join()

    assert payloads(got) == [b"a"]
    assert woke_at - pushed_at[0] < 0.5


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "script"])
def test_only_a_push_to_an_empty_list_leaves_a_wake_up_token(
    redis_server: RedisServer, direct: bool
) -> None:
    """A worker waits for a token only after finding nothing ready, so a push
    behind waiting tasks leaves none (its commands would slow every push of a
    backlog); a push that finds the list empty again leaves one, also when the
    client last saw the list full (the token then follows the push). A plain
    connection sends the token in the push's own write when its last push found
    the list empty: the first push behind a new backlog leaves a spare one."""
    namespace = new_namespace()
    broker = RedisBroker(
        redis_server.client(single_connection_client=not direct),
        namespace=namespace,
        retry=TEST_RETRY,
    )
    raw = redis_server.client()
    notify = f"{{{namespace}:q}}:notify"
    tokens = []
    for step in ("a", "b", "c", "d"):
        broker.push("q", [step.encode()])  # a: empty list, the rest behind it
        tokens.append(raw.llen(notify))
        raw.delete(notify)  # taken by a worker
    broker.reserve("q", owner="w", count=4, lease=None)  # the list is empty again
    broker.push("q", [b"e"])
    tokens.append(raw.llen(notify))
    direct_node = broker._nodes[0].direct
    broker.close()
    raw.close()
    delete_namespace([redis_server], namespace)

    assert direct_node is direct
    assert tokens == [1, 1 if direct else 0, 0, 0, 1]


def test_a_push_behind_waiting_tasks_on_another_node_does_not_wake_the_home(
    nodes: tuple[RedisBroker, list[redis.Redis], str],
) -> None:
    """Over several nodes a push to a node other than the queue's home wakes the
    home (one more round trip) only when it found its list there empty."""
    broker, raws, namespace = nodes
    queue = next(q for q in (f"q{i}" for i in range(100)) if broker._home(q) == 2)
    notify = f"{{{namespace}:{queue}}}:notify"
    tokens = []
    for step in ("a", "b"):
        broker._push_turn = itertools.count(0)  # node 0
        broker.push(queue, [step.encode()])
        tokens.append([raw.llen(notify) for raw in raws])
        raws[2].delete(notify)  # taken by a worker

    assert tokens == [[0, 0, 1], [0, 0, 0]]


def test_a_waiting_reserve_wakes_when_a_delayed_task_falls_due(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """A waiting reserve blocks only until the next eta, then hands that task out."""
    broker, _, _ = single
    broker.push("q", [b"later"], eta=time.time() + 0.5)
    started = time.monotonic()

    got = broker.reserve("q", owner="w", wait=10.0)
    elapsed = time.monotonic() - started

    assert payloads(got) == [b"later"]
    assert 0.4 <= elapsed < 3.0


# -- several nodes and the cluster ---------------------------------------------------


@pytest.fixture
def nodes(
    redis_node_servers: list[RedisServer],
) -> Iterator[tuple[RedisBroker, list[redis.Redis], str]]:
    """A broker over three servers, raw clients of each, and the namespace."""
    namespace = new_namespace()
    broker = RedisBroker(
        clients=[s.client() for s in redis_node_servers],
        namespace=namespace,
        retry=TEST_RETRY,
    )
    raws = [s.client() for s in redis_node_servers]
    yield broker, raws, namespace
    broker.close()
    for raw in raws:
        raw.close()
    delete_namespace(redis_node_servers, namespace)


def test_pushes_spread_over_nodes_and_receipts_route_acks_back(
    nodes: tuple[RedisBroker, list[redis.Redis], str],
) -> None:
    """Three pushes land on three nodes; acks reach each task's own node."""
    broker, raws, namespace = nodes
    for batch in range(3):
        broker.push("q", [b"%d-%d" % (batch, i) for i in range(5)])
    ready = [raw.llen(f"{{{namespace}:q}}:ready:1") for raw in raws]

    got = broker.reserve("q", owner="w", count=15)
    broker.ack("q", got)

    assert ready == [5, 5, 5]
    assert Counter(d.receipt.rsplit("@", 1)[1] for d in got) == Counter(
        {"0": 5, "1": 5, "2": 5}
    )
    assert [raw.zcard(f"{{{namespace}:q}}:leases") for raw in raws] == [0, 0, 0]
    assert broker.lengths("q") == QueueLengths()


def test_reserve_acks_on_nodes_it_does_not_visit(
    nodes: tuple[RedisBroker, list[redis.Redis], str],
) -> None:
    """reserve(ack=...) settles tasks of every node, even when it stops early."""
    broker, _, _ = nodes
    for batch in range(3):
        broker.push("q", [b"%d" % batch])
    held = broker.reserve("q", owner="w", count=3)
    broker.push("q", [b"next"])

    got = broker.reserve("q", owner="w", count=1, ack=held)

    assert payloads(got) == [b"next"]
    assert broker.lengths("q") == QueueLengths(in_flight=1)


def test_a_reserve_visiting_the_home_node_twice_keeps_both_batches_leased(
    nodes: tuple[RedisBroker, list[redis.Redis], str],
) -> None:
    """A reserve asks the queue's home node for HIGH tasks, then visits every node
    for NORMAL ones: the home node's two batches are both held, and a dead owner's
    release gives every task back, HIGH ones included."""
    broker, _, _ = nodes
    home = broker._home("q")
    broker.push("q", [b"high-%d" % i for i in range(5)], priority=Priority.HIGH)
    for node in range(3):
        broker.push("q", [b"n%d-%d" % (node, i) for i in range(40)])
    broker._reserve_turn = itertools.count(home + 1)  # start elsewhere than home

    # The home node's second visit wants 80 tasks: a lease big enough to be
    # moved by SORT ... STORE, which would overwrite a batch list of that name.
    got = broker.reserve("q", owner="w", count=200)
    held = broker.lengths("q")
    released = broker.release_owner("q", "w")
    again = broker.reserve("q", owner="v", count=200, lease=None)

    assert payloads(got)[:5] == [b"high-%d" % i for i in range(5)]
    assert len(got) == 125
    assert held == QueueLengths(in_flight=125)
    assert released == 125
    assert sorted(payloads(again)) == sorted(
        [b"high-%d" % i for i in range(5)]
        + [b"n%d-%d" % (node, i) for node in range(3) for i in range(40)]
    )


@pytest.mark.parametrize("lease", [None, 60.0], ids=["popped", "leased"])
def test_tasks_in_hand_survive_another_node_going_down(
    redis_server_factory: Callable[..., RedisServer], lease: float | None
) -> None:
    """A reserve that got tasks from one node hands them out when the next node it
    visits is down (popped ones exist nowhere else); the outage shows on a call
    that gets nothing."""
    up, down = redis_server_factory(), redis_server_factory()
    broker = RedisBroker(
        clients=[up.client(socket_timeout=2), down.client(socket_timeout=2)],
        namespace="nodes",
        retry=FAST_FAIL,
    )
    queue = next(q for q in (f"q{i}" for i in range(100)) if broker._home(q) == 0)
    broker.push(queue, [b"%d" % i for i in range(10)])  # the first push: node 0
    down.stop()
    broker._reserve_turn = itertools.count(0)

    got = broker.reserve(queue, owner="w", count=20, lease=lease)
    with pytest.raises(BrokerUnavailable):
        broker.reserve(queue, owner="w", count=20, lease=lease)
    broker.close()

    assert payloads(got) == [b"%d" % i for i in range(10)]


def test_acks_for_nodes_after_a_failed_one_are_still_sent(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A reserve that meets a node down after another gave it tasks hands those
    out, and still sends its acks to the nodes it had not visited yet."""
    servers = [redis_server_factory() for _ in range(3)]
    broker = RedisBroker(
        clients=[s.client(socket_timeout=2) for s in servers],
        namespace="nodes",
        retry=FAST_FAIL,
    )
    queue = next(q for q in (f"q{i}" for i in range(100)) if broker._home(q) == 0)
    broker.push(queue, [b"t%d" % i for i in range(5)])  # pushes go round robin:
    broker.push(queue, [b"elsewhere"])  # node 1
    broker.push(queue, [b"acked"])  # node 2
    broker._reserve_turn = itertools.count(2)
    held = broker.reserve(queue, owner="w", count=1)
    servers[1].stop()
    broker._reserve_turn = itertools.count(0)  # visits 0, then 1 (down), then 2

    got = broker.reserve(queue, owner="w", count=10, ack=held)
    raw = servers[2].client()
    leases = raw.zcard(f"{{nodes:{queue}}}:leases")
    raw.close()
    broker.close()

    assert payloads(held) == [b"acked"]
    assert payloads(got) == [b"t%d" % i for i in range(5)]
    assert leases == 0


@pytest.mark.parametrize("lease", [60.0, None], ids=["leased", "popped"])
def test_a_woken_reserve_passes_the_wake_up_on_through_the_home_node(
    redis_node_servers: list[RedisServer], lease: float | None
) -> None:
    """Over several nodes, two idle workers and one push of many tasks to a node
    other than the queue's home: both wake at once, as on one node.

    Workers block on the home node's wake-up list. The worker the push wakes takes
    its task from another node and leaves tasks there, so it passes the wake-up on
    through the home node, and the second worker does not sleep out its wait.
    """
    namespace = new_namespace()

    def broker() -> RedisBroker:
        return RedisBroker(
            clients=[s.client() for s in redis_node_servers],
            namespace=namespace,
            retry=TEST_RETRY,
        )

    producer, workers = broker(), [broker(), broker()]
    queue = next(q for q in (f"q{i}" for i in range(100)) if producer._home(q) != 0)
    producer._push_turn = itertools.count(0)  # the push lands on node 0
    woke: list[float] = []

    def wait(worker: RedisBroker) -> None:
        if worker.reserve(queue, owner="w", wait=5.0, lease=lease):
            woke.append(time.monotonic())

    waiters = [threading.Thread(target=wait, args=(w,)) for w in workers]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.3)  # both are blocked now
    pushed = time.monotonic()
    producer.push(queue, [b"%d" % i for i in range(10)])
    for waiter in waiters:
        waiter.join(timeout=30)
    for b in (producer, *workers):
        b.close()
    delete_namespace(redis_node_servers, namespace)

    assert len(woke) == 2
    assert max(woke) - pushed < 2.0


def test_wake_up_tokens_are_left_on_the_queues_home_node_only(
    nodes: tuple[RedisBroker, list[redis.Redis], str],
) -> None:
    """Pushes, delayed pushes, releases and replays on any node leave their token
    where workers wait for it: on the queue's home node, nowhere else."""
    broker, raws, namespace = nodes
    queue = next(q for q in (f"q{i}" for i in range(100)) if broker._home(q) == 2)
    broker._push_turn = itertools.count(0)
    broker.push(queue, [b"a"])  # node 0
    broker.push(queue, [b"b"], eta=time.time() + 60)  # node 1
    broker._reserve_turn = itertools.count(0)
    got = broker.reserve(queue, owner="w")  # from node 0
    broker.dead_letter(queue, got[0], "poison")
    broker.replay_dead(queue)
    got = broker.reserve(queue, owner="w")
    broker.release(queue, got)
    broker.release_owner(queue, "w")
    notify = f"{{{namespace}:{queue}}}:notify"

    assert [raw.llen(notify) for raw in raws] == [0, 0, 1]


@pytest.mark.parametrize("lease", [60.0, None], ids=["leased", "popped"])
def test_a_woken_reserve_filled_before_its_last_node_passes_the_wake_up_on(
    nodes: tuple[RedisBroker, list[redis.Redis], str], lease: float | None
) -> None:
    """A woken reserve that filled its batch on one node and did not visit the
    others may leave tasks there: it passes the wake-up on through the home node
    (at worst a spare wake-up, which the next worker's empty reserve ends)."""
    broker, raws, namespace = nodes
    queue = next(q for q in (f"q{i}" for i in range(100)) if broker._home(q) == 2)
    broker._push_turn = itertools.count(0)
    broker.push(queue, [b"a"])  # node 0
    broker.push(queue, [b"b"])  # node 1
    notify = f"{{{namespace}:{queue}}}:notify"
    for raw in raws:
        raw.delete(notify)  # the token the pushes left was taken
    broker._reserve_turn = itertools.count(0)  # HIGH on node 2, then 0, 1, 2
    member = "" if lease is None else f"{new_batch_id()}:w"

    got, _ = broker._reserve_once(queue, member, 1, lease, {}, True)

    assert payloads(got) == [b"a"]
    assert raws[2].llen(notify) == 1


def test_locks_and_keys_live_on_the_node_their_name_hashes_to(
    nodes: tuple[RedisBroker, list[redis.Redis], str],
) -> None:
    """Every handle on one name meets on one node, and names spread over nodes."""
    broker, raws, namespace = nodes
    names = [f"name-{i}" for i in range(30)]
    for name in names:
        broker.set_key(name, b"v")

    holders = [
        [i for i, raw in enumerate(raws) if raw.exists(f"{namespace}:key:{name}")]
        for name in names
    ]

    assert all(len(h) == 1 for h in holders)
    assert len({h[0] for h in holders}) == 3


def test_cluster_queues_spread_over_the_masters(redis_cluster: LocalCluster) -> None:
    """Different queues hash to different cluster nodes; each works end to end."""
    namespace = new_namespace()
    broker = RedisBroker(redis_cluster.client(), namespace=namespace, retry=TEST_RETRY)
    queues = [f"q{i}" for i in range(12)]
    for queue in queues:
        broker.push(queue, [queue.encode()])

    got = [broker.reserve(q, owner="w", ack=()) for q in queues]
    owners = set()
    for server in redis_cluster.servers:
        raw = server.client()
        if any(True for _ in raw.scan_iter(match=f"{{{namespace}:*")):
            owners.add(server.port)
        raw.close()
    broker.close()
    delete_namespace(redis_cluster.servers, namespace)

    assert [payloads(g) for g in got] == [[q.encode()] for q in queues]
    assert len(owners) >= 2


def test_from_url_builds_single_nodes_and_cluster_brokers(
    redis_node_servers: list[RedisServer], redis_cluster: LocalCluster
) -> None:
    """One URL, a comma-separated list, and cluster=True each give a working broker."""
    urls = ",".join(s.url for s in redis_node_servers)
    brokers = [
        RedisBroker.from_url(redis_node_servers[0].url, namespace=new_namespace()),
        RedisBroker.from_url(urls, namespace=new_namespace()),
        RedisBroker.from_url(
            redis_cluster.servers[0].url, namespace=new_namespace(), cluster=True
        ),
    ]

    for broker in brokers:
        broker.push("q", [b"a"])
    got = [broker.reserve("q", owner="w", lease=None) for broker in brokers]
    for broker in brokers:
        broker.close()

    assert [payloads(g) for g in got] == [[b"a"]] * 3


def test_a_redis_cluster_url_reaches_the_cluster_from_a_url_alone(
    redis_cluster: LocalCluster,
) -> None:
    """redis+cluster://host:port names any node of a cluster, so a URL alone
    ($SERGEANT_BROKER, the command line) reaches all of it; a plain redis:// URL
    to one node got MOVED replies for the queues hashed elsewhere."""
    port = redis_cluster.servers[0].port
    url = f"redis+cluster://127.0.0.1:{port}"
    queues = [f"cli-{new_namespace()}" for _ in range(6)]  # spread over the slots
    broker = broker_from_url(url)
    try:
        for queue in queues:
            broker.push(queue, [b"a", b"b"])
        shown = subprocess.run(
            [sys.executable, "-m", "sergeant.adapters.cli", "queues", *queues,
             "--broker", url],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        for queue in queues:
            broker.purge(queue)
        broker.close()

    assert shown.returncode == 0, shown.stderr
    rows = [line.split() for line in shown.stdout.splitlines()[1:]]
    assert rows == [[queue, "2", "0", "0", "0"] for queue in queues]


@pytest.mark.parametrize("namespace", ["a:b", "{a}", "a}", "", "a\nb", 7])
def test_a_namespace_that_would_blur_key_names_is_refused_at_construction(
    redis_server: RedisServer, namespace: Any
) -> None:
    """Keys are ``{ns:q}:...``: namespace "a" with queue "b:c" and namespace "a:b"
    with queue "c" would share every key, and braces would move the hash tag.
    Such a namespace fails at construction, naming the field, from code and URL."""
    client = redis_server.client()
    try:
        with pytest.raises(ConfigError, match=r"RedisBroker\.namespace"):
            RedisBroker(client, namespace=namespace)
    finally:
        client.close()
    if isinstance(namespace, str) and namespace.isprintable() and namespace:
        with pytest.raises(ConfigError, match=r"RedisBroker\.namespace"):
            broker_from_url(f"{redis_server.url}?namespace={namespace}")


def test_a_url_names_its_namespace(redis_server: RedisServer) -> None:
    """``?namespace=`` in a URL (the command line's only way to name one) sets the
    namespace; the other query options still reach redis-py as written."""
    namespace = new_namespace()
    url = f"{redis_server.url}?socket_timeout=5&namespace={namespace}"
    by_url = broker_from_url(url)
    by_code = RedisBroker(redis_server.client(), namespace=namespace)
    default = broker_from_url(redis_server.url)
    try:
        by_url.push("q", [b"a"])
        seen = by_code.lengths("q").ready, default.lengths("q").ready
        timeout = by_url._nodes[0].client.connection_pool.connection_kwargs[
            "socket_timeout"
        ]
    finally:
        by_code.purge("q")
        for broker in (by_url, by_code, default):
            broker.close()

    assert by_url.namespace == namespace
    assert seen == (1, 0)
    assert timeout == 5.0


def test_the_command_line_inspects_the_namespace_its_url_names(
    redis_server: RedisServer,
) -> None:
    """``sergeant queues --broker redis://...?namespace=NS`` lists NS's queues,
    not the default namespace's."""
    namespace = new_namespace()
    ours = RedisBroker(redis_server.client(), namespace=namespace)
    ours.push("mail", [b"a", b"b"])
    try:
        shown = subprocess.run(
            [sys.executable, "-m", "sergeant.adapters.cli", "queues",
             "--broker", f"{redis_server.url}?namespace={namespace}"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        ours.purge("mail")
        ours.close()

    assert shown.returncode == 0, shown.stderr
    assert [line.split() for line in shown.stdout.splitlines()[1:]] == [
        ["mail", "2", "0", "0", "0"]
    ]


def test_urls_and_arguments_naming_different_namespaces_are_refused(
    redis_node_servers: list[RedisServer],
) -> None:
    """Two nodes of one broker must share a namespace, and an explicit argument
    may not contradict the URL: either would put keys where nobody looks."""
    one, two = (s.url for s in redis_node_servers[:2])
    with pytest.raises(ConfigError, match="different namespaces: a, b"):
        RedisBroker.from_url(f"{one}?namespace=a,{two}?namespace=b")
    with pytest.raises(ConfigError, match="namespace='c' but the URL says"):
        RedisBroker.from_url(f"{one}?namespace=a", namespace="c")
    same = RedisBroker.from_url(f"{one}?namespace=a,{two}", namespace="a")
    same.close()
    assert same.namespace == "a"


def test_a_cluster_url_to_a_node_not_in_cluster_mode_is_one_line(
    redis_server: RedisServer,
) -> None:
    """A cluster client connects as it is made: its refusal (a node not in
    cluster mode) is a BrokerError, so the command prints one line and exits 1,
    not the cluster client's traceback."""
    url = f"redis+cluster://127.0.0.1:{redis_server.port}"
    with pytest.raises(BrokerError, match="Cluster mode is not enabled"):
        broker_from_url(url)

    shown = subprocess.run(
        [sys.executable, "-m", "sergeant.adapters.cli", "queues", "--broker", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert shown.returncode == 1
    assert "Traceback" not in shown.stderr
    assert shown.stderr.count("\n") == 1
    assert "Cluster mode is not enabled" in shown.stderr


def test_a_name_the_client_cannot_send_is_a_broker_error_on_several_nodes(
    nodes: tuple[RedisBroker, list[redis.Redis], str],
) -> None:
    """A queue or lock name holding a lone surrogate is routed first (hashed to
    its home node), then refused by the client: a BrokerError, as on one node,
    not a raw UnicodeEncodeError from the routing."""
    broker, _, _ = nodes
    name = "reports-" + os.fsdecode(b"\xff")

    for call in (
        lambda: broker.push(name, [b"a"]),
        lambda: broker.reserve(name, owner="w"),
        lambda: broker.lock(name).acquire(timeout=0),
    ):
        with pytest.raises(BrokerError):
            call()
