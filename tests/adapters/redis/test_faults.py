"""The Redis broker under faults: outages, restarts, a worker killed mid-batch.

Real ``redis-server`` processes: the shared one, and private ones (``private``)
that a test stops and restarts.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.redis import RedisBroker, RetryPolicy
from sergeant.adapters.redis._node import HEADER_LEN, LEASES
from sergeant.adapters.redis._receipts import by_node
from sergeant.adapters.redis.faults import ConnectionGuard
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import Starvation, WorkerConfig
from sergeant.errors import BrokerError, BrokerUnavailable
from sergeant.producer import Producer
from sergeant.protocols import Delivery, QueueLengths
from sergeant.task import Priority, Task
from sergeant.worker import Worker
from tests.support.redis_backend import FAST_FAIL, TEST_RETRY, payloads
from tests.support.redis_servers import LocalCluster, RedisServer, free_port

pytestmark = pytest.mark.redis

LOGGER = "sergeant.adapters.redis"


def _fails_then_done(*errors: Exception) -> Callable[[], str]:
    """A call that raises ``errors`` one per attempt, then returns "done"."""
    left = list(errors)

    def call() -> str:
        if left:
            raise left.pop()
        return "done"

    return call


def _raises(error: Exception) -> Callable[[], None]:
    """A call that raises ``error`` every time."""

    def call() -> None:
        raise error

    return call


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

    assert payloads(broker.reserve("q", owner="w")) == [b"a"]


def test_a_prefetch_answered_noscript_by_a_server_gone_since_is_unavailable(
    private: Callable[..., tuple[RedisServer, RedisBroker]],
) -> None:
    """A request begun after the server lost its scripts (restart, SCRIPT FLUSH)
    and collected once it is down: the scripts are loaded again under the retry
    budget, so the failure is BrokerUnavailable, never a driver exception (which
    the worker's prefetch would not catch)."""
    server, broker = private()
    broker.push("q", [b"a", b"b"])
    first = broker.reserve("q", owner="w")
    server.client().script_flush()
    collect = broker.begin_reserve("q", owner="w", ack=first)
    time.sleep(0.2)  # the NOSCRIPT reply is in the client's socket by now
    server.stop()

    with pytest.raises(BrokerUnavailable):
        collect()


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
    assert payloads(rest) == [b"%d" % i for i in range(30, 100)]


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


class _Time:
    """A monotonic clock and a sleep that advances it, for a guard under test."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_call_that_fails_once_is_retried_at_once_without_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One failure, as on a connection gone stale while Redis restarted, is
    retried at once and not logged: the server is back, there is no outage."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    time_ = _Time()
    guard = ConnectionGuard(
        FAST_FAIL, name="127.0.0.1:1", sleep=time_.sleep, clock=time_.clock
    )
    call = _fails_then_done(redis.ConnectionError("Connection closed by server."))

    assert guard.call(call) == "done"
    assert time_.slept == []
    assert not guard.in_outage
    assert [r for r in caplog.records if r.name == LOGGER] == []


def test_an_outage_ends_when_the_call_that_got_through_started(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Failures past the immediate retry are an outage, logged once with its end;
    the length reported leaves out the successful call's own time (a blocking
    wait that ran its course)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    time_ = _Time()
    policy = RetryPolicy(budget=10.0, base=0.1, cap=0.1)
    guard = ConnectionGuard(
        policy, name="127.0.0.1:1", sleep=time_.sleep, clock=time_.clock
    )
    failures = [redis.ConnectionError("refused")] * 3

    def wait() -> str:
        if failures:
            raise failures.pop()
        time_.now += 3.0  # a BLPOP that waited out its timeout
        return "woke"

    assert guard.call(wait) == "woke"
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(time_.slept) == 2  # none before the immediate retry, then back-off
    assert len(messages) == 2
    assert "unreachable" in messages[0]
    outage = float(messages[1].rsplit(" ", 1)[1].rstrip("s"))
    assert outage == pytest.approx(sum(time_.slept), abs=0.01)


def test_two_failed_brief_attempts_start_an_outage_and_probes_are_spaced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A brief call that fails twice (on a new connection too) starts an outage,
    logged once, so callers that can go elsewhere pass the endpoint over; during
    it, ``probe_due`` lets one of them try it at most once per ``cap`` seconds,
    and a success ends the outage."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    time_ = _Time()
    policy = RetryPolicy(budget=10.0, base=0.1, cap=2.0)
    guard = ConnectionGuard(
        policy, name="127.0.0.1:1", sleep=time_.sleep, clock=time_.clock
    )
    assert guard.probe_due()  # no outage: always
    with pytest.raises(BrokerUnavailable):
        guard.briefly(_raises(redis.ConnectionError("refused")))
    down = guard.in_outage
    probes = []
    for _ in range(5):  # over 4 seconds
        probes.append(guard.probe_due())
        time_.now += 1.0
    assert guard.briefly(lambda: "done") == "done"

    assert down
    assert probes == [False, False, True, False, True]
    assert not guard.in_outage
    assert guard.probe_due()
    assert time_.slept == []  # brief: never a back-off
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(messages) == 2
    assert "unreachable" in messages[0]
    assert "reachable again" in messages[1]


def test_a_restart_under_an_idle_worker_is_logged_once(
    private: Callable[..., tuple[RedisServer, RedisBroker]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A restart fails both the blocked wait and, later, the script connection
    that went stale meanwhile: one outage, one "unreachable", one "reachable
    again"."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    server, broker = private()
    broker.reserve("q", owner="w")  # the dedicated connection is in use
    waiter = threading.Thread(
        target=broker.reserve, args=("q",), kwargs={"owner": "w", "wait": 1.0}
    )
    waiter.start()
    time.sleep(0.3)  # blocked now

    server.restart()
    waiter.join(timeout=30)
    broker.reserve("q", owner="w")  # on the stale dedicated connection

    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    # None at all when the wait's immediate retry found the server back already.
    assert len(messages) in {0, 2}
    assert all("unreachable" in m for m in messages[:1])
    assert all("reachable again" in m for m in messages[1:])


def test_a_stale_connection_after_a_restart_is_not_an_outage(
    private: Callable[..., tuple[RedisServer, RedisBroker]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server restarted between two calls: the first one after it fails on
    the old connection and succeeds at once on a new one, and logs nothing."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    server, broker = private()
    broker.push("q", [b"a"])

    server.restart()
    got = broker.reserve("q", owner="w", lease=None)

    assert payloads(got) == []  # no persistence: the restart emptied the queue
    assert [r for r in caplog.records if r.name == LOGGER] == []


def test_a_wait_retried_after_a_failure_waits_only_for_what_is_left(
    single: tuple[RedisBroker, redis.Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocking wait that failed part way (the server restarted under it) is
    retried for the rest of its time, not for all of it again."""
    broker, _, _ = single
    node = broker._nodes[0]
    timeouts: list[float] = []

    def blpop(keys: list[str], timeout: float) -> None:
        timeouts.append(timeout)
        if len(timeouts) == 1:
            time.sleep(0.3)
            raise redis.ConnectionError("Connection closed by server.")

    monkeypatch.setattr(node.client, "blpop", blpop)
    node.block("q", 1.0)

    assert timeouts[0] == 1.0
    assert timeouts[1] <= 0.7


def test_retry_delays_grow_with_jitter_up_to_the_cap() -> None:
    """Back-off doubles from base, keeps at least half of it, and never passes cap."""
    policy = RetryPolicy(budget=10, base=0.1, cap=1.0)

    delays = [policy.delay(attempt) for attempt in range(8)]

    assert 0.05 <= delays[0] <= 0.1
    assert 0.1 <= delays[1] <= 0.2
    assert all(0.5 <= d <= 1.0 for d in delays[4:])


@pytest.mark.parametrize(
    "reply",
    [
        "unknown command `LMPOP`, with args beginning with: `2` `{ns:q}:ready:0` ",
        "Error running script (call to f_0): @user_script:1: @user_script: 1: "
        "Unknown Redis command called from Lua script",
    ],
)
def test_a_server_without_lmpop_gets_an_error_naming_the_version_needed(
    reply: str,
) -> None:
    """Redis 6 rejects LMPOP (directly or in a script): the error says what to run."""
    guard = ConnectionGuard(FAST_FAIL, name="127.0.0.1:1")

    def call() -> None:
        raise redis.ResponseError(reply)

    with pytest.raises(BrokerError) as caught:
        guard.call(call)

    assert "needs Redis 7.0 or newer" in str(caught.value)
    assert reply in str(caught.value)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ClusterError("TTL exhausted."),
        redis.exceptions.TryAgainError(
            "TRYAGAIN Multiple keys request during rehashing"
        ),
        redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
        redis.exceptions.RedisClusterUnreachableError(
            "Redis Cluster cannot be connected. Please provide at least one "
            "reachable node: Error 111 connecting to 127.0.0.1:1. Connection refused."
        ),
        redis.exceptions.SlotNotCoveredError(
            "Node with slot 7365 is not covered by the cluster. Check if "
            '"require_full_coverage=True"'
        ),
        redis.ResponseError(
            "Script attempted to access a non local key in a cluster node script: "
            "51d8a51e, on @user_script:123."
        ),
    ],
    ids=[
        "ttl-exhausted",
        "tryagain",
        "clusterdown",
        "unreachable",
        "uncovered",
        "migrating",
    ],
)
def test_a_cluster_reconfiguring_is_retried_not_raised(error: Exception) -> None:
    """A slot migrating (the cluster client's retries run out with "TTL
    exhausted") or an election is an outage to ride out, not a fatal error."""
    guard = ConnectionGuard(FAST_FAIL, name="cluster")
    call = _fails_then_done(error, error)

    assert guard.call(call) == "done"


def test_a_node_not_in_cluster_mode_is_a_broker_error_at_once() -> None:
    """The cluster client's own failures are not RedisErrors; those that waiting
    cannot fix are a BrokerError, never a raw driver exception."""
    guard = ConnectionGuard(FAST_FAIL, name="cluster")
    calls = []

    def call() -> None:
        calls.append(1)
        raise redis.exceptions.RedisClusterException(
            "Cluster mode is not enabled on this node"
        )

    with pytest.raises(BrokerError, match="Cluster mode is not enabled") as caught:
        guard.call(call)

    assert not isinstance(caught.value, BrokerUnavailable)
    assert calls == [1]


@pytest.mark.slow
def test_a_cluster_down_for_a_moment_is_ridden_out(tmp_path: Path) -> None:
    """Every master of a cluster stopped, then started again within the budget:
    the calls made meanwhile wait and succeed (the cluster client's "cannot be
    connected" is not a RedisError, and escaped the guard raw)."""
    cluster = LocalCluster(tmp_path, appendonly=True)
    cluster.start()
    broker = RedisBroker(
        cluster.client(), namespace="down", retry=RetryPolicy(budget=30.0, cap=0.2)
    )
    try:
        broker.push("jobs", [b"a", b"b"])
        for server in cluster.servers:
            server.stop()
        back = threading.Timer(1.5, lambda: [s.start() for s in cluster.servers])
        back.start()
        try:
            seen = broker.lengths("jobs")
            got = broker.reserve("jobs", owner="w", count=2, lease=30.0)
        finally:
            back.join()
        broker.ack("jobs", got)
    finally:
        broker.close()
        cluster.stop()

    assert seen == QueueLengths(ready=2)
    assert payloads(got) == [b"a", b"b"]


@pytest.mark.parametrize(("settle", "warnings"), [(1.0, 2), (0.0, 4)])
def test_a_cluster_guard_logs_one_outage_while_one_master_stays_down(
    caplog: pytest.LogCaptureFixture, settle: float, warnings: int
) -> None:
    """One guard stands for a whole cluster: while one master is down, calls to
    the others succeed between calls that fail. With ``settle`` (a cluster's
    guard), a success ends the outage only once failures stopped that long: one
    "unreachable" and one "reachable again", not a pair per flip."""
    now = [0.0]

    def later(seconds: float) -> None:
        now[0] += seconds

    guard = ConnectionGuard(
        RetryPolicy(budget=5.0, base=0.01, cap=0.5),
        name="cluster",
        sleep=later,
        clock=lambda: now[0],
        settle=settle,
    )

    def dead_master() -> None:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1.")

    with caplog.at_level(logging.WARNING, logger="sergeant.adapters.redis"):
        for _ in range(2):  # the dead master's queue, then another's, in turn
            with pytest.raises(BrokerUnavailable):
                guard.briefly(dead_master)
            later(0.2)
            assert guard.call(lambda: "ok") == "ok"
            later(0.2)
        later(2.0)
        guard.call(lambda: "ok")  # the master is back: no failure for a while

    said = [r.getMessage() for r in caplog.records]
    assert len(said) == warnings
    assert "unreachable" in said[0]
    assert "reachable again" in said[-1]
    assert not guard.in_outage


def test_a_cluster_url_unreachable_logs_and_raises_no_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cluster client is built under a guard: its outage line and its error
    name the seed node by host and port, never the URL with its password."""
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"

    policy = RetryPolicy(budget=0.3, base=0.01, cap=0.05)
    with (
        caplog.at_level(logging.WARNING, logger="sergeant.adapters.redis"),
        pytest.raises(BrokerUnavailable) as caught,
    ):
        RedisBroker.from_url(url, cluster=True, retry=policy)

    assert "hunter2" not in str(caught.value)
    assert caplog.records
    assert not [r for r in caplog.records if "hunter2" in r.getMessage()]
    assert "127.0.0.1:" in str(caught.value)


def test_other_error_replies_pass_through_unchanged() -> None:
    """Only the missing command gets the version hint; other replies are as sent."""
    guard = ConnectionGuard(FAST_FAIL, name="127.0.0.1:1")
    reply = "WRONGTYPE Operation against a key holding the wrong kind of value"

    def call() -> None:
        raise redis.ResponseError(reply)

    with pytest.raises(BrokerError) as caught:
        guard.call(call)

    assert str(caught.value) == f"redis 127.0.0.1:1: {reply}"


@pytest.mark.parametrize(
    "reply",
    [
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.ResponseError(
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL "
            "or SHUTDOWN NOSCRIPT."
        ),
        redis.ResponseError("NOREPLICAS Not enough good replicas to write."),
        redis.exceptions.OutOfMemoryError(
            "command not allowed when used memory > 'maxmemory'."
        ),
        redis.ResponseError(
            "UNBLOCKED force unblock from blocking operation, instance state "
            "changed (master -> replica?)"
        ),
    ],
    ids=["readonly", "busy", "noreplicas", "oom", "unblocked"],
)
def test_a_server_refusing_for_now_is_retried_not_raised(reply: Exception) -> None:
    """READONLY (a failover demoted the node), BUSY (a slow script) and NOREPLICAS
    refuse a command without running it, until the state passes: retried like an
    outage. Only READONLY drops the endpoint's connections before retrying."""
    reconnects: list[str] = []
    guard = ConnectionGuard(
        FAST_FAIL, name="node", on_readonly=lambda: reconnects.append("dropped")
    )
    call = _fails_then_done(reply, reply)

    assert guard.call(call) == "done"
    readonly = isinstance(reply, redis.exceptions.ReadOnlyError)
    assert reconnects == (["dropped", "dropped"] if readonly else [])


def test_a_refusal_that_outlasts_the_budget_is_broker_unavailable() -> None:
    """A node that stays read-only is an outage: BrokerUnavailable, not a crash."""
    guard = ConnectionGuard(FAST_FAIL, name="node")

    def call() -> None:
        raise redis.exceptions.ReadOnlyError("You can't write against a replica.")

    with pytest.raises(BrokerUnavailable, match="against a replica"):
        guard.call(call)


def test_a_busykey_reply_is_not_mistaken_for_busy() -> None:
    """Only the BUSY code is retried, not a reply whose code merely starts so."""
    guard = ConnectionGuard(FAST_FAIL, name="node")
    calls = []

    def call() -> None:
        calls.append(1)
        raise redis.ResponseError("BUSYKEY Target key name already exists.")

    with pytest.raises(BrokerError, match="BUSYKEY"):
        guard.call(call)
    assert calls == [1]


_SLOW_SCRIPT = """
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  t = redis.call('TIME')
until t[1] * 1000000 + t[2] - start > tonumber(ARGV[1])
return 1
"""


def test_a_push_during_a_slow_script_waits_for_it(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """While another client's script runs past busy-reply-threshold, Redis answers
    BUSY to everything else: the broker retries until the script ends, and the
    push then lands once."""
    server = redis_server_factory()
    admin = server.client()
    admin.config_set("busy-reply-threshold", 50)
    broker = RedisBroker(
        server.client(), namespace="busy", retry=RetryPolicy(budget=10.0, cap=0.1)
    )
    slow = threading.Thread(target=admin.eval, args=(_SLOW_SCRIPT, 0, 1_000_000))
    try:
        slow.start()
        time.sleep(0.3)  # the script is running, past the threshold
        with pytest.raises(redis.ResponseError, match="BUSY"):
            server.client().ping()
        started = time.monotonic()
        broker.push("q", [b"a"])
        waited = time.monotonic() - started
    finally:
        slow.join()
        broker.close()

    assert waited > 0.3  # it did wait for the script
    check = RedisBroker(server.client(), namespace="busy")
    try:
        assert payloads(check.reserve("q", owner="w", count=10)) == [b"a"]
    finally:
        check.close()


def test_a_push_to_a_server_over_its_memory_limit_waits_for_room(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Over ``maxmemory`` (noeviction) Redis refuses a script's or a MULTI block's
    first write with OOM, before anything ran (a script that has written once may
    go on: a reserve pops, then leases, so workers still drain). A push waits
    for room like an outage, and lands once when memory is allowed again."""
    server = redis_server_factory()
    admin = server.client()
    broker = RedisBroker(
        server.client(), namespace="oom", retry=RetryPolicy(budget=10.0, cap=0.1)
    )
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)  # every write is over the limit now
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        server.client().rpush("probe", b"x")
    threading.Timer(0.5, admin.config_set, args=("maxmemory", 0)).start()
    try:
        started = time.monotonic()
        broker.push("q", [b"a"])  # raised BrokerError: OOM
        waited = time.monotonic() - started
        got = payloads(broker.reserve("q", owner="w", count=10))
    finally:
        broker.close()

    assert waited > 0.3  # it did wait for room
    assert got == [b"a"]


@pytest.mark.parametrize("lease", [30.0, None], ids=["leased", "popped"])
def test_workers_drain_a_server_over_its_memory_limit(
    redis_server_factory: Callable[..., RedisServer], lease: float | None
) -> None:
    """Over ``maxmemory`` (noeviction) pushes wait, but reserves, acks and the
    promotion of due delayed tasks go on: they only move tasks or free memory, and
    draining the queue is how memory frees. A batch reserve (SORT ... STORE) was
    refused, and so was an at-most-once pop's maintenance with nothing ready."""
    server = redis_server_factory()
    admin = server.client()
    broker = RedisBroker(server.client(), namespace="oom", retry=FAST_FAIL)
    try:
        broker.push("q", [b"%d" % i for i in range(100)])
        broker.push("q", [b"late"], eta=time.time() + 0.3)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        with pytest.raises(BrokerUnavailable, match="maxmemory"):
            broker.push("q", [b"more"])

        batch = broker.reserve("q", owner="w", count=100, lease=lease)
        broker.ack("q", batch)
        time.sleep(0.4)
        due = broker.reserve("q", owner="w", count=100, lease=lease)
        broker.ack("q", due)
        lengths = broker.lengths("q")
    finally:
        admin.config_set("maxmemory", 0)
        broker.close()

    assert payloads(batch) == [b"%d" % i for i in range(100)]
    assert payloads(due) == [b"late"]
    assert (lengths.ready, lengths.delayed, lengths.in_flight) == (0, 0, 0)


def _over_memory_between_queue_and_exec(server: RedisServer) -> Exception:
    """The real reply of an EXEC whose block was queued under ``maxmemory`` and
    executed over it (the server's limit is left at 1 byte)."""
    admin = server.client()
    conn = server.client().connection_pool.get_connection()
    try:
        admin.config_set("maxmemory-policy", "noeviction")
        conn.send_command("MULTI")
        conn.read_response()
        conn.send_command("RPUSH", "k", "v")
        conn.read_response()  # QUEUED
        admin.config_set("maxmemory", 1)
        conn.send_command("EXEC")
        with pytest.raises(redis.exceptions.ExecAbortError) as caught:
            conn.read_response()
        return caught.value
    finally:
        conn.disconnect()
        admin.close()


def test_a_block_refused_at_exec_is_retried_like_its_cause(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A refusal that begins after a MULTI block's commands were queued comes back
    from EXEC as "EXECABORT ... because of: OOM ...": nothing ran, so it is
    retried like the OOM itself, not raised as a BrokerError."""
    error = _over_memory_between_queue_and_exec(redis_server_factory())
    guard = ConnectionGuard(FAST_FAIL, name="node")
    call = _fails_then_done(error)

    assert "because of: OOM" in str(error)
    assert guard.call(call) == "done"


def test_a_block_refused_at_exec_as_read_only_reconnects_first() -> None:
    """EXECABORT caused by READONLY drops the node's connections like READONLY;
    a block discarded for a queued command's own error is not retried."""
    reconnects: list[str] = []
    guard = ConnectionGuard(
        FAST_FAIL, name="node", on_readonly=lambda: reconnects.append("dropped")
    )
    read_only = redis.exceptions.ExecAbortError(
        "Transaction discarded because of: READONLY You can't write against "
        "a read only replica."
    )
    masterdown = redis.exceptions.ExecAbortError(
        "Transaction discarded because of: MASTERDOWN Link with MASTER is down "
        "and replica-serve-stale-data is set to 'no'."
    )

    assert guard.call(_fails_then_done(read_only)) == "done"
    assert reconnects == ["dropped"]
    assert guard.call(_fails_then_done(masterdown)) == "done"
    with pytest.raises(BrokerError, match="previous errors"):
        guard.call(
            _raises(
                redis.exceptions.ExecAbortError(
                    "Transaction discarded because of previous errors."
                )
            )
        )


def test_a_best_effort_call_refused_as_read_only_retries_on_a_new_connection() -> None:
    """``briefly`` (a wake-up token) drops the node's connections before its one
    retry after READONLY, as a full call does: the old ones may lead to a replica
    for good."""
    reconnects: list[str] = []
    guard = ConnectionGuard(
        FAST_FAIL, name="node", on_readonly=lambda: reconnects.append("dropped")
    )
    call = _fails_then_done(
        redis.exceptions.ReadOnlyError("You can't write against a replica.")
    )

    assert guard.briefly(call) == "done"
    assert reconnects == ["dropped"]


def test_a_wake_up_refused_for_good_is_logged_not_swallowed(
    redis_server_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A push stored on a node other than the queue's home still returns when
    the wake-up is refused for good (here an ACL that denies DEL, which the
    token's script calls first), but says so: every idle worker would otherwise
    sleep out its wait after every push, silently."""
    servers = [redis_server_factory(), redis_server_factory()]
    for server in servers:
        admin = server.client()
        admin.acl_setuser(
            "producer",
            enabled=True,
            passwords=["+secret"],
            commands=["+@all", "-del", "-unlink"],
            keys=["*"],
        )
        admin.close()
    broker = RedisBroker(
        clients=[
            server.client(username="producer", password="secret") for server in servers
        ],
        namespace="acl",
        retry=FAST_FAIL,
    )
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            for _ in range(2):  # pushes go to each node in turn
                broker.push("q", [b"a"])
    finally:
        broker.close()

    messages = [record.getMessage() for record in caplog.records]
    warnings = [message for message in messages if "could not wake" in message]
    assert len(warnings) == 1
    assert "'q'" in warnings[0]


def test_lease_renewal_goes_on_over_the_memory_limit(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Over ``maxmemory`` a worker keeps renewing its leases (a lease lapsing under
    a running task would hand it to a second worker), as it keeps reserving."""
    server = redis_server_factory()
    admin = server.client()
    broker = RedisBroker(server.client(), namespace="oom", retry=FAST_FAIL)
    try:
        broker.push("q", [b"a"])
        held = broker.reserve("q", owner="w1", lease=0.5)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        broker.extend("q", held, lease=30.0)  # raised BrokerUnavailable: OOM
        time.sleep(0.7)
        other = broker.reserve("q", owner="w2", lease=30.0)
    finally:
        admin.config_set("maxmemory", 0)
        broker.close()
        admin.close()

    assert payloads(held) == [b"a"]
    assert other == []


def test_a_dead_letter_stored_is_not_failed_by_recording_the_queue_name(
    single: tuple[RedisBroker, redis.Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is stored, then the queue's name (for queues()) cannot be: the
    call returns, as a push does. Raising would have the caller dead-letter the
    task again: a second record of a popped task."""
    broker, _, _ = single
    broker.push("q", [b"poison"])
    [popped] = broker.reserve("q", owner="w", lease=None)

    def unreachable(queue: str) -> None:
        raise BrokerUnavailable("gone after the record was stored")

    monkeypatch.setattr(broker._nodes[0], "register", unreachable)
    broker.dead_letter("q", popped, "undecodable")

    assert [d.payload for d in broker.dead_letters("q")] == [b"poison"]


def test_a_wake_up_that_cannot_be_left_does_not_fail_a_stored_push(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Over several nodes a push to a node other than the queue's home wakes the
    workers waiting on the home. With the home down, the pushes are stored on the
    node up (the one whose turn was the home's goes there too) and return: a
    failure would make the producer push them again. They are all there once
    the home is back."""
    servers = [redis_server_factory(), redis_server_factory()]
    broker = RedisBroker(
        clients=[server.client(socket_connect_timeout=1) for server in servers],
        namespace="wake",
        retry=FAST_FAIL,
    )
    index = broker._home("q")
    try:
        servers[index].stop()
        for payload in (b"a", b"b"):  # one turn is each node's
            broker.push("q", [payload])
        other = servers[1 - index].client()
        on_the_other = other.llen(broker._nodes[1 - index].keys("q")[Priority.NORMAL])
        other.close()
        servers[index].start()
        got = broker.reserve("q", owner="w", count=10, lease=30.0)
    finally:
        broker.close()

    assert on_the_other == 2
    assert sorted(payloads(got)) == [b"a", b"b"]


def test_one_node_down_does_not_stop_renewals_and_acks_on_the_others(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A worker's batch may span nodes. With one of them down, renewing the batch
    still renews the leases on the live nodes (a second worker took tasks the
    first was still running) and acking it still acks there; the call then raises
    for the node that is down."""
    servers = [redis_server_factory() for _ in range(3)]
    broker = RedisBroker(
        clients=[server.client(socket_connect_timeout=1) for server in servers],
        namespace="split",
        retry=FAST_FAIL,
    )
    for node in range(3):  # pushes go to each node in turn
        broker.push("q", [b"%d-%d" % (node, k) for k in range(3)])
    held = broker.reserve("q", owner="w1", count=9, lease=1.0)
    spread = by_node(held, 3)
    victim = next(iter(spread))  # the node the renewal loop meets first
    live = [server for index, server in enumerate(servers) if index != victim]
    thief = RedisBroker(
        clients=[server.client() for server in live], namespace="split", retry=FAST_FAIL
    )
    try:
        servers[victim].stop()
        with pytest.raises(BrokerUnavailable):
            broker.extend("q", held, lease=30.0)
        time.sleep(1.3)  # past the first lease
        stolen = thief.reserve("q", owner="w2", count=9, lease=30.0)
        with pytest.raises(BrokerUnavailable):
            broker.ack("q", held)
        left = thief.lengths("q")
    finally:
        broker.close()
        thief.close()

    assert len(held) == 9
    assert sorted(spread) == [0, 1, 2]
    assert stolen == []
    assert left == QueueLengths()


def test_a_node_just_gone_down_does_not_hold_up_renewals_on_the_others(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """The first renewal to meet a node that has just gone down (not yet known
    down) gives it the whole retry budget, but only after renewing the live
    nodes: renewing them behind that wait let their leases lapse, shorter than
    the budget, and a second worker took tasks the first was still running."""
    servers, broker = _three_nodes(redis_server_factory, tasks=3, appendonly=False)
    budget = broker._nodes[0].guard.policy.budget
    lease = 1.0
    held = broker.reserve("q", owner="w1", count=9, lease=lease)
    spread = by_node(held, 3)
    victim = next(iter(spread))  # the node the renewal loop meets first
    live = [server for index, server in enumerate(servers) if index != victim]
    thief = RedisBroker(
        clients=[server.client() for server in live], namespace="down", retry=FAST_FAIL
    )
    stolen: list[Delivery] = []

    def steal_after_the_first_lease() -> None:
        time.sleep(lease + 0.5)
        stolen.extend(thief.reserve("q", owner="w2", count=9, lease=30.0))

    try:
        servers[victim].stop()
        theft = threading.Thread(target=steal_after_the_first_lease)
        theft.start()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            broker.extend("q", held, lease=30.0)
        took = time.monotonic() - started
        theft.join()
    finally:
        broker.close()
        thief.close()

    assert sorted(spread) == [0, 1, 2]
    assert took > lease + 0.5  # the thief came while the renewal still waited
    assert took < budget + 1.0
    assert payloads(stolen) == []


def test_a_woken_reserve_over_several_nodes_passes_its_wake_up_on_over_memory(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A woken reserve that leaves more ready leaves a token on the queue's home
    node. Over ``maxmemory`` there, that token is still left (a one-element list),
    so the reserve neither waits out the retry budget holding its tasks nor drops
    the wake-up."""
    servers = [redis_server_factory(), redis_server_factory()]
    broker = RedisBroker(
        clients=[server.client() for server in servers],
        namespace="wake",
        retry=RetryPolicy(budget=10.0, cap=0.1),
    )
    admin = servers[broker._home("q")].client()
    try:
        due = time.time() + 0.5
        broker.push("q", [b"a%d" % i for i in range(5)], eta=due)
        broker.push("q", [b"b%d" % i for i in range(5)], eta=due)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        started = time.monotonic()
        got = broker.reserve("q", owner="w", count=2, lease=30.0, wait=3.0)
        took = time.monotonic() - started
    finally:
        admin.config_set("maxmemory", 0)
        broker.close()
        admin.close()

    assert len(got) == 2
    assert took < 5.0  # it waited out the 10 s budget on the token before


def test_a_node_demoted_to_replica_is_retried_on_new_connections_until_promoted(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A failover in miniature: the broker's node becomes a replica (every write
    answers READONLY), then a primary again. The reserve in between rides it out
    on new connections (the old ones may lead to a replica for good) and leases the
    task; nothing is raised, nothing lost."""
    node = redis_server_factory()
    admin = node.client()
    broker = RedisBroker(
        node.client(), namespace="ro", retry=RetryPolicy(budget=10.0, cap=0.1)
    )
    try:
        broker.push("q", [b"a"])
        assert broker.reserve("q", owner="w", lease=30.0) != []  # warm connection
        broker.push("q", [b"b"])
        # A replica of a primary it cannot reach (nothing listens on port 1)
        # never syncs, so it keeps its data, and refuses every write.
        admin.replicaof("127.0.0.1", 1)
        with pytest.raises(redis.exceptions.ReadOnlyError):
            node.client().rpush("probe", b"x")
        before = admin.info("stats")["total_connections_received"]
        threading.Timer(0.5, admin.replicaof, args=("no", "one")).start()

        got = broker.reserve("q", owner="w", lease=30.0)

        after = admin.info("stats")["total_connections_received"]
    finally:
        broker.close()

    assert payloads(got) == [b"b"]
    assert after > before  # the retry came on a new connection


def _serial(broker: RedisBroker, config: WorkerConfig) -> dict[str, Any]:
    """A worker's parts for these tests: pickle, tasks run in the worker's thread,
    no watchdog."""
    return {
        "broker": broker,
        "codec": PickleCodec(),
        "executor": SerialExecutor(),
        "watchdog": NullWatchdog(),
        "config": config,
    }


class _RunsThenStops(Worker):
    """Records each task's number; stops after ``expected`` tasks."""

    def __init__(self, broker: RedisBroker, *, expected: int, wait: float) -> None:
        super().__init__(
            **_serial(
                broker,
                WorkerConfig(name="jobs", lease=30.0, wait=wait),
            )
        )
        self.expected = expected
        self.ran: list[int] = []

    def work(self, task: Task) -> None:
        self.ran.append(task.kwargs["n"])
        if len(self.ran) == self.expected:
            self.request_stop()


def test_an_idle_worker_rides_out_its_node_being_demoted_and_promoted(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A failover under an idle worker: Redis ends its blocking wait with an
    UNBLOCKED error when the node turns replica. The worker keeps waiting (it did
    not die with a BrokerError) and runs what is pushed once the node is a
    primary again."""
    node = redis_server_factory()
    admin = node.client()
    broker = RedisBroker(
        node.client(), namespace="ro", retry=RetryPolicy(budget=10.0, cap=0.1)
    )
    failures: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as error:  # the test reports it below
            failures.append(error)

    try:
        worker = _RunsThenStops(broker, expected=2, wait=5.0)
        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up and not any(
            client.get("cmd") == "blpop" for client in admin.client_list()
        ):
            time.sleep(0.01)
        admin.replicaof("127.0.0.1", 1)  # unblocks the wait with UNBLOCKED
        time.sleep(0.5)
        admin.replicaof("no", "one")
        Producer(broker=broker, codec=PickleCodec(), queue="jobs").push_tasks(
            [{"n": 0}, {"n": 1}]
        )
        runner.join(timeout=30)
    finally:
        broker.close()
        admin.close()

    assert failures == []
    assert not runner.is_alive()
    assert worker.ran == [0, 1]


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
prefetch = 1 if sys.argv[4:] == ["prefetch"] else 0

class Stuck(Worker):
    def work(self, task):
        open(signal_file, "w").close()  # holding the whole batch now
        time.sleep(3600)

Stuck(
    broker=RedisBroker(redis.Redis(port=port), namespace=namespace),
    codec=PickleCodec(), executor=SerialExecutor(), watchdog=NullWatchdog(),
    config=WorkerConfig(
        name="jobs", tasks_per_transaction=1000, lease=1.0, wait=0.2, prefetch=prefetch
    ),
).run()
"""


class _Ledger(Worker):
    """Records each task's number; stops itself once the queue stays empty."""

    def __init__(
        self, broker: RedisBroker, *, batch: int, lease: float, prefetch: int = 0
    ) -> None:
        super().__init__(
            **_serial(
                broker,
                WorkerConfig(
                    name="jobs",
                    tasks_per_transaction=batch,
                    lease=lease,
                    wait=0.2,
                    starvation=Starvation(time_with_no_tasks=3.0),
                    prefetch=prefetch,
                ),
            )
        )
        self.ran: list[int] = []

    def work(self, task: Task) -> None:
        self.ran.append(task.kwargs["n"])
        time.sleep(0.0005)

    def on_starvation(self, time_with_no_tasks: float) -> None:
        self.request_stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prefetch", "tasks"),
    [
        pytest.param(0, 1000, id="one batch of 1,000"),
        pytest.param(1, 2000, id="running 1,000, 1,000 prefetched"),
    ],
)
def test_a_sigkilled_worker_loses_none_of_the_tasks_it_held(
    single: tuple[RedisBroker, redis.Redis, str],
    redis_server: RedisServer,
    tmp_path: Path,
    prefetch: int,
    tasks: int,
) -> None:
    """SIGKILL a worker holding every task leased (its batch, and the one it
    prefetched): all of them run again elsewhere."""
    broker, _, namespace = single
    Producer(broker=broker, codec=PickleCodec(), queue="jobs").push_tasks(
        [{"n": n} for n in range(tasks)]
    )
    signal_file = tmp_path / "holding"
    args = [str(redis_server.port), namespace, str(signal_file)]
    args += ["prefetch"] if prefetch else []
    child = subprocess.Popen([sys.executable, "-c", _STUCK_WORKER, *args])
    give_up = time.monotonic() + 60
    while not signal_file.exists() and time.monotonic() < give_up:
        time.sleep(0.05)
    while broker.lengths("jobs").in_flight < tasks and time.monotonic() < give_up:
        time.sleep(0.01)  # a prefetch is sent before the first task runs
    held = broker.lengths("jobs")
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)

    rescuer = _Ledger(broker, batch=500, lease=60.0)
    rescuer.run()

    assert held == QueueLengths(in_flight=tasks)
    assert sorted(rescuer.ran) == list(range(tasks))
    assert broker.lengths("jobs") == QueueLengths()


@pytest.mark.slow
@pytest.mark.parametrize("prefetch", [0, 2], ids=["plain", "prefetch=2"])
def test_a_worker_rides_out_a_redis_restart_without_losing_acked_work(
    private: Callable[..., tuple[RedisServer, RedisBroker]], prefetch: int
) -> None:
    """Restart redis-server (appendonly) under a running worker: it resumes, no
    loss. With prefetch, requests in flight on the dedicated connection (their
    acks riding on them) die with it and are resent."""
    server, broker = private(appendonly=True)
    Producer(broker=broker, codec=PickleCodec(), queue="jobs").push_tasks(
        [{"n": n} for n in range(2000)]
    )
    worker = _Ledger(broker, batch=50, lease=30.0, prefetch=prefetch)
    runner = threading.Thread(target=worker.run)
    runner.start()
    while len(worker.ran) < 300 and runner.is_alive():
        time.sleep(0.01)

    server.restart()
    runner.join(timeout=120)

    assert not runner.is_alive()
    assert sorted(set(worker.ran)) == list(range(2000))
    # At most the batches held re-run: the running one, its predecessor's (acks
    # in flight) and those prefetched.
    assert len(worker.ran) - 2000 <= 50 * (2 + prefetch)
    assert broker.lengths("jobs") == QueueLengths()


def test_an_argument_the_client_cannot_encode_is_a_broker_error(
    private: Callable[..., tuple[RedisServer, RedisBroker]],
) -> None:
    """A name holding a lone surrogate fails in the client before anything is sent:
    a BrokerError (the port lets no driver exception escape), not retried."""
    _, broker = private()
    name = os.fsdecode(b"report-\xff")

    with pytest.raises(BrokerError, match="cannot send an argument"):
        broker.push(name, [b"a"])
    with pytest.raises(BrokerError, match="cannot send an argument"):
        broker.lock(name).acquire(timeout=0)


class _LosesItsAckRequest(Worker):
    """Task 0 kills every client connection of the server once the request for
    task 1 has been answered, so the request carrying task 0's ack goes out on a
    dead connection; task 1 then runs for three leases."""

    def __init__(self, broker: RedisBroker, admin: redis.Redis) -> None:
        super().__init__(
            **_serial(
                broker,
                WorkerConfig(
                    name="jobs",
                    tasks_per_transaction=1,
                    lease=1.0,
                    wait=0.2,
                    prefetch=1,
                ),
            )
        )
        self.admin = admin
        self.ran: list[int] = []
        self.killed = threading.Event()

    def work(self, task: Task) -> None:
        self.ran.append(task.kwargs["n"])
        if task.kwargs["n"] == 0:
            time.sleep(0.2)  # the prefetched request's reply arrives
            self.admin.client_kill_filter(_type="normal", skipme=True)
            self.killed.set()
        else:
            time.sleep(3.0)
            self.request_stop()


def test_an_ack_sent_on_a_dead_connection_keeps_its_task_leased_until_resent(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """With prefetch, a finished task's ack rides on the next request. Sent on a
    connection the server had closed, the request fails only when collected, after
    the batch running meanwhile; until then the finished task's lease is renewed,
    so a second worker never takes it, and the resent ack settles it."""
    server = redis_server_factory()
    admin = server.client()
    broker = RedisBroker(server.client(), namespace="acks", retry=TEST_RETRY)
    thief = RedisBroker(server.client(), namespace="acks", retry=TEST_RETRY)
    stolen: list[bytes] = []
    try:
        Producer(broker=broker, codec=PickleCodec(), queue="jobs").push_tasks(
            [{"n": 0}, {"n": 1}]
        )
        worker = _LosesItsAckRequest(broker, admin)
        runner = threading.Thread(target=worker.run, daemon=True)
        runner.start()
        # Both tasks are leased to the worker by then: the thief can take only
        # what a lapsed lease gives back.
        assert worker.killed.wait(timeout=30)
        give_up = time.monotonic() + 30
        while runner.is_alive() and time.monotonic() < give_up:
            got = thief.reserve("jobs", owner="thief", count=10, lease=60.0)
            stolen += [delivery.payload for delivery in got]
            time.sleep(0.05)
        runner.join(timeout=5)
        left = broker.lengths("jobs")
    finally:
        broker.close()
        thief.close()
        admin.close()

    assert not runner.is_alive()
    assert worker.ran == [0, 1]
    assert stolen == []
    assert left == QueueLengths()


def test_a_token_refused_after_the_push_ran_neither_fails_nor_repeats_it(
    redis_server_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A push's RPUSH and wake-up token go out in one write, not in a MULTI
    block, so the token can be refused after the RPUSH ran: here by an ACL that
    denies LTRIM (``OOM`` reached by the RPUSH itself would do the same). The push
    must neither fail nor be sent again (its tasks would be stored twice); the
    token is tried once more by the notify script, and its refusal logged."""
    server = redis_server_factory()
    admin = server.client()
    admin.acl_setuser(
        "producer",
        enabled=True,
        passwords=["+secret"],
        commands=["+@all", "-ltrim"],
        keys=["*"],
    )
    broker = RedisBroker(
        server.client(username="producer", password="secret"),
        namespace="acl",
        retry=FAST_FAIL,
    )
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            broker.push("q", [b"a"])
        lengths = broker.lengths("q")
    finally:
        broker.close()

    assert lengths.ready == 1
    messages = [record.getMessage() for record in caplog.records]
    assert [m for m in messages if "could not wake" in m and "'q'" in m] != []


def _three_nodes(
    factory: Callable[..., RedisServer], *, tasks: int, appendonly: bool
) -> tuple[list[RedisServer], RedisBroker]:
    """Three nodes and a broker over them with a 3 s retry budget; ``tasks``
    tasks pushed to each node (``b"<node>-<k>"``)."""
    servers = [factory(appendonly=appendonly) for _ in range(3)]
    broker = RedisBroker(
        clients=[server.client(socket_connect_timeout=1) for server in servers],
        namespace="down",
        retry=RetryPolicy(budget=3.0, base=0.02, cap=0.1),
    )
    for node in range(3):  # pushes go to each node in turn
        broker.push("q", [b"%d-%d" % (node, k) for k in range(tasks)])
    return servers, broker


def test_a_node_down_costs_reserves_a_brief_try_not_the_retry_budget(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Over several nodes, a node seen down is tried briefly by the next reserves
    and passed over while others are up: waiting out its retry budget would stall
    every reserve that visits it first (about one in three here). A reserve that
    finds nothing elsewhere raises (a node was not asked: not an empty queue), so
    its caller keeps its acks. Back up (append-only), the node is served again."""
    servers, broker = _three_nodes(redis_server_factory, tasks=12, appendonly=True)
    budget = broker._nodes[0].guard.policy.budget
    try:
        servers[1].stop()
        with pytest.raises(BrokerUnavailable):  # the call that finds it down
            broker._nodes[1].run(broker._nodes[1].ack_script, "q", [])
        started = time.monotonic()
        got: list[Delivery] = []
        batch: list[Delivery] = []
        for _ in range(8):  # the 24 tasks of the nodes up
            batch = broker.reserve("q", owner="w", count=3, lease=30.0, ack=batch)
            got += batch
        drained = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            broker.reserve("q", owner="w", count=3, lease=30.0, ack=batch)
        refused = time.monotonic() - started
        broker.ack("q", batch)
        servers[1].start()
        back = broker.reserve("q", owner="w", count=20, lease=30.0)
        broker.ack("q", back)
        left = broker.lengths("q")
    finally:
        broker.close()

    assert sorted(payloads(got)) == sorted(
        b"%d-%d" % (node, k) for node in (0, 2) for k in range(12)
    )
    assert drained < budget / 2  # no reserve waited out the budget
    assert refused < budget / 2
    assert sorted(payloads(back)) == sorted(b"1-%d" % k for k in range(12))
    assert left == QueueLengths()


def test_an_idle_reserve_whose_home_node_dies_waits_only_its_wait(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Over several nodes an idle worker waits on its queue's home node. That
    node killed under the wait, a task pushed meanwhile lands on a node up: the
    reserve returns when its ``wait`` is out (not after the retry budget), and
    the next one finds the task."""
    servers = [redis_server_factory() for _ in range(3)]
    broker = RedisBroker(
        clients=[server.client(socket_connect_timeout=1) for server in servers],
        namespace="idle",
        retry=RetryPolicy(budget=8.0, base=0.02, cap=0.1),
    )
    producer = RedisBroker(
        clients=[server.client(socket_connect_timeout=1) for server in servers],
        namespace="idle",
        retry=RetryPolicy(budget=8.0, base=0.02, cap=0.1),
    )
    home = broker._home("q")
    outcome: dict[str, Any] = {}

    def idle() -> None:
        started = time.monotonic()
        outcome["got"] = broker.reserve("q", owner="w", wait=1.5, lease=30.0)
        outcome["took"] = time.monotonic() - started

    try:
        waiting = threading.Thread(target=idle)
        waiting.start()
        time.sleep(0.3)  # blocked on the home node by now
        servers[home].kill()
        producer.push("q", [b"task"])  # to a node up
        waiting.join(30)
        later = broker.reserve("q", owner="w", wait=1.5, lease=30.0)
        broker.ack("q", later)
    finally:
        broker.close()
        producer.close()

    assert outcome["got"] == []
    assert outcome["took"] < 1.5 + 1.0  # not the 8 s budget
    assert payloads(later) == [b"task"]


def test_a_node_down_costs_renewals_acks_and_releases_a_brief_try(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Renewing, acking and releasing a batch that spans nodes give a node seen
    down a brief try, not the retry budget, while another is up: the worker's
    lease keeper and its acks would otherwise stall for the budget on every
    call. They still reach the nodes up, and still raise for the one down."""
    servers, broker = _three_nodes(redis_server_factory, tasks=3, appendonly=False)
    budget = broker._nodes[0].guard.policy.budget
    try:
        held = broker.reserve("q", owner="w", count=9, lease=30.0)
        victim = next(iter(by_node(held, 3)))
        servers[victim].stop()
        with pytest.raises(BrokerUnavailable):  # the call that finds it down
            broker.extend("q", held, lease=30.0)
        took = {}
        for name, call in (
            ("extend", lambda: broker.extend("q", held, lease=30.0)),
            ("release_owner", lambda: broker.release_owner("q", "nobody")),
            ("ack", lambda: broker.ack("q", held)),
        ):
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                call()
            took[name] = time.monotonic() - started
        lengths = [
            int(servers[i].client().zcard(broker._nodes[i].keys("q")[LEASES]))
            for i in range(3)
            if i != victim
        ]
    finally:
        broker.close()

    assert len(held) == 9
    assert all(seconds < budget / 2 for seconds in took.values()), took
    assert lengths == [0, 0]  # the live nodes took the acks


def test_pushes_go_to_the_nodes_up_while_one_is_down_and_come_back_after(
    redis_server_factory: Callable[..., RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over several nodes, a push whose turn falls on a node that does not answer
    stores its tasks on the next one at once, the first time too: a producer
    waiting out one node's retry budget (or failing) while two others are up
    would make one node's outage everyone's. The outage is logged once. Once
    the node is back, a probe (at most one per ``cap`` seconds) finds it, and
    pushes reach it again."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    servers, broker = _three_nodes(redis_server_factory, tasks=0, appendonly=False)
    budget = broker._nodes[0].guard.policy.budget
    cap = broker._nodes[0].guard.policy.cap
    clients = [server.client() for server in servers]
    key = broker._nodes[0].keys("q")[Priority.NORMAL]
    try:
        servers[1].stop()
        started = time.monotonic()
        for k in range(12):
            broker.push("q", [b"down-%d" % k])
        took = time.monotonic() - started
        spread = [int(clients[i].llen(key)) for i in (0, 2)]
        servers[1].start()
        time.sleep(cap * 2)  # a probe is due
        for k in range(12):
            broker.push("q", [b"up-%d" % k])
        back = [bytes(e)[HEADER_LEN:] for e in clients[1].lrange(key, 0, -1)]
        messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    finally:
        broker.close()
        for client in clients:
            client.close()

    assert took < budget / 2, took
    assert sum(spread) == 12
    assert min(spread) >= 4  # both nodes up took their share and node 1's
    assert back != []
    assert all(payload.startswith(b"up-") for payload in back)
    assert len([m for m in messages if "unreachable" in m]) == 1


def test_a_push_with_every_node_down_raises_after_the_budget(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """With no node to go to, a push is retried for the budget on the last one
    and raises ``BrokerUnavailable``: nothing was stored anywhere."""
    servers = [redis_server_factory() for _ in range(2)]
    broker = RedisBroker(
        clients=[server.client(socket_connect_timeout=1) for server in servers],
        namespace="down",
        retry=FAST_FAIL,
    )
    try:
        for server in servers:
            server.stop()
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            broker.push("q", [b"a"])
        took = time.monotonic() - started
    finally:
        broker.close()

    assert took >= FAST_FAIL.budget / 2


def test_a_reserve_without_acks_passes_over_a_node_found_down_at_once(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A reserve that carries no acks for a node gives it a brief visit while
    another node is up, the first time it fails too: passing it over loses
    nothing, and the tasks of the nodes up are handed out without waiting out
    its budget."""
    servers, broker = _three_nodes(redis_server_factory, tasks=4, appendonly=False)
    budget = broker._nodes[0].guard.policy.budget
    try:
        servers[1].stop()
        started = time.monotonic()
        got = broker.reserve("q", owner="w", count=20, lease=30.0)
        took = time.monotonic() - started
        down = broker._nodes[1].guard.in_outage
        broker.ack("q", got)
    finally:
        broker.close()

    assert took < budget / 2, took
    assert down
    assert sorted(payloads(got)) == sorted(
        b"%d-%d" % (node, k) for node in (0, 2) for k in range(4)
    )


def test_purge_reaches_every_node_up_before_it_raises_for_the_one_down(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Over several nodes, purging (tasks or dead letters) with one node down
    still purges the others, then raises for the one down: stopping at it would
    leave the nodes after it untouched, depending on the order."""
    servers, broker = _three_nodes(redis_server_factory, tasks=4, appendonly=False)
    try:
        held = broker.reserve("q", owner="w", count=12, lease=30.0)
        for delivery in held:
            if delivery.payload.endswith(b"-0"):  # one per node
                broker.dead_letter("q", delivery, "test")
        for _ in range(3):  # one ready task per node
            broker.push("q", [b"ready"])
        servers[0].stop()
        with pytest.raises(BrokerUnavailable):
            broker.purge("q")
        with pytest.raises(BrokerUnavailable):
            broker.purge_dead("q")
        now = repr(time.time())
        left = [
            [int(n) for n in node.run(node.lengths_script, "q", [now])]
            for node in broker._nodes[1:]
        ]
    finally:
        broker.close()

    assert len(held) == 12
    assert left == [[0, 0, 0, 0], [0, 0, 0, 0]]


def _acks_kept_while_node_1_is_down(
    factory: Callable[..., RedisServer],
) -> tuple[list[RedisServer], RedisBroker, list[Delivery], list[Delivery]]:
    """Three append-only nodes; a first reserve takes their 6 tasks, one more is
    pushed to each, node 1 is stopped, and a second reserve, acking the first
    batch, takes the two on the nodes up (keeping its acks for node 1)."""
    servers, broker = _three_nodes(factory, tasks=2, appendonly=True)
    held = broker.reserve("q", owner="w", count=6, lease=30.0)
    for _ in range(3):
        broker.push("q", [b"more"])
    servers[1].stop()
    second = broker.reserve("q", owner="w", count=10, lease=30.0, ack=held)
    return servers, broker, held, second


def test_acks_a_reserve_could_not_deliver_are_sent_once_the_node_is_back(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Over several nodes, a reserve that holds tasks from the nodes up while
    the node of some of its acks is down keeps those acks and sends them with
    the queue's next reserve: the tasks they settle, already done, must not
    run again when their lease lapses. Back up (append-only), the node takes
    them, and nothing is left in flight."""
    servers, broker, held, second = _acks_kept_while_node_1_is_down(
        redis_server_factory
    )
    try:
        kept = dict(broker._late_acks)
        servers[1].start()
        third = broker.reserve("q", owner="w", count=10, lease=30.0, ack=second)
        broker.ack("q", third)
        left = broker.lengths("q")
    finally:
        broker.close()

    assert len(held) == 6
    assert payloads(second) == [b"more", b"more"]
    assert list(kept) == [("q", 1)]
    assert payloads(third) == [b"more"]
    assert broker._late_acks == {}
    assert left == QueueLengths()


def test_kept_acks_go_with_the_next_ack_of_the_queue(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Acks kept while their node was down also go with the queue's next
    ``ack`` (a worker's last call as it stops), not only with a reserve; while
    the node is still down, that ack raises for it and keeps them."""
    servers, broker, _, second = _acks_kept_while_node_1_is_down(redis_server_factory)
    try:
        with pytest.raises(BrokerUnavailable):
            broker.ack("q", second)
        still_kept = list(broker._late_acks)
        servers[1].start()
        broker.ack("q", second)
        left = broker.lengths("q")
    finally:
        broker.close()

    assert payloads(second) == [b"more", b"more"]
    assert still_kept == [("q", 1)]
    assert broker._late_acks == {}
    assert left == QueueLengths(ready=1)
