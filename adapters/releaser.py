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

The helper builds the worker (it never runs it) and speaks ASCII JSON lines:
first ``{"id": 0, "queue": NAME}`` once the worker is built (or ``{"id": 0,
"error": MESSAGE}`` and exit ``SETUP_ERROR``), then one answer per request
``{"id": N, "owner": OWNER}`` read on stdin, ``{"id": N, "released": COUNT}`` or
``{"id": N, "error": MESSAGE}``. Answers go to a private copy of its stdout; fd 1
itself goes to stderr, so nothing the target prints can be taken for one. End of
stdin ends it, so it goes with the supervisor even when that is killed. Its
stderr is the supervisor's, like the children's.
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
from typing import Any

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
        self._asked = 0
        self.queue = self._start()

    def release(self, owner: str) -> int:
        """Make every task leased by ``owner`` ready now; how many there were.

        A helper that died is replaced once. One that is only slow is kept: its
        late answer is told apart by the request's number and skipped.

        Raises:
            BrokerError: the release failed or took over ``RELEASE_TIMEOUT``
                (the tasks come back when their leases lapse).
        """
        try:
            reply = self._ask(owner)
        except _Gone as error:
            logger.warning("the releaser failed (%s); starting a new one", error)
            self.close()
            try:
                self._start()
                reply = self._ask(owner)
            except SergeantError as again:
                self.close()
                raise BrokerError(f"the releaser failed: {again}") from again
        except SergeantError as error:  # no answer in time: the helper is kept
            raise BrokerError(str(error)) from error
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
        self._asked = 0
        self._process = subprocess.Popen(
            self._command,
            cwd=self._cwd,
            env=self._env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            hello = self._read_reply(0, START_TIMEOUT)
            if "error" in hello:
                raise SergeantError(str(hello["error"]))
            return str(hello["queue"])
        except BaseException:
            self.close()
            raise

    def _ask(self, owner: str) -> dict[str, Any]:
        process = self._process
        if process is None or process.stdin is None:
            raise _Gone("the releaser is not running")
        self._asked += 1
        try:
            process.stdin.write(_line(id=self._asked, owner=owner))
            process.stdin.flush()
        except OSError as error:
            raise _Gone(f"cannot write to the releaser: {error}") from error
        return self._read_reply(self._asked, RELEASE_TIMEOUT)

    def _read_reply(self, number: int, timeout: float) -> dict[str, Any]:
        """The helper's answer to request ``number`` (0: its greeting), waiting at
        most ``timeout`` seconds; answers to earlier requests, given up on, are
        skipped.

        Raises:
            _Gone: the helper exited, or wrote something that is not an answer.
            SergeantError: no answer in time.
        """
        process = self._process
        if process is None or process.stdout is None:
            raise _Gone("the releaser is not running")
        fd = process.stdout.fileno()
        # poll, not select: an embedding program may hold fds past FD_SETSIZE.
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" not in self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SergeantError(
                        f"the releaser did not answer in {timeout:.0f} s"
                    )
                if not poller.poll(left * 1000):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    code = process.wait()
                    raise _Gone(f"the releaser exited (code {code})")
                self._pending += chunk
            line, _, self._pending = self._pending.partition(b"\n")
            try:
                reply = json.loads(line)
                answers = int(reply.pop("id"))
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                raise _Gone(f"the releaser said {line[:200]!r}") from error
            if answers == number:
                return dict(reply)


class _Gone(SergeantError):
    """The helper cannot be talked to any more: start a new one."""


def _line(**message: object) -> bytes:
    """One JSON line: ASCII only, so no locale or encoding setting can garble it."""
    return json.dumps(message, ensure_ascii=True).encode("ascii") + b"\n"


# -- in the helper ----------------------------------------------------------------


def _say(out: int, **reply: object) -> None:
    data = _line(**reply)
    while data:
        data = data[os.write(out, data) :]


def main(argv: Sequence[str] | None = None) -> int:
    """Build the worker, then release each owner asked for on stdin until its end."""
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
    # Answers go to a private copy of the real stdout; fd 1 itself (print, a
    # subprocess the target starts) is sent to stderr, so nothing else can ever
    # be read as an answer.
    sys.stdout.flush()
    out = os.dup(1)
    os.dup2(2, 1)
    try:
        worker = build_worker(args.target, owner=args.owner)
    except SergeantError as error:
        _say(out, id=0, error=" ".join(str(error).splitlines()))
        return SETUP_ERROR
    queue = worker.config.name
    _say(out, id=0, queue=queue)
    try:
        for line in sys.stdin.buffer:
            request = json.loads(line)
            try:
                released = worker.broker.release_owner(queue, request["owner"])
            except BrokerError as error:
                _say(out, id=request["id"], error=" ".join(str(error).splitlines()))
            else:
                _say(out, id=request["id"], released=released)
    finally:
        _close(worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
