"""Fixtures for the redis backend: real servers per session, a fresh namespace per test.

Session-scoped: one server (``redis_server``), three independent servers
(``redis_node_servers``) and a 3-master Redis Cluster (``redis_cluster``), all
started on free loopback ports and stopped when the session ends. Per test:
``redis_broker``, ``redis_nodes_broker`` and ``redis_cluster_broker`` yield a broker
on a namespace of its own and delete that namespace's keys afterwards.
``redis_server_factory`` starts private servers a test may stop and restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sergeant.adapters.redis import RedisBroker, RetryPolicy

from sergeant.protocols import Delivery
from tests.support.redis_servers import LocalCluster, RedisServer

# Short enough that a test of a dead server fails fast, long enough for a busy CI.
TEST_RETRY = RetryPolicy(budget=1.0, base=0.02, cap=0.2)
# For servers a test stops on purpose: give up on them quickly.
FAST_FAIL = RetryPolicy(budget=0.5, base=0.02, cap=0.1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session."""
    server = RedisServer(tmp_path_factory.mktemp("redis-single"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_node_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[list[RedisServer]]:
    """Three independent redis-servers for the whole session."""
    root = tmp_path_factory.mktemp("redis-nodes")
    servers = [RedisServer(root / f"node{i}") for i in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-master Redis Cluster for the whole session."""
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_server_factory(
    tmp_path: Path,
) -> Iterator[Callable[..., RedisServer]]:
    """Starts private servers (``factory(appendonly=...)``), stopped after the test."""
    started: list[RedisServer] = []

    def start(*, appendonly: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"server{len(started)}", appendonly=appendonly)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


def new_namespace() -> str:
    """A namespace no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}"


def delete_namespace(servers: list[RedisServer], namespace: str) -> None:
    """Delete every key of ``namespace`` (queue keys, the queue set, locks, keys)."""
    for server in servers:
        client = server.client()
        try:
            for pattern in (f"{{{namespace}:*", f"{{{namespace}}}:*", f"{namespace}:*"):
                for key in client.scan_iter(match=pattern, count=1000):
                    client.delete(key)
        finally:
            client.close()


def _broker_on(
    servers: list[RedisServer], build: Callable[[str], Any]
) -> Iterator[Any]:
    namespace = new_namespace()
    broker = build(namespace)
    yield broker
    broker.close()
    delete_namespace(servers, namespace)


@pytest.fixture
def redis_broker(redis_server: RedisServer) -> Iterator[RedisBroker]:
    """A RedisBroker on the session's single server, in a fresh namespace."""
    yield from _broker_on(
        [redis_server],
        lambda ns: RedisBroker(redis_server.client(), namespace=ns, retry=TEST_RETRY),
    )


@pytest.fixture
def redis_nodes_broker(
    redis_node_servers: list[RedisServer],
) -> Iterator[RedisBroker]:
    """A RedisBroker over the session's three independent servers."""
    yield from _broker_on(
        redis_node_servers,
        lambda ns: RedisBroker(
            clients=[s.client() for s in redis_node_servers],
            namespace=ns,
            retry=TEST_RETRY,
        ),
    )


@pytest.fixture
def redis_cluster_broker(redis_cluster: LocalCluster) -> Iterator[RedisBroker]:
    """A RedisBroker on the session's Redis Cluster, in a fresh namespace."""
    yield from _broker_on(
        redis_cluster.servers,
        lambda ns: RedisBroker(redis_cluster.client(), namespace=ns, retry=TEST_RETRY),
    )


def payloads(deliveries: Sequence[Delivery]) -> list[bytes]:
    """The payloads of ``deliveries``, in order: what most assertions compare."""
    return [d.payload for d in deliveries]
