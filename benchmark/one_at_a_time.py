"""Where the time of one task goes when tasks move one at a time (not a test).

Run from the repository root::

    python -m benchmark.one_at_a_time [--calls 5000] [--rounds 5]

It starts its own redis-server and prints, per call, the wall time seen by one
client and the server's CPU time (``INFO cpu``, as ``benchmark.redis_costs``
does), from the bare round trip up to a worker's whole loop: a ``PING`` on a
plain connection (the floor of any call); an ``RPUSH`` of one entry through
redis-py's ``execute_command`` (what a client library pays per command);
``RedisBroker.push`` of one payload and ``Producer.push_task`` (building and
encoding the task on top); ``RedisBroker.reserve`` of one task at most once
(a pop) and at least once (a lease, acking the previous task in the same call,
as a worker does); and a worker draining one task at a time, both ways (the
reserve plus decoding, running a no-op and settling). The differences between
rows are what each layer costs; the one-at-a-time rows of ``python -m
benchmark.redis`` are the last two, against sergeant 0.27.0. Medians of
``--rounds`` rounds of ``--calls`` calls.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import hiredis
from sergeant.adapters.codecs import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.redis import RedisBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import WorkerConfig
from sergeant.producer import Producer
from sergeant.protocols import Delivery
from sergeant.task import Task
from sergeant.worker import Worker

from ._redis_server import RedisServer, run_cli, server_cpu_seconds
from .redis_costs import medians, per_call

KWARGS = {"url": "https://example.com/x", "n": 1}
QUEUE = "q"


class _NoOp(Worker):
    """Runs nothing: the loop's own cost is what is measured."""

    def work(self, task: Task) -> None:
        pass


class _Calls:
    """The measured calls, on one queue that each run empties first (FLUSHALL)."""

    def __init__(self, server: RedisServer) -> None:
        self.probe = server.client()
        self.conn: Any = server.client().connection_pool.get_connection()
        self.broker = RedisBroker(server.client(), namespace="bench")
        self.codec = PickleCodec()
        self.producer = Producer(broker=self.broker, codec=self.codec, queue=QUEUE)
        self.payload = self.codec.encode(Task(kwargs=KWARGS, queue=QUEUE))
        self.held: list[Delivery] = []
        self.ping = [hiredis.pack_command(("PING",))]

    def empty(self, n: int) -> None:
        """No task anywhere (and none held)."""
        self.probe.flushall()
        self.held = []

    def fill(self, n: int) -> None:
        """``n`` tasks ready, pushed in bulk."""
        self.empty(n)
        for start in range(0, n, 1000):
            self.producer.push_tasks([KWARGS] * min(1000, n - start))

    def bare_ping(self) -> None:
        self.conn.send_packed_command(self.ping)
        self.conn.read_response()

    def rpush(self) -> None:
        self.probe.rpush("x", self.payload)

    def push(self) -> None:
        self.broker.push(QUEUE, [self.payload])

    def push_task(self) -> None:
        self.producer.push_task(KWARGS)

    def pop(self) -> None:
        if not self.broker.reserve(QUEUE, owner="w", lease=None):
            raise RuntimeError("the queue ran dry")

    def lease(self) -> None:
        self.held = self.broker.reserve(QUEUE, owner="w", lease=60.0, ack=self.held)
        if not self.held:
            raise RuntimeError("the queue ran dry")

    def drain(self, delivery: str) -> Callable[[int], tuple[float, float]]:
        """A worker draining ``n`` tasks one at a time: (CPU, wall) µs per task."""

        def run(n: int) -> tuple[float, float]:
            self.fill(n)
            config = WorkerConfig(name=QUEUE, max_tasks_per_run=n, delivery=delivery)
            worker = _NoOp(
                broker=self.broker,
                codec=self.codec,
                executor=SerialExecutor(),
                watchdog=NullWatchdog(),
                config=config,
            )
            before = server_cpu_seconds(self.probe)
            started = time.perf_counter()
            worker.run()
            wall = time.perf_counter() - started
            cpu = server_cpu_seconds(self.probe) - before
            left = self.broker.lengths(QUEUE)
            if left.ready or left.in_flight:
                raise RuntimeError(f"the worker left tasks behind: {left}")
            return cpu / n * 1e6, wall / n * 1e6

        return run

    def close(self) -> None:
        self.conn.disconnect()
        self.broker.close()
        self.probe.close()


def _each_call(
    probe: Any, setup: Callable[[int], None], call: Callable[[], None]
) -> Callable[[int], tuple[float, float]]:
    """(server CPU µs, wall µs) per call over ``n`` calls after ``setup(n)``."""
    return functools.partial(per_call, probe, setup, call)


def rows(
    server: RedisServer, calls: int, rounds: int
) -> list[tuple[str, float, float]]:
    """(what, server CPU µs per call, wall µs per call), medians of ``rounds``."""
    c = _Calls(server)
    each = functools.partial(_each_call, c.probe)
    cases: list[tuple[str, Callable[[int], tuple[float, float]]]] = [
        ("PING, plain connection (the round trip)", each(c.empty, c.bare_ping)),
        ("RPUSH 1 entry, redis-py execute_command", each(c.empty, c.rpush)),
        ("RedisBroker.push, 1 payload", each(c.empty, c.push)),
        ("Producer.push_task", each(c.empty, c.push_task)),
        ("RedisBroker.reserve 1, at most once", each(c.fill, c.pop)),
        ("RedisBroker.reserve 1 + ack, at least once", each(c.fill, c.lease)),
        ("worker, one at a time, at most once", c.drain("at_most_once")),
        ("worker, one at a time, at least once", c.drain("at_least_once")),
    ]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in cases}
    try:
        for _ in range(rounds):
            for name, measure in cases:
                results[name].append(measure(calls))
    finally:
        c.close()
    return medians(results)


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    server = RedisServer.started()
    try:
        table = rows(server, args.calls, args.rounds)
    finally:
        server.stop()
    print(f"{'one call (one task)':<48} {'server CPU µs':>14} {'wall µs':>10}")
    for name, cpu, wall in table:
        print(f"{name:<48} {cpu:>14,.1f} {wall:>10,.1f}")


if __name__ == "__main__":
    run_cli(main)
