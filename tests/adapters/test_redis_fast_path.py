"""The Redis broker's hot path: whole-batch acks and the dedicated connection.

Real ``redis-server`` processes, started by the fixtures in
``tests/support/redis_backend.py``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import redis
from sergeant.adapters.redis import RedisBroker

from sergeant.protocols import QueueLengths
from tests.support.redis_backend import TEST_RETRY, delete_namespace, new_namespace
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.redis


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


def _lease_keys(raw: redis.Redis, namespace: str) -> list[bytes]:
    return sorted(raw.scan_iter(match=f"{{{namespace}:q}}:leases*"))


def test_a_whole_batch_ack_leaves_no_lease_behind(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Acking every task of a batch, on its own or with the next reserve, drops it."""
    broker, raw, namespace = single
    broker.push("q", [b"%d" % i for i in range(20)])
    first = broker.reserve("q", owner="w", count=10)

    second = broker.reserve("q", owner="w", count=10, ack=first)
    broker.ack("q", second)

    assert len(first) == len(second) == 10
    assert broker.lengths("q") == QueueLengths()
    assert _lease_keys(raw, namespace) == []


def test_acks_mixing_a_whole_batch_and_part_of_another_settle_only_those(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """One ack may cover a whole batch, part of another, in any order."""
    broker, _, _ = single
    broker.push("q", [b"%d" % i for i in range(8)])
    a = broker.reserve("q", owner="w", count=4)
    b = broker.reserve("q", owner="w", count=4)

    broker.ack("q", [b[1], *reversed(a), b[3]])
    broker.release("q", [b[0], b[2]])

    back = broker.reserve("q", owner="w", count=8)
    assert [d.payload for d in back] == [b"4", b"6"]


def test_a_connection_killed_by_the_server_is_replaced(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """A dedicated connection the server dropped is replaced; nothing is lost."""
    broker, raw, _ = single
    broker.push("q", [b"a", b"b"])
    first = broker.reserve("q", owner="w")

    raw.client_kill_filter(_type="normal", skipme=True)
    second = broker.reserve("q", owner="w", ack=first)

    assert [d.payload for d in first + second] == [b"a", b"b"]
    assert broker.lengths("q") == QueueLengths(in_flight=1)


def test_threads_sharing_a_broker_get_their_own_replies(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Calls from several threads at once never read each other's replies."""
    broker, _, _ = single
    broker.push("q", [b"x"] * 400)
    counts: list[int] = []

    def drain() -> None:
        got = broker.reserve("q", owner="w", count=2)
        while got:
            broker.extend("q", got, lease=60)
            counts.append(len(got))
            got = broker.reserve("q", owner="w", count=2, ack=got)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(counts) == 400
    assert broker.lengths("q") == QueueLengths()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_use_the_parents_connection(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Parent and forked child pushing at once each get their own replies."""
    broker, _, _ = single
    broker.push("q", [b"warm-up"])  # the parent's dedicated connection is open

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            for _ in range(300):
                broker.push("q", [b"child"])
        except BaseException:
            code = 1
        os._exit(code)
    for _ in range(300):
        broker.push("q", [b"parent"])
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert broker.lengths("q") == QueueLengths(ready=601)
