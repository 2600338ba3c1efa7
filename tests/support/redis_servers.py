"""Real ``redis-server`` processes for tests, on free loopback ports.

Each server runs in the foreground as a child of the test process, bound to
127.0.0.1 only, with its data directory under a temporary folder, no RDB snapshots
and (unless asked) no append-only file. ``RedisServer.restart()`` stops and starts
the same server on the same port and directory, for connection-fault tests.
A missing ``redis-server`` is an error, never a skip.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

HOST = "127.0.0.1"


def require(program: str) -> str:
    """The path of ``program``; raises (the test errors, never skips) when missing."""
    path = shutil.which(program)
    if path is None:
        raise RuntimeError(
            f"{program} not found on PATH: the redis tests need real servers "
            "(apt-get install redis-server redis-tools)"
        )
    return path


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def client(port: int, **options: object) -> redis.Redis:
    """A bytes client without redis-py's own retries (the broker's guard retries)."""
    settings: dict[str, object] = {"socket_timeout": 10, "retry": Retry(NoBackoff(), 0)}
    settings.update(options)
    return redis.Redis(host=HOST, port=port, **settings)  # type: ignore[arg-type]


class RedisServer:
    """One ``redis-server`` child process.

    Args:
        directory: its working directory (append-only files and the log go there).
        appendonly: keep an fsync-always append-only file, so a restart keeps data.
        extra: more ``redis-server`` command-line options.
    """

    def __init__(
        self,
        directory: Path,
        *,
        appendonly: bool = False,
        extra: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.extra = list(extra)
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL."""
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process and wait until it answers PING."""
        argv = [
            require("redis-server"),
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.directory),
            "--logfile", "redis.log",
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            *self.extra,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> None:
        probe = client(self.port, socket_timeout=1.0, socket_connect_timeout=1.0)
        give_up = time.monotonic() + timeout
        try:
            while True:
                if not self.running:
                    raise RuntimeError(f"redis-server exited: {self.log_tail()}")
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                except redis.ResponseError as error:  # still loading its data
                    if "LOADING" not in str(error):
                        raise
                if time.monotonic() > give_up:
                    raise RuntimeError(f"redis-server not ready: {self.log_tail()}")
                time.sleep(0.02)
        finally:
            probe.close()

    def stop(self) -> None:
        """Stop the process gracefully (SIGTERM, then SIGKILL after 10 s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again on the same port and directory."""
        self.stop()
        self.start()

    def client(self, **options: object) -> redis.Redis:
        """A new client of this server (see ``client``)."""
        return client(self.port, **options)

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for error messages."""
        log = self.directory / "redis.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


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
