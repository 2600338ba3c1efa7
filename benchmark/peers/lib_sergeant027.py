"""Driver for the original sergeant 0.27.0 (run by its own venv's Python).

Its Redis connector pushes with RPUSH (bulk: one RPUSH of all items) and pops
with LPOP (batch: ``LPOP key count``): at most once, no leases. Its worker loop
sleeps one second whenever the queue is empty, which is what its idle wake-up
latency shows.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlparse

import _common
import redis

import sergeant.config
import sergeant.worker


class BenchWorker(sergeant.worker.Worker):
    """Runs a no-op: the task only reports to the tally."""

    def work(self, task: Any) -> None:
        assert _common.TALLY is not None
        _common.TALLY.tick(task.kwargs)


class Sergeant027:
    """The 0.27 worker object: it is also the producer (push_task/push_tasks)."""

    bulk = True
    batch = True

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        url = urlparse(args.url)
        self.params = {
            "nodes": [
                {
                    "host": url.hostname,
                    "port": url.port,
                    "password": None,
                    "database": int(url.path.strip("/") or 0),
                }
            ]
        }
        self.worker = self.make_worker(batch=1, runs=0)

    def make_worker(self, batch: int, runs: int) -> BenchWorker:
        """A worker on the queue, ``batch`` tasks per pop, stopping after ``runs``."""
        worker = BenchWorker()
        worker.config = sergeant.config.WorkerConfig(
            name=self.args.queue,
            connector=sergeant.config.Connector(type="redis", params=self.params),
            tasks_per_transaction=batch,
            max_tasks_per_run=runs,
        )
        worker.init_broker()
        return worker

    def push_single(self, n: int) -> None:
        push = self.worker.push_task
        for _ in range(n):
            push(_common.KWARGS)

    def push_bulk(self, n: int, chunk: int) -> None:
        push = self.worker.push_tasks
        for start in range(0, n, chunk):
            push([_common.KWARGS] * min(chunk, n - start))

    def fill(self, n: int) -> None:
        self.push_bulk(n, 1000)

    def queued(self) -> int:
        return int(self.worker.number_of_enqueued_tasks())

    def consume(self, tally: _common.Tally, batch: int) -> None:
        # Its loop stops by itself after max_tasks_per_run tasks.
        tally.exit_when_done = False
        worker = self.make_worker(batch, tally.expected + tally.warm_up)
        worker.init_executor()
        summary = worker.work_loop()
        if summary.get("executor_exception"):
            raise SystemExit(f"the worker failed: {summary['executor_exception']!r}")


def main() -> None:
    """Run the requested operation."""
    args = _common.parse()
    lib = Sergeant027(args)
    _common.main(
        lib,
        args,
        push_one=lib.worker.push_task,
        client=redis.Redis.from_url(args.url),
    )


if __name__ == "__main__":
    main()
