"""Driver for RQ (run by its venv's Python).

Fastest documented set-up for one process: ``SimpleWorker`` runs jobs in the
worker process itself (the default ``Worker`` forks a child per job), in burst
mode; jobs are enqueued with ``result_ttl=0`` so no result is kept. Bulk push is
``Queue.enqueue_many`` (one pipeline per call). RQ fetches one job per round trip:
no batch mode.
"""

from __future__ import annotations

import argparse
from typing import Any

import _common
import redis
from rq import Queue, SimpleWorker


def noop(**kwargs: Any) -> None:
    """The task: report to the tally."""
    assert _common.TALLY is not None
    _common.TALLY.tick(kwargs)


class Rq:
    """An RQ queue and a SimpleWorker on it."""

    bulk = True
    batch = False

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.client = redis.Redis.from_url(args.url)
        self.queue = Queue(args.queue, connection=self.client)

    def push_one(self, kwargs: dict[str, Any]) -> None:
        self.queue.enqueue("lib_rq.noop", kwargs=kwargs, result_ttl=0)

    def push_single(self, n: int) -> None:
        for _ in range(n):
            self.push_one(_common.KWARGS)

    def push_bulk(self, n: int, chunk: int) -> None:
        prepare = Queue.prepare_data
        for start in range(0, n, chunk):
            jobs = [
                prepare("lib_rq.noop", kwargs=_common.KWARGS, result_ttl=0)
                for _ in range(min(chunk, n - start))
            ]
            self.queue.enqueue_many(jobs)

    def fill(self, n: int) -> None:
        self.push_bulk(n, 1000)

    def queued(self) -> int:
        return int(self.queue.count)

    def consume(self, tally: _common.Tally, batch: int) -> None:
        worker = SimpleWorker([self.queue], connection=self.client)
        # Burst mode stops on an empty queue; the latency run needs a waiting
        # worker instead (the tally ends the process at the last task).
        worker.work(burst=not tally.warm_up, logging_level="WARNING")


def main() -> None:
    """Run the requested operation."""
    args = _common.parse()
    lib = Rq(args)
    _common.main(lib, args, push_one=lib.push_one, client=lib.client)


if __name__ == "__main__":
    main()
