"""Driver for this repository's sergeant (run by the project's own Python).

Broker URLs: ``redis://...`` (one node), several comma-separated (independent
nodes), ``sqlite:///<file>`` or ``memory:`` (drain in this process only).
``--delivery`` picks at-least-once (leases) or at-most-once (plain pop);
``at_least_once+prefetch=N`` also sets ``WorkerConfig(prefetch=N)``.
``--op drain --workers K`` (K >= 1) fills the queue, then drains it with K worker
processes (``--op drain_part``) that all start at the same moment once imported,
timed from the first task start in any of them to the last one's end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

import _common
import redis
from sergeant.adapters.codecs import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.memory import MemoryBroker
from sergeant.adapters.redis import RedisBroker
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import Starvation, WorkerConfig
from sergeant.producer import Producer
from sergeant.task import Task
from sergeant.worker import Worker


class BenchWorker(Worker):
    """Runs a no-op: the task only reports to the tally."""

    tally: _common.Tally

    def work(self, task: Task) -> None:
        self.tally.tick(task.kwargs)

    def on_starvation(self, time_with_no_tasks: float) -> None:
        # Used by drain_part: the queue is empty, so this worker's share is done.
        self.request_stop()


def make_broker(url: str) -> Any:
    """The broker a URL names (see the module docstring)."""
    if url == "memory:":
        return MemoryBroker()
    if url.startswith("sqlite:"):
        return SqliteBroker.from_url(url)
    clients = [redis.Redis.from_url(u) for u in url.split(",")]
    if len(clients) == 1:
        return RedisBroker(client=clients[0], namespace="bench")
    return RedisBroker(clients=clients, namespace="bench")


class Ours:
    """Our producer and worker on one broker."""

    bulk = True
    batch = True

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.broker = make_broker(args.url)
        self.codec = PickleCodec()
        self.producer = Producer(broker=self.broker, codec=self.codec, queue=args.queue)

    def push_single(self, n: int) -> None:
        push = self.producer.push_task
        for _ in range(n):
            push(_common.KWARGS)

    def push_bulk(self, n: int, chunk: int) -> None:
        push = self.producer.push_tasks
        for start in range(0, n, chunk):
            push([_common.KWARGS] * min(chunk, n - start))

    def fill(self, n: int) -> None:
        self.push_bulk(n, 1000)

    def queued(self) -> int:
        return self.producer.queue_lengths().ready

    def worker(self, batch: int, runs: int, **config: Any) -> BenchWorker:
        """A worker taking ``batch`` tasks per reserve, stopping after ``runs``."""
        # "at_least_once+prefetch=N": WorkerConfig(prefetch=N). Passed only when
        # asked, so a baseline build that predates the option still runs.
        delivery, _, extra = self.args.delivery.partition("+")
        if extra.startswith("prefetch="):
            config["prefetch"] = int(extra.removeprefix("prefetch="))
        settings = WorkerConfig(
            name=self.args.queue,
            tasks_per_transaction=batch,
            max_tasks_per_run=runs,
            delivery=delivery,
            **config,
        )
        return BenchWorker(
            broker=self.broker,
            codec=self.codec,
            executor=SerialExecutor(),
            watchdog=NullWatchdog(),
            config=settings,
        )

    def consume(self, tally: _common.Tally, batch: int) -> None:
        # The loop stops by itself after N runs (+1: the latency warm-up task), so
        # the time to its end, final acks included, is what gets measured.
        tally.exit_when_done = False
        worker = self.worker(batch, tally.expected + tally.warm_up)
        worker.tally = tally
        worker.run()

    def drain_part(self) -> dict[str, Any]:
        """Consume until the queue is empty; report count and first/last times."""
        tally = _common.Tally(0, exit_when_done=False)
        time.sleep(max(0.0, self.args.start_at - time.time()))
        worker = self.worker(
            self.args.batch,
            0,
            wait=0.0,
            starvation=Starvation(time_with_no_tasks=0.001),
        )
        worker.tally = tally
        worker.run()
        return {"done": tally.count, "first": tally.first, "last": time.time()}


def drain_processes(lib: Ours, args: argparse.Namespace) -> dict[str, Any]:
    """Fill the queue, drain it with ``--workers`` processes, check nothing is left."""
    lib.fill(args.tasks)
    # Python start-up takes a while: every worker waits for the same moment.
    start_at = time.time() + 1.0 + 0.3 * args.workers
    argv = [sys.executable, sys.argv[0], *sys.argv[1:], "--op", "drain_part",
            "--start-at", repr(start_at)]  # fmt: skip
    children = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        for _ in range(args.workers)
    ]
    parts = []
    for child in children:
        out, _ = child.communicate(timeout=600)
        if child.returncode:
            raise SystemExit(f"a drain worker exited with {child.returncode}")
        parts.append(_common.read_result(out))
    lengths = lib.producer.queue_lengths()
    if lengths.ready or lengths.in_flight:
        raise SystemExit(f"tasks left after the drain: {lengths}")
    busy = [p for p in parts if p["done"]]
    seconds = max(p["last"] for p in busy) - min(p["first"] for p in busy)
    done = sum(p["done"] for p in parts)
    return {"done": done, "seconds": seconds, "rate": done / seconds}


def main() -> None:
    """Run the requested operation."""
    args = _common.parse()
    lib = Ours(args)
    if args.op == "drain_part":
        _common.emit(lib.drain_part())
    elif args.op == "drain" and args.workers > 0:
        _common.emit(drain_processes(lib, args))
    else:
        client = None
        if args.url.startswith("redis"):
            client = redis.Redis.from_url(args.url.split(",")[0])
        _common.main(lib, args, push_one=lib.producer.push_task, client=client)


if __name__ == "__main__":
    main()
