"""Redis-specific behaviour: key layout, scripts, node routing, connection faults.

Everything runs against real ``redis-server`` processes started by the fixtures in
``tests/support/redis_backend.py``; the broker contract itself is in
``contract_tests/``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot
from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.redis import RedisBroker, RetryPolicy
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import Starvation, WorkerConfig
from sergeant.errors import BrokerError, BrokerUnavailable, ConfigError
from sergeant.producer import Producer
from sergeant.protocols import QueueLengths
from sergeant.task import Priority, Task
from sergeant.worker import Worker
from tests.support.redis_backend import TEST_RETRY, delete_namespace, new_namespace
from tests.support.redis_servers import LocalCluster, RedisServer

pytestmark = pytest.mark.redis

FAST_FAIL = RetryPolicy(budget=0.5, base=0.02, cap=0.1)
LOGGER = "sergeant.adapters.redis"


@pytest.fixture
def single(redis_server: RedisServer) -> Iterator[tuple[RedisBroker, redis.Redis, str]]:
    """A broker on the shared server, a raw client of that server, and the namespace."""
    namespace = new_namespace()
    broker = RedisBroker(redis_server.client(), namespace=namespace, retry=TEST_RETRY)
    raw = redis_server.client()
    yield broker, raw, namespace
    broker.close()
    raw.close()
    delete_namespace([redis_server], namespace)


@pytest.fixture
def private(
    redis_server_factory: Callable[..., RedisServer],
) -> Iterator[Callable[..., tuple[RedisServer, RedisBroker]]]:
    """Starts a server of the test's own (which it may stop) and a broker on it."""
    made: list[RedisBroker] = []

    def start(*, appendonly: bool = False) -> tuple[RedisServer, RedisBroker]:
        server = redis_server_factory(appendonly=appendonly)
        client = server.client(socket_timeout=5, socket_connect_timeout=1)
        made.append(RedisBroker(client, namespace="private", retry=FAST_FAIL))
        return server, made[-1]

    yield start
    for broker in made:
        broker.close()


def _payloads(deliveries: list[Any]) -> list[bytes]:
    return [d.payload for d in deliveries]


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
    assert any(k.count(":leases:") == 1 for k in keys)  # the batch's own hash
    assert len({key_slot(k.encode()) for k in keys}) == 1


def test_scripts_are_loaded_again_after_a_script_flush(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """After SCRIPT FLUSH (as after a restart) the broker reloads its scripts."""
    broker, raw, _ = single
    broker.push("q", [b"a", b"b"])
    first = broker.reserve("q", owner="w")

    raw.script_flush()
    second = broker.reserve("q", owner="w", ack=first)

    assert _payloads(first + second) == [b"a", b"b"]
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

    assert _payloads(again) == [b"1", b"3", b"5", b"7", b"9"]
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

    assert _payloads(fresh) == [b"a"]
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
    """A client whose next script call runs on the server but loses its reply."""

    lose_next = False

    def execute_command(self, *args: Any, **options: Any) -> Any:
        result = super().execute_command(*args, **options)
        if self.lose_next and args[0] == "EVALSHA":
            self.lose_next = False
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

    assert _payloads(got) == [b"0", b"1", b"2", b"3", b"4"]
    assert lengths == QueueLengths(ready=5, in_flight=4, dead=1)


# -- waiting -------------------------------------------------------------------------


def test_waiting_on_an_empty_queue_does_not_poll(
    private: Callable[..., tuple[RedisServer, RedisBroker]],
) -> None:
    """A one-second wait costs a couple of commands, not a polling loop."""
    server, broker = private()
    raw = server.client()
    broker.reserve("q", owner="w")  # loads the script
    raw.config_resetstat()

    got = broker.reserve("q", owner="w", wait=1.0)
    stats = raw.info("commandstats")

    assert got == []
    assert stats["cmdstat_evalsha"]["calls"] <= 3
    assert stats["cmdstat_blpop"]["calls"] <= 2
    raw.close()


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

    assert _payloads(got) == [b"a"]
    assert woke_at - pushed_at[0] < 0.5


def test_a_waiting_reserve_wakes_when_a_delayed_task_falls_due(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """A waiting reserve blocks only until the next eta, then hands that task out."""
    broker, _, _ = single
    broker.push("q", [b"later"], eta=time.time() + 0.5)
    started = time.monotonic()

    got = broker.reserve("q", owner="w", wait=10.0)
    elapsed = time.monotonic() - started

    assert _payloads(got) == [b"later"]
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

    assert _payloads(got) == [b"next"]
    assert broker.lengths("q") == QueueLengths(in_flight=1)


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

    assert [_payloads(g) for g in got] == [[q.encode()] for q in queues]
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

    assert [_payloads(g) for g in got] == [[b"a"]] * 3


# -- connection faults ---------------------------------------------------------------


def test_a_stopped_server_raises_broker_unavailable_after_the_budget(
    private: Callable[..., tuple[RedisServer, RedisBroker]],
) -> None:
    """With Redis down, a call retries for its budget, then raises BrokerUnavailable."""
    server, broker = private()
    server.stop()
    started = time.monotonic()

    with pytest.raises(BrokerUnavailable):
        broker.push("q", [b"a"])
    elapsed = time.monotonic() - started

    assert 0.2 <= elapsed < 5.0


def test_the_next_call_succeeds_once_the_server_is_back(
    private: Callable[..., tuple[RedisServer, RedisBroker]],
) -> None:
    """A restarted server (same port) serves the broker's next call."""
    server, broker = private()
    server.stop()
    with pytest.raises(BrokerUnavailable):
        broker.reserve("q", owner="w")

    server.start()
    broker.push("q", [b"a"])

    assert _payloads(broker.reserve("q", owner="w")) == [b"a"]


def test_a_restart_with_appendonly_keeps_pushed_and_leased_tasks(
    private: Callable[..., tuple[RedisServer, RedisBroker]],
) -> None:
    """With appendonly on, a restart keeps ready, leased and acked state."""
    server, broker = private(appendonly=True)
    broker.push("q", [b"%d" % i for i in range(100)])
    held = broker.reserve("q", owner="w", count=30)
    broker.ack("q", held[:10])

    server.restart()
    lengths = broker.lengths("q")
    broker.ack("q", held[10:])
    rest = broker.reserve("q", owner="w", count=100)

    assert lengths == QueueLengths(ready=70, in_flight=20)
    assert _payloads(rest) == [b"%d" % i for i in range(30, 100)]


def test_an_outage_is_logged_once_and_its_end_once(
    private: Callable[..., tuple[RedisServer, RedisBroker]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Many failing calls in one outage log one warning, and recovery logs one."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    server, broker = private()
    server.stop()
    for _ in range(3):
        with pytest.raises(BrokerUnavailable):
            broker.lengths("q")

    server.start()
    broker.lengths("q")
    broker.lengths("q")

    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2
    assert "unreachable" in messages[0]
    assert "reachable again" in messages[1]


def test_retry_delays_grow_with_jitter_up_to_the_cap() -> None:
    """Back-off doubles from base, keeps at least half of it, and never passes cap."""
    policy = RetryPolicy(budget=10, base=0.1, cap=1.0)

    delays = [policy.delay(attempt) for attempt in range(8)]

    assert 0.05 <= delays[0] <= 0.1
    assert 0.1 <= delays[1] <= 0.2
    assert all(0.5 <= d <= 1.0 for d in delays[4:])


# -- a real worker -------------------------------------------------------------------

_STUCK_WORKER = """
import sys, time
import redis
from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.redis import RedisBroker
from sergeant.adapters.watchdogs.null import NullWatchdog
from sergeant.config import WorkerConfig
from sergeant.worker import Worker

port, namespace, signal_file = int(sys.argv[1]), sys.argv[2], sys.argv[3]

class Stuck(Worker):
    def work(self, task):
        open(signal_file, "w").close()  # holding the whole batch now
        time.sleep(3600)

Stuck(
    broker=RedisBroker(redis.Redis(port=port), namespace=namespace),
    codec=PickleCodec(), executor=SerialExecutor(), watchdog=NullWatchdog(),
    config=WorkerConfig(name="jobs", tasks_per_transaction=1000, lease=1.0, wait=0.2),
).run()
"""


class _Ledger(Worker):
    """Records each task's number; stops itself once the queue stays empty."""

    def __init__(self, broker: RedisBroker, *, batch: int, lease: float) -> None:
        super().__init__(
            broker=broker,
            codec=PickleCodec(),
            executor=SerialExecutor(),
            watchdog=NullWatchdog(),
            config=WorkerConfig(
                name="jobs",
                tasks_per_transaction=batch,
                lease=lease,
                wait=0.2,
                starvation=Starvation(time_with_no_tasks=3.0),
            ),
        )
        self.ran: list[int] = []

    def work(self, task: Task) -> None:
        self.ran.append(task.kwargs["n"])
        time.sleep(0.0005)

    def on_starvation(self, time_with_no_tasks: float) -> None:
        self.request_stop()


@pytest.mark.slow
def test_a_sigkilled_worker_holding_1000_tasks_loses_none(
    single: tuple[RedisBroker, redis.Redis, str],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """SIGKILL a worker holding 1,000 leased tasks: all 1,000 run again elsewhere."""
    broker, _, namespace = single
    Producer(broker=broker, codec=PickleCodec(), queue="jobs").push_tasks(
        [{"n": n} for n in range(1000)]
    )
    signal_file = tmp_path / "holding"
    args = [str(redis_server.port), namespace, str(signal_file)]
    child = subprocess.Popen([sys.executable, "-c", _STUCK_WORKER, *args])
    give_up = time.monotonic() + 60
    while not signal_file.exists() and time.monotonic() < give_up:
        time.sleep(0.05)
    held = broker.lengths("jobs")
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)

    rescuer = _Ledger(broker, batch=100, lease=60.0)
    rescuer.run()

    assert held == QueueLengths(in_flight=1000)
    assert sorted(rescuer.ran) == list(range(1000))
    assert broker.lengths("jobs") == QueueLengths()


@pytest.mark.slow
def test_a_worker_rides_out_a_redis_restart_without_losing_acked_work(
    private: Callable[..., tuple[RedisServer, RedisBroker]],
) -> None:
    """Restart redis-server (appendonly) under a running worker: it resumes, no loss."""
    server, broker = private(appendonly=True)
    Producer(broker=broker, codec=PickleCodec(), queue="jobs").push_tasks(
        [{"n": n} for n in range(2000)]
    )
    worker = _Ledger(broker, batch=50, lease=30.0)
    runner = threading.Thread(target=worker.run)
    runner.start()
    while len(worker.ran) < 300 and runner.is_alive():
        time.sleep(0.01)

    server.restart()
    runner.join(timeout=120)

    assert not runner.is_alive()
    assert sorted(set(worker.ran)) == list(range(2000))
    assert len(worker.ran) - 2000 <= 100  # at most the batches in flight re-run
    assert broker.lengths("jobs") == QueueLengths()
