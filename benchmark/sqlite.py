"""A quick throughput measurement of SqliteBroker on a temporary file (not a test).

Run from the repository root::

    python -m benchmark.sqlite [--tasks 50000] [--single 5000]

It prints tasks per second for: pushing one task per call, pushing bulks of
10,000, reserving and acking in batches of 100 (the ack riding on the next
reserve), and reserving one at a time the same way. Numbers depend on the disk
and on what else the machine runs; compare runs made on the same machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sergeant.adapters.sqlite import SqliteBroker

from sergeant.protocols import Delivery

PAYLOAD = b"x" * 100  # about the size of a small pickled task


def _rate(count: int, run: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    done = run()
    elapsed = time.perf_counter() - started
    if done != count:
        raise SystemExit(f"expected {count} tasks, handled {done}")
    return done, done / elapsed


def _push_single(broker: SqliteBroker, count: int) -> int:
    for _ in range(count):
        broker.push("single", [PAYLOAD])
    return count


def _push_bulk(broker: SqliteBroker, count: int, bulk: int = 10_000) -> int:
    for start in range(0, count, bulk):
        broker.push("bulk", [PAYLOAD] * min(bulk, count - start))
    return count


def _drain(broker: SqliteBroker, queue: str, batch: int) -> int:
    done, held = 0, list[Delivery]()
    while held := broker.reserve(queue, owner="bench", count=batch, ack=held):
        done += len(held)
    return done


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000, help="bulk/batch tasks")
    parser.add_argument("--single", type=int, default=5_000, help="one-by-one tasks")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        broker = SqliteBroker(str(Path(folder) / "bench.db"))
        cases: list[tuple[str, int, Callable[[], int]]] = [
            ("push, one task per call", args.single,
             lambda: _push_single(broker, args.single)),
            ("push, bulks of 10,000", args.tasks,
             lambda: _push_bulk(broker, args.tasks)),
            ("reserve+ack, batches of 100", args.tasks,
             lambda: _drain(broker, "bulk", 100)),
            ("reserve+ack, one at a time", args.single,
             lambda: _drain(broker, "single", 1)),
        ]  # fmt: skip
        rows = [(name, _rate(count, run)) for name, count, run in cases]
        broker.close()
    print(f"{'operation':<30} {'tasks':>8} {'tasks/s':>10}")
    for name, (count, rate) in rows:
        print(f"{name:<30} {count:>8,} {rate:>10,.0f}")


if __name__ == "__main__":
    main()
