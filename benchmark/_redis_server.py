"""A private ``redis-server``: free loopback port, its own directory.

The benchmarks (and the tests, through ``tests/support/redis_servers.py``) start
their own servers, never the one on 6379, so they run a known configuration and
can restart or kill it without harming anyone. Bound to 127.0.0.1 only, no RDB
snapshots, and no append-only file unless asked.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

_T = TypeVar("_T")

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` child process.

    Args:
        directory: its working directory (append-only files and the log go there).
        appendonly: keep an append-only file fsynced on every write
            (``appendfsync always``), so a write Redis acknowledged survives
            even a SIGKILL of the server.
        extra: more ``redis-server`` command-line options (a cluster node's).
    """

    def __init__(
        self,
        directory: Path | None = None,
        *,
        appendonly: bool = False,
        extra: Sequence[str] = (),
    ) -> None:
        self.program = require("redis-server")
        self._folder = None
        if directory is None:  # a throwaway server: its folder goes with it
            self._folder = tempfile.TemporaryDirectory(prefix="sergeant-bench-")
            directory = Path(self._folder.name)
        self.directory = directory
        self.appendonly = appendonly
        self.extra = list(extra)
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def started(cls) -> RedisServer:
        """A throwaway server (temporary folder, no persistence), already running
        and stopped at exit at the latest."""
        server = cls()
        server.start()
        atexit.register(server.stop)
        return server

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL."""
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        """Start the process and wait until it answers PING (data loaded)."""
        argv = [
            self.program,
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.directory),
            "--logfile", "redis.log",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            *self.extra,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        probe = self.client(socket_timeout=1.0, socket_connect_timeout=1.0)
        give_up = time.monotonic() + 60
        try:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.log_tail()}")
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    pass  # not listening yet, or still loading its data
                if time.monotonic() > give_up:
                    raise RuntimeError(f"redis-server not ready: {self.log_tail()}")
                time.sleep(0.02)
        finally:
            probe.close()

    def kill(self) -> None:
        """SIGKILL the server: no shutdown, no final flush (a crash)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=30)

    def stop(self) -> None:
        """Stop the server gracefully (SIGTERM), or kill it after 30 s; idempotent.

        A throwaway server's folder is removed too.
        """
        self._terminate()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def restart(self) -> None:
        """Stop gracefully and start again on the same port and directory."""
        self._terminate()
        self.start()

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)

    def cli(self, *args: str) -> str:
        """Run ``redis-cli`` against the server; return its output."""
        argv = [require("redis-cli"), "-h", HOST, "-p", str(self.port), *args]
        return subprocess.run(
            argv, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def flush(self) -> None:
        """Drop every key, so each measurement starts from an empty server."""
        self.cli("FLUSHALL")

    def client(self, **options: object) -> redis.Redis:
        """A new bytes client of this server."""
        return redis.Redis(host=HOST, port=self.port, **options)  # type: ignore[arg-type]

    def log_tail(self, lines: int = 20) -> str:
        """The end of the server's log, for error messages."""
        log = self.directory / "redis.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


class LocalCluster:
    """A Redis Cluster of ``size`` masters (no replicas), made with redis-cli.

    Each node is a ``server_class`` in ``directory / node<i>`` (a throwaway
    folder of its own when ``directory`` is None); ``appendonly`` as for one.
    """

    server_class: type[RedisServer] = RedisServer

    def __init__(
        self, directory: Path | None = None, size: int = 3, *, appendonly: bool = False
    ) -> None:
        self.servers = [
            self.server_class(
                None if directory is None else directory / f"node{i}",
                appendonly=appendonly,
                extra=self._options(),
            )
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
                        raise RuntimeError("the cluster never reached state ok")
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


def server_cpu_seconds(client: redis.Redis) -> float:
    """The CPU time the server behind ``client`` has used, user + system (INFO cpu).

    Read before and after a run of calls: the difference is what they cost the
    server, request parsing and reply writing included.
    """
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class MissingProgram(RuntimeError):
    """A program the benchmark or the tests run is not installed."""


def run_cli(main: Callable[[], _T]) -> _T:
    """``main()``, with a missing program reported in one line, not a traceback."""
    try:
        return main()
    except MissingProgram as error:
        raise SystemExit(f"error: {error}") from None


def require(program: str) -> str:
    """The path of ``program``; a MissingProgram error saying how to install it.

    An error, not a skip: the benchmark and the Redis tests both need real servers.
    """
    path = shutil.which(program)
    if path is None:
        raise MissingProgram(
            f"{program} not found on PATH: the benchmark and the redis tests need "
            "real servers (apt-get install redis-server redis-tools)"
        )
    return path


def redis_version() -> str:
    """The installed redis-server's version string."""
    out = subprocess.run(
        [require("redis-server"), "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()
