"""What every library driver shares: the workload, the operations, the result line.

A driver is a script run by the Python of one library's venv (``lib_<name>.py``);
it imports only the standard library, this module and its own library, so it runs
in any of the venvs. It performs one operation and prints one JSON line,
``{"result": {...}}``, on stdout; anything else it prints is ignored. A failure
is a non-zero exit with the reason on stderr.

Operations (``--op``):

- ``push_single`` / ``push_bulk``: push ``--tasks`` tasks one per call, or in
  calls of ``--chunk`` tasks; the result counts the tasks found in the queue after.
- ``drain``: fill the queue (untimed, fastest way), then consume ``--tasks`` tasks
  with one worker in this process, taking ``--batch`` tasks per fetch where the
  library can. Timed from the start of the first task to the end of the last.
- ``latency``: start a worker process (``--op serve``), wait until it has run a
  warm-up task, sample its CPU time while it idles on the empty queue, then push
  ``--tasks`` tasks one by one at ``--rate`` per second; the worker measures each
  task's push-to-start delay.
- ``serve``: the worker side of ``latency``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

# The small kwargs payload every library pushes (the "small kwargs").
KWARGS: dict[str, Any] = {"url": "https://example.com/x", "n": 1}
WARM = "warm"  # kwargs key marking the latency run's warm-up task
IDLE_SECONDS = 2.0  # how long the idle worker's CPU time is sampled

TALLY: Tally | None = None  # the running worker's tally (tasks reach it by name)


class Library(Protocol):
    """What a driver implements for its library."""

    bulk: bool  # has a documented bulk push
    batch: bool  # can fetch several tasks per round trip

    def push_single(self, n: int) -> None: ...
    def push_bulk(self, n: int, chunk: int) -> None: ...
    def fill(self, n: int) -> None: ...
    def queued(self) -> int: ...
    def consume(self, tally: Tally, batch: int) -> None: ...


class Tally:
    """Counts the tasks a worker runs; task functions call ``tick(kwargs)``.

    Args:
        expected: tasks to run (the warm-up task is not counted).
        ready: called once when the warm-up task runs.
        exit_when_done: print the result and end the process at the last task
            (for libraries whose worker loop cannot be told to stop after N).
    """

    def __init__(
        self,
        expected: int,
        *,
        ready: Callable[[], None] | None = None,
        exit_when_done: bool = True,
    ) -> None:
        self.expected = expected
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[float] = []
        self._ready = ready
        self.warm_up = ready is not None  # one more task than expected will run
        self.exit_when_done = exit_when_done

    def tick(self, kwargs: dict[str, Any]) -> None:
        """Record one task starting (a no-op task ends as it starts)."""
        now = time.time()
        if kwargs.get(WARM):
            if self._ready is not None:
                self._ready()
            return
        sent = kwargs.get("t")
        if sent is not None:
            self.latencies.append(now - sent)
        if self.count == 0:
            self.first = now
        self.count += 1
        if self.count == self.expected:
            self.last = time.time()
            if self.exit_when_done:
                self.finish()

    def result(self, end: float | None = None) -> dict[str, Any]:
        """Count, duration (first start to ``end`` or last end), rate, latencies."""
        seconds = max((end or self.last) - self.first, 1e-9)
        out: dict[str, Any] = {
            "done": self.count,
            "seconds": seconds,
            "rate": self.count / seconds,
        }
        if self.latencies:
            ordered = sorted(self.latencies)
            out["p50_ms"] = 1000 * percentile(ordered, 50)
            out["p99_ms"] = 1000 * percentile(ordered, 99)
        return out

    def finish(self) -> None:
        """Print the result and end the process at once (workers hold threads)."""
        emit(self.result())
        os._exit(0)


def percentile(ordered: list[float], pct: float) -> float:
    """The ``pct`` percentile of sorted values (nearest rank)."""
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def emit(result: dict[str, Any]) -> None:
    """Print the one result line the parent reads.

    Written to file descriptor 1 directly: some workers (Celery) replace
    ``sys.stdout`` with a logger.
    """
    sys.stdout.flush()
    os.write(1, (json.dumps({"result": result}) + "\n").encode())


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of process ``pid`` and its threads, in clock ticks
    (``SC_CLK_TCK`` per second; Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The options every driver takes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="broker URL(s), comma-separated")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--op", required=True)
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--delivery", default="at_least_once")
    parser.add_argument("--workers", type=int, default=0, help="0: this process")
    parser.add_argument("--start-at", type=float, default=0.0, help="epoch seconds")
    return parser.parse_args(argv)


def _timed_push(lib: Library, args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    if args.op == "push_single":
        lib.push_single(args.tasks)
    else:
        lib.push_bulk(args.tasks, args.chunk)
    seconds = time.perf_counter() - started
    return {"done": lib.queued(), "seconds": seconds, "rate": args.tasks / seconds}


def _drain(lib: Library, args: argparse.Namespace) -> dict[str, Any]:
    global TALLY  # noqa: PLW0603 - task functions find the tally here
    lib.fill(args.tasks)
    queued = lib.queued()
    if queued != args.tasks:
        raise SystemExit(f"filled {args.tasks} tasks but {queued} are queued")
    TALLY = Tally(args.tasks)
    lib.consume(TALLY, args.batch)
    # Libraries that stop by themselves after N tasks come back here; the time
    # until then (final acks included) counts.
    return TALLY.result(end=time.time())


def serve(lib: Library, args: argparse.Namespace, ready: Callable[[], None]) -> None:
    """Run a worker for the latency measurement until ``--tasks`` tasks ran."""
    global TALLY  # noqa: PLW0603 - task functions find the tally here
    TALLY = Tally(args.tasks, ready=ready)
    lib.consume(TALLY, args.batch)
    emit(TALLY.result(end=time.time()))


def latency(
    args: argparse.Namespace,
    push_one: Callable[[dict[str, Any]], None],
    is_ready: Callable[[], bool],
) -> dict[str, Any]:
    """Producer side of the latency run; returns the worker's result + idle CPU."""
    argv = [sys.executable, sys.argv[0], *_serve_argv(args)]
    worker = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        push_one({**KWARGS, WARM: 1})
        give_up = time.monotonic() + 60
        while not is_ready():
            if worker.poll() is not None or time.monotonic() > give_up:
                raise SystemExit("the worker did not run the warm-up task")
            time.sleep(0.01)
        time.sleep(0.2)  # let it settle into its idle wait
        before = cpu_ticks(worker.pid)
        time.sleep(IDLE_SECONDS)
        # Whole ticks subtracted first: two tick counts turned into seconds and
        # subtracted gave 20.000000000000004 ms for two ticks, which the 20 ms
        # line of "no busy polling" then read as over it.
        ticks = cpu_ticks(worker.pid) - before
        idle_ms = 1000 * ticks / os.sysconf("SC_CLK_TCK")
        start = time.monotonic()
        for i in range(args.tasks):
            pause = start + i / args.rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            push_one({**KWARGS, "t": time.time()})
        out, _ = worker.communicate(timeout=60 + args.tasks / args.rate)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    result = read_result(out)
    result["idle_cpu_ms"] = idle_ms
    return result


def _serve_argv(args: argparse.Namespace) -> list[str]:
    skip = {"op"}
    argv = ["--op", "serve"]
    for name, value in vars(args).items():
        if name not in skip:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def read_result(stdout: str) -> dict[str, Any]:
    """The result a driver printed (the last result line)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith('{"result"'):
            result: dict[str, Any] = json.loads(line)["result"]
            return result
    raise SystemExit(f"no result line in the output: {stdout[-500:]!r}")


def main(
    lib: Library,
    args: argparse.Namespace,
    *,
    push_one: Callable[[dict[str, Any]], None] | None = None,
    client: Any = None,
) -> None:
    """Run ``args.op`` against ``lib`` and print its result.

    ``push_one`` pushes one task with given kwargs, and ``client`` is a redis-py
    client of the server: the latency run needs both (the worker flags its
    warm-up on a key there).
    """
    key = f"bench:ready:{args.queue}"
    if args.op in ("push_single", "push_bulk"):
        if args.op == "push_bulk" and not lib.bulk:
            emit({"skip": "no bulk push"})
            return
        emit(_timed_push(lib, args))
    elif args.op == "drain":
        if args.batch > 1 and not lib.batch:
            emit({"skip": "no batch fetch"})
            return
        emit(_drain(lib, args))
    elif args.op == "latency" and push_one is not None:
        emit(latency(args, push_one, lambda: bool(client.exists(key))))
    elif args.op == "serve":
        serve(lib, args, lambda: client.set(key, b"1"))
    else:
        raise SystemExit(f"unsupported op {args.op!r}")
