"""The supervisor's releaser: a helper process that makes a dead child's tasks ready.

When a child exits or is killed, the supervisor releases its leases at once
(``release_owner``) instead of leaving them to lapse. That must happen on the
broker the *children* use, and only a process started like them (same
interpreter, working directory and environment) is sure to build that broker: a
target that reads its settings from the environment (``Supervisor(env=...)``), or
that is importable only from the children's ``cwd``, or only by their ``python``,
would give the supervisor a different broker, or none. So the supervisor never
imports the target; it starts this helper like a child instead, once:

    python -m sergeant.adapters.releaser TARGET --owner OWNER

The helper builds the worker (it never runs it) and speaks JSON lines: first
``{"queue": NAME}`` once the worker is built (or ``{"error": MESSAGE}`` and exit
``SETUP_ERROR``), then one reply per owner name read on stdin, ``{"released": N}``
or ``{"error": MESSAGE}``. End of stdin ends it, so it goes with the supervisor
even when that is killed. Its stderr is the supervisor's, like the children's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from sergeant.errors import BrokerError, SergeantError

from .child import LOG_FORMAT, SETUP_ERROR, _close, build_worker

logger = logging.getLogger("sergeant.supervisor")

#: How long the helper may take to build its worker (imports, connections).
START_TIMEOUT = 120.0
#: How long one release may take (a broker riding out an outage retries meanwhile).
RELEASE_TIMEOUT = 60.0


class Releaser:
    """The supervisor's side: starts the helper and asks it for releases.

    Args:
        target: the children's worker target.
        owner: the name the helper's own worker holds (it never leases).
        python, cwd, env: as the children are started.

    Raises:
        SergeantError: the helper could not build the worker (its one-line
            message), or did not say so within ``START_TIMEOUT``.
    """

    def __init__(
        self,
        target: str,
        *,
        owner: str,
        python: str,
        cwd: str | os.PathLike[str] | None,
        env: Mapping[str, str],
    ) -> None:
        self._command = [
            python, "-m", "sergeant.adapters.releaser", target, "--owner", owner,
        ]  # fmt: skip
        self._cwd = cwd
        self._env = dict(env)
        self._process: subprocess.Popen[bytes] | None = None
        self._pending = b""
        self.queue = self._start()

    def release(self, owner: str) -> int:
        """Make every task leased by ``owner`` ready now; how many there were.

        A helper that died (or hangs) is replaced once.

        Raises:
            BrokerError: the release failed (the tasks come back when their
                leases lapse).
        """
        try:
            reply = self._ask(owner)
        except (OSError, SergeantError) as error:
            logger.warning("the releaser failed (%s); starting a new one", error)
            self.close()
            try:
                self._start()
                reply = self._ask(owner)
            except (OSError, SergeantError) as again:
                self.close()
                raise BrokerError(f"the releaser failed: {again}") from again
        if "error" in reply:
            raise BrokerError(str(reply["error"]))
        return int(reply["released"])

    def close(self) -> None:
        """End the helper (end of its stdin; killed if it does not go)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):  # a helper gone already
                process.stdin.close()
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    # -- the helper process ---------------------------------------------------------

    def _start(self) -> str:
        self._pending = b""
        self._process = subprocess.Popen(
            self._command,
            cwd=self._cwd,
            env=self._env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            hello = self._read_reply(START_TIMEOUT)
        except SergeantError:
            self.close()
            raise
        if "error" in hello:
            self.close()
            raise SergeantError(str(hello["error"]))
        return str(hello["queue"])

    def _ask(self, owner: str) -> dict[str, Any]:
        process = self._process
        if process is None or process.stdin is None:
            raise SergeantError("the releaser is not running")
        process.stdin.write(owner.encode() + b"\n")
        process.stdin.flush()
        return self._read_reply(RELEASE_TIMEOUT)

    def _read_reply(self, timeout: float) -> dict[str, Any]:
        """The helper's next JSON line, waiting at most ``timeout`` seconds."""
        process = self._process
        if process is None or process.stdout is None:
            raise SergeantError("the releaser is not running")
        fd = process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SergeantError(f"the releaser did not answer in {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                code = process.wait()
                raise SergeantError(f"the releaser exited (code {code})")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        return reply


# -- in the helper ----------------------------------------------------------------


def _say(out: IO[str], **reply: object) -> None:
    out.write(json.dumps(reply) + "\n")
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Build the worker, then release each owner named on stdin until its end."""
    parser = argparse.ArgumentParser(
        prog="python -m sergeant.adapters.releaser",
        description="Release the leases of dead workers (started by the supervisor).",
    )
    parser.add_argument("target", help="package.module:attr returning a Worker")
    parser.add_argument("--owner", required=True, help="the helper's own owner name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    # A Ctrl-C on the terminal reaches the whole process group: the supervisor
    # still needs this helper while it stops its children (end of stdin ends it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Replies go to the real stdout; anything the target prints goes to stderr.
    out = sys.stdout
    sys.stdout = sys.stderr
    try:
        worker = build_worker(args.target, owner=args.owner)
    except SergeantError as error:
        _say(out, error=" ".join(str(error).splitlines()))
        return SETUP_ERROR
    queue = worker.config.name
    _say(out, queue=queue)
    try:
        for line in sys.stdin:
            owner = line.rstrip("\n")
            try:
                _say(out, released=worker.broker.release_owner(queue, owner))
            except BrokerError as error:
                _say(out, error=" ".join(str(error).splitlines()))
    finally:
        _close(worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
