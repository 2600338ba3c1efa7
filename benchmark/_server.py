"""A throw-away ``redis-server`` for the benchmark: free loopback port, no disk.

Started with ``--save ""`` and ``--appendonly no`` (nothing is written to disk, so
the numbers measure the queue, not the disk) in a temporary folder, and killed at
exit even when the run fails half-way.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _require(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise SystemExit(
            f"{program} not found: install redis-server and redis-tools "
            "(apt-get install redis-server redis-tools)"
        )
    return path


class RedisServer:
    """One ``redis-server`` child process on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._folder = tempfile.TemporaryDirectory(prefix="sergeant-bench-")
        argv = [
            _require("redis-server"),
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", self._folder.name,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "redis.log",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        atexit.register(self.stop)
        self._wait_ready()

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL."""
        return f"redis://{HOST}:{self.port}/0"

    def cli(self, *args: str) -> str:
        """Run ``redis-cli`` against the server; return its output."""
        argv = [_require("redis-cli"), "-h", HOST, "-p", str(self.port), *args]
        return subprocess.run(
            argv, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def flush(self) -> None:
        """Drop every key, so each measurement starts from an empty server."""
        self.cli("FLUSHALL")

    def _wait_ready(self) -> None:
        give_up = time.monotonic() + 20
        while True:
            if self._process.poll() is not None:
                raise SystemExit("redis-server exited at start")
            try:
                if self.cli("PING").strip() == "PONG":
                    return
            except subprocess.CalledProcessError:
                pass
            if time.monotonic() > give_up:
                raise SystemExit("redis-server did not answer PING in 20 s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill the server (idempotent) and remove its folder."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._folder.cleanup()


def redis_version() -> str:
    """The installed redis-server's version string."""
    out = subprocess.run(
        [_require("redis-server"), "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()
