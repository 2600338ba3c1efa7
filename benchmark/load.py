"""Load held: a million queued tasks on Redis, their memory, and a worker's RSS.

Run from the repository root (a command, not a CI test; it needs ~2 GB of RAM)::

    python -m benchmark.load                    # 1,000,000 tasks per row
    python -m benchmark.load --tasks 200000     # quicker

For each task shape (``small``: ``{"n": i}``; ``email``: a ~0.5 KB templated
message, the kind of kwargs compression is for) and each codec (``pickle``, and
``zlib+pickle``), on a private ``redis-server`` (no persistence, flushed before
each row), it:

1. pushes N tasks in bulks of 10,000 and reads ``INFO memory`` ``used_memory``
   before and after: the difference over N is what one queued task costs Redis,
   payload, entry header and list overhead included;
2. drains them with one worker process (batches of ``--batch``, an empty
   ``work``) that reports its RSS when composed (before), after the first 1% of
   the tasks (warm) and after the last (after). Growth after - warm must stay
   under ``--rss-bound`` MiB: a worker that leaks per task would grow by
   ``leak x N``.

It prints one table row per shape and codec. Exit code 1 if a row's growth is
over the bound or the queue did not drain.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil
from sergeant.adapters.codecs import PickleCodec, ZlibCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.redis import RedisBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import Starvation, WorkerConfig
from sergeant.protocols import Codec
from sergeant.task import Task
from sergeant.worker import Worker

from ._redis_server import RedisServer, run_cli

QUEUE = "load"
NAMESPACE = "load"
BULK = 10_000
MIB = 2**20
BODY = (
    "Hello {name},\n\nThank you for signing up. Your account is ready; confirm your "
    "address within 48 hours by following the link below. If you did not sign up, "
    "ignore this message and nothing will happen. Questions? Reply to this email "
    "and a human will answer within one business day.\n\nThe team"
)


def codec_named(name: str) -> Codec:
    """The codec of a table row."""
    return ZlibCodec(PickleCodec()) if name == "zlib+pickle" else PickleCodec()


def kwargs_of(shape: str, n: int) -> dict[str, Any]:
    """The kwargs of task ``n`` of a shape."""
    if shape == "small":
        return {"n": n}
    name = f"user{n}"
    return {
        "n": n,
        "to": f"{name}@example.com",
        "template": "welcome",
        "subject": "Welcome aboard",
        "body": BODY.format(name=name),
        "link": f"https://example.com/confirm/{n:012d}",
    }


class _Drainer(Worker):
    """Does nothing per task; notes its RSS when warm; stops when the queue idles."""

    def __init__(self, *, warm_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.count = 0
        self.warm_at = warm_at
        self.rss_warm = 0

    def work_batch(self, tasks: Any) -> list[None]:
        before = self.count
        self.count += len(tasks)
        if before < self.warm_at <= self.count:
            self.rss_warm = psutil.Process().memory_info().rss
        return [None] * len(tasks)

    def on_starvation(self, time_with_no_tasks: float) -> None:
        self.request_stop()


def drain(url: str, codec: str, batch: int, warm_at: int, out: Connection) -> None:
    """The worker process: drain the queue, send back counts and RSS readings."""
    worker = _Drainer(
        warm_at=warm_at,
        broker=RedisBroker.from_url(url, namespace=NAMESPACE),
        codec=codec_named(codec),
        executor=SerialExecutor(),
        watchdog=NullWatchdog(),
        config=WorkerConfig(name=QUEUE, tasks_per_transaction=batch, wait=0.2,
                            starvation=Starvation(time_with_no_tasks=2.0)),
    )  # fmt: skip
    process = psutil.Process()
    rss_before = process.memory_info().rss
    started = time.perf_counter()
    worker.run()
    seconds = time.perf_counter() - started - 2.0  # minus the idle that stops it
    rss_after = process.memory_info().rss
    out.send({"tasks": worker.count, "seconds": seconds, "rss_before": rss_before,
              "rss_warm": worker.rss_warm, "rss_after": rss_after})  # fmt: skip
    worker.broker.close()


@dataclasses.dataclass
class Row:
    """One shape and codec, measured."""

    shape: str
    codec: str
    payload: float
    redis_per_task: float
    left: int
    push_seconds: float
    drain_rate: float
    rss: dict[str, float]
    drained: bool

    @property
    def growth(self) -> float:
        """RSS growth from warm to after, MiB."""
        return self.rss["after"] - self.rss["warm"]


def measure(server: RedisServer, shape: str, codec: str, tasks: int, batch: int) -> Row:
    """Push ``tasks`` of ``shape`` with ``codec``, read memory, drain, read RSS."""
    client = server.client()
    client.flushall()
    before = int(client.info("memory")["used_memory"])
    broker = RedisBroker.from_url(server.url, namespace=NAMESPACE)
    encode = codec_named(codec).encode
    payload_bytes = 0
    started = time.perf_counter()
    for start in range(0, tasks, BULK):
        payloads = [
            encode(Task(kwargs=kwargs_of(shape, n), queue=QUEUE))
            for n in range(start, min(tasks, start + BULK))
        ]
        payload_bytes += sum(map(len, payloads))
        broker.push(QUEUE, payloads)
    push_seconds = time.perf_counter() - started
    queued = int(client.info("memory")["used_memory"])
    receive, send = multiprocessing.get_context("spawn").Pipe(duplex=False)
    child = multiprocessing.get_context("spawn").Process(
        target=drain, args=(server.url, codec, batch, max(1, tasks // 100), send)
    )
    child.start()
    report = receive.recv()
    child.join()
    lengths = broker.lengths(QUEUE)
    broker.close()
    left = int(client.info("memory")["used_memory"]) - before
    client.close()
    return Row(
        shape=shape,
        codec=codec,
        payload=payload_bytes / tasks,
        redis_per_task=(queued - before) / tasks,
        left=left,
        push_seconds=push_seconds,
        drain_rate=report["tasks"] / report["seconds"],
        rss={k: report[f"rss_{k}"] / MIB for k in ("before", "warm", "after")},
        drained=report["tasks"] == tasks and lengths.ready + lengths.in_flight == 0,
    )


def print_table(rows: list[Row], tasks: int, bound: float) -> None:
    """The rows as a markdown table."""
    print(f"\n{tasks:,} tasks per row; RSS of the one worker process, MiB\n")
    print("| task | codec | payload B | Redis B/task | push/s | drain/s "
          "| RSS before | warm | after | growth | Redis left |")  # fmt: skip
    print(
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for r in rows:
        verdict = "" if r.growth <= bound and r.drained else " **FAIL**"
        print(
            f"| {r.shape} | {r.codec} | {r.payload:,.0f} | {r.redis_per_task:,.0f} "
            f"| {tasks / r.push_seconds:,.0f} | {r.drain_rate:,.0f} "
            f"| {r.rss['before']:.1f} | {r.rss['warm']:.1f} | {r.rss['after']:.1f} "
            f"| {r.growth:+.1f}{verdict} | {r.left / MIB:.1f} MiB |"
        )
    print(f"\ngrowth = after - warm; bound {bound:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    """Measure every row; return 1 if one is over the RSS bound or did not drain."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.load", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rss-bound", type=float, default=16.0, metavar="MIB")
    parser.add_argument("--shapes", default="small,email")
    parser.add_argument("--codecs", default="pickle,zlib+pickle")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sergeant-load-") as directory:
        server = RedisServer(Path(directory), appendonly=False)
        server.start()
        try:
            for shape in args.shapes.split(","):
                for codec in args.codecs.split(","):
                    print(f"measuring {shape} tasks with {codec} ...", flush=True)
                    rows.append(measure(server, shape, codec, args.tasks, args.batch))
        finally:
            server.stop()
    print_table(rows, args.tasks, args.rss_bound)
    ok = all(r.growth <= args.rss_bound and r.drained for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
