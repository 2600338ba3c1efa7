"""Real ``redis-server`` processes for tests, on free loopback ports.

One launcher serves the tests and the benchmarks (``benchmark/_redis_server.py``):
each server runs in the foreground as a child of the test process, bound to
127.0.0.1 only, with its data directory under a temporary folder, no RDB snapshots
and (unless asked) no append-only file. ``RedisServer.restart()`` stops and starts
the same server on the same port and directory, for connection-fault tests. This
module adds the tests' client defaults and the 3-master cluster. A missing
``redis-server`` is an error, never a skip.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from benchmark._redis_server import HOST, free_port, require
from benchmark._redis_server import LocalCluster as BenchmarkCluster
from benchmark._redis_server import RedisServer as BenchmarkServer

__all__ = ["HOST", "LocalCluster", "RedisServer", "client", "free_port", "require"]


def client(port: int, **options: object) -> redis.Redis:
    """A bytes client without redis-py's own retries (the broker's guard retries)."""
    settings: dict[str, object] = {"socket_timeout": 10, "retry": Retry(NoBackoff(), 0)}
    settings.update(options)
    return redis.Redis(host=HOST, port=port, **settings)  # type: ignore[arg-type]


class RedisServer(BenchmarkServer):
    """One ``redis-server`` child process in ``directory`` (the benchmarks' launcher),
    whose ``client()`` has the broker tests' defaults (see ``client``).
    """

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        extra: Sequence[str] = (),
    ) -> None:
        super().__init__(directory, appendonly=appendonly, extra=extra)

    def client(self, **options: object) -> redis.Redis:
        """A new client of this server (see ``client``)."""
        return client(self.port, **options)


class LocalCluster(BenchmarkCluster):
    """A Redis Cluster of ``size`` masters (no replicas) in ``directory``, whose
    nodes' ``client()`` has the broker tests' defaults."""

    server_class = RedisServer

    def __init__(
        self, directory: Path, size: int = 3, *, appendonly: bool = False
    ) -> None:
        super().__init__(directory, size, appendonly=appendonly)
