"""Fixtures of the Redis broker's own tests (the servers come from
``tests/support/redis_backend.py``): a broker on the shared server, and private
servers a test may stop and restart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from sergeant.adapters.redis import RedisBroker

from tests.support.redis_backend import (
    FAST_FAIL,
    TEST_RETRY,
    delete_namespace,
    new_namespace,
)
from tests.support.redis_servers import RedisServer


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
