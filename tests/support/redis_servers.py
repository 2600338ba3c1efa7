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

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from benchmark._redis_server import HOST, free_port, require
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


class LocalCluster:
    """A Redis Cluster of ``size`` masters (no replicas), made with redis-cli."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        self.servers = [
            RedisServer(directory / f"node{i}", extra=self._options())
            for i in range(size)
        ]

    @staticmethod
    def _options() -> list[str]:
        # The bus port is set explicitly: the default (port + 10000) may be taken.
        return [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(free_port()),
            "--cluster-node-timeout", "5000",
        ]  # fmt: skip

    def start(self) -> None:
        """Start every node, assign the slots and wait for ``cluster_state:ok``."""
        for server in self.servers:
            server.start()
        addresses = [f"{HOST}:{s.port}" for s in self.servers]
        create = [require("redis-cli"), "--cluster", "create", *addresses]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        subprocess.run(create, check=True, capture_output=True, timeout=120)
        give_up = time.monotonic() + 60
        for server in self.servers:
            probe = server.client()
            try:
                while probe.cluster("INFO")["cluster_state"] != "ok":
                    if time.monotonic() > give_up:
                        raise RuntimeError("the test cluster never reached state ok")
                    time.sleep(0.05)
            finally:
                probe.close()

    def stop(self) -> None:
        """Stop every node."""
        for server in self.servers:
            server.stop()

    def client(self) -> RedisCluster:
        """A cluster client seeded with the first node, without its own retries."""
        return RedisCluster(
            host=HOST,
            port=self.servers[0].port,
            socket_timeout=10,
            retry=Retry(NoBackoff(), 0),
        )
