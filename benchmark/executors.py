"""Executor overhead: no-op jobs per second (not a test).

Run from the repository root::

    python -m benchmark.executors [--batches 200] [--batch 1000]

Each row runs ``--batches`` batches of ``--batch`` no-op jobs and prints jobs per
second: the cost of handing work to the executor, which is what is left on the
hot path when tasks themselves are cheap. The stdlib ``ThreadPoolExecutor.map``
row is there for comparison.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time
from collections.abc import Callable, Sequence

from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.executors.threads import ThreadExecutor

from sergeant.outcome import RETURNED_NONE, Outcome
from sergeant.task import Task


def _job(task: Task) -> Outcome:
    return RETURNED_NONE


def _rate(batches: int, batch: Sequence[Task], run: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(batches):
        run()
    return batches * len(batch) / (time.perf_counter() - started)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args()
    batch = [Task(kwargs={}, queue="q") for _ in range(args.batch)]
    serial, threads = SerialExecutor(), ThreadExecutor(threads=4)
    pool = concurrent.futures.ThreadPoolExecutor(4)
    rows = [
        ("SerialExecutor", lambda: serial.run(_job, batch)),
        ("ThreadExecutor(threads=4)", lambda: threads.run(_job, batch)),
        ("ThreadPoolExecutor(4).map (stdlib)", lambda: list(pool.map(_job, batch))),
    ]
    print(f"{'executor':<36} {'jobs/s':>12}")
    for name, run in rows:
        print(f"{name:<36} {_rate(args.batches, batch, run):>12,.0f}")
    threads.shutdown()
    pool.shutdown()


if __name__ == "__main__":
    main()
