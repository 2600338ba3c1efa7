"""Broker-only throughput, without the worker loop (not a test).

Run from the repository root::

    python -m benchmark.broker [--brokers memory,sqlite,redis,redis-cluster]
        [--tasks 100000] [--single 10000] [--bulk 1000] [--batch 1000]

For each broker it prints tasks per second for: pushing one task per call, pushing
in bulks, draining in batches at least once (reserve under a lease, the ack riding
on the next reserve) and at most once (``lease=None``), and the same one task at a
time. Payloads are real pickled tasks and every drained payload is decoded, so the
rows include the codec but none of the worker's settlement. The ``redis`` rows run
on a redis-server this script starts on a free loopback port, the
``redis-cluster`` rows on a 3-master Redis Cluster it builds with ``redis-cli``
(through redis-py's cluster client). Both also print the servers' own CPU time
per 1,000 tasks (``INFO cpu``, user + system, summed over the cluster's masters,
whose cluster bus costs a little even when idle): the figure that bounds how many
workers one Redis can feed, and one that a noisy client machine barely moves.
Compare runs made on the same machine; the side-by-side with other libraries is
``python -m benchmark``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sergeant.adapters.codecs.pickle import PickleCodec

from sergeant.protocols import Broker, Delivery
from sergeant.task import Task

KWARGS = {"url": "https://example.com/x", "n": 1}
CODEC = PickleCodec()


def _payloads(count: int) -> list[bytes]:
    return [CODEC.encode(Task(kwargs=KWARGS, queue="q")) for _ in range(count)]


CpuReader = Callable[[], float] | None


def _rate(
    count: int, run: Callable[[], int], server_cpu: CpuReader
) -> tuple[float, float | None]:
    """Tasks per second, and server CPU µs per 1,000 tasks (None: no server)."""
    cpu_before = server_cpu() if server_cpu else 0.0
    started = time.perf_counter()
    done = run()
    elapsed = time.perf_counter() - started
    if done != count:
        raise SystemExit(f"expected {count} tasks, handled {done}")
    if server_cpu is None:
        return done / elapsed, None
    return done / elapsed, (server_cpu() - cpu_before) * 1e9 / done


def _push(broker: Broker, queue: str, payloads: list[bytes], bulk: int) -> int:
    for start in range(0, len(payloads), bulk):
        broker.push(queue, payloads[start : start + bulk])
    return len(payloads)


def _drain(broker: Broker, queue: str, batch: int, lease: float | None) -> int:
    decode = CODEC.decode
    done, held = 0, list[Delivery]()
    while True:
        held = broker.reserve(
            queue, owner="bench", count=batch, lease=lease,
            ack=held if lease is not None else (),
        )  # fmt: skip
        if not held:
            return done
        for delivery in held:
            decode(delivery.payload)
        done += len(held)


@contextmanager
def _broker(name: str) -> Iterator[tuple[Any, CpuReader]]:
    if name == "memory":
        from sergeant.adapters.memory import MemoryBroker

        yield MemoryBroker(), None
    elif name == "sqlite":
        from sergeant.adapters.sqlite import SqliteBroker

        with tempfile.TemporaryDirectory() as folder:
            broker = SqliteBroker(str(Path(folder) / "bench.db"))
            yield broker, None
            broker.close()
    elif name == "redis":
        import redis
        from sergeant.adapters.redis import RedisBroker

        from ._redis_server import RedisServer, server_cpu_seconds

        server = RedisServer.started()
        probe = redis.Redis.from_url(server.url)
        try:
            broker = RedisBroker(client=redis.Redis.from_url(server.url))
            yield broker, lambda: server_cpu_seconds(probe)
            broker.close()
        finally:
            probe.close()
            server.stop()
    elif name == "redis-cluster":
        from sergeant.adapters.redis import RedisBroker

        from ._redis_server import LocalCluster, server_cpu_seconds

        cluster = LocalCluster()
        try:
            cluster.start()
            # The queues' keys sit on one master each: its CPU is what they cost.
            probes = [server.client() for server in cluster.servers]
            broker = RedisBroker(cluster.client())
            yield broker, lambda: sum(server_cpu_seconds(p) for p in probes)
            broker.close()
            for probe in probes:
                probe.close()
        finally:
            cluster.stop()
    else:
        raise SystemExit(
            f"unknown broker {name!r} (memory, sqlite, redis, redis-cluster)"
        )


def measure(
    name: str, *, tasks: int, single: int, bulk: int, batch: int
) -> list[tuple[str, int, float, float | None]]:
    """Rows for broker ``name``: operation, tasks, tasks/s, server CPU µs/1,000."""
    many, few = _payloads(tasks), _payloads(single)
    with _broker(name) as (b, server_cpu):
        rows: list[tuple[str, int, Callable[[], int]]] = [
            ("push, one per call", single, lambda: _push(b, "one", few, 1)),
            (f"push, bulks of {bulk:,}", tasks, lambda: _push(b, "alo", many, bulk)),
            (f"drain at least once, batches of {batch:,}", tasks,
             lambda: _drain(b, "alo", batch, 60.0)),
            (f"push, bulks of {bulk:,} (again)", tasks,
             lambda: _push(b, "amo", many, bulk)),
            (f"drain at most once, batches of {batch:,}", tasks,
             lambda: _drain(b, "amo", batch, None)),
            ("drain at least once, one at a time", single,
             lambda: _drain(b, "one", 1, 60.0)),
            ("push, one per call (again)", single, lambda: _push(b, "one", few, 1)),
            ("drain at most once, one at a time", single,
             lambda: _drain(b, "one", 1, None)),
        ]  # fmt: skip
        return [
            (label, count, *_rate(count, run, server_cpu)) for label, count, run in rows
        ]


def main(argv: list[str] | None = None, **defaults: Any) -> None:
    """Measure and print one table per broker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="memory,sqlite,redis")
    parser.add_argument("--tasks", type=int, default=100_000, help="bulk/batch rows")
    parser.add_argument("--single", type=int, default=10_000, help="one-at-a-time")
    parser.add_argument("--bulk", type=int, default=1_000, help="tasks per push")
    parser.add_argument("--batch", type=int, default=1_000, help="tasks per reserve")
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    for name in args.brokers.split(","):
        rows = measure(
            name, tasks=args.tasks, single=args.single, bulk=args.bulk,
            batch=args.batch,
        )  # fmt: skip
        print(f"\n{name}")
        print(f"{'operation':<42} {'tasks':>8} {'tasks/s':>10} {'server CPU':>12}")
        for label, count, rate, cpu in rows:
            used = "" if cpu is None else f"{cpu:,.0f} µs/1k"
            print(f"{label:<42} {count:>8,} {rate:>10,.0f} {used:>12}")


if __name__ == "__main__":
    from ._redis_server import run_cli  # lazily: SQLite runs need no redis

    run_cli(main)
