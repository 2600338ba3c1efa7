"""Driver for Celery on its Redis transport (run by its venv's Python).

Fastest documented set-up for one process and no-op tasks: the ``solo`` pool
(tasks run in the worker process, no child processes), results ignored (no
backend), early acknowledgement (the default: acked when received, so at most
once), gossip, mingle and heartbeat off, and the prefetch multiplier as the
batch: 1 for one at a time, 1,000 for batches (the optimizing guide recommends a
large one for many short tasks). There is no bulk publish: a ``group`` of 1,000
signatures is the documented way to send many tasks at once, and is measured as
Celery's bulk push.
"""

from __future__ import annotations

import argparse
from typing import Any

import _common
import redis
from celery import Celery, group

app = Celery("bench")


@app.task(name="bench.noop", ignore_result=True)
def noop(**kwargs: Any) -> None:
    """The task: report to the tally."""
    assert _common.TALLY is not None
    _common.TALLY.tick(kwargs)


class CeleryLib:
    """The Celery app, configured for the queue under test."""

    bulk = True
    batch = True

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        app.conf.update(
            broker_url=args.url,
            task_default_queue=args.queue,
            task_ignore_result=True,
            worker_hijack_root_logger=False,
            broker_connection_retry_on_startup=True,
            worker_disable_rate_limits=True,
        )
        self.client = redis.Redis.from_url(args.url)

    def push_one(self, kwargs: dict[str, Any]) -> None:
        noop.apply_async(kwargs=kwargs)

    def push_single(self, n: int) -> None:
        for _ in range(n):
            self.push_one(_common.KWARGS)

    def push_bulk(self, n: int, chunk: int) -> None:
        for start in range(0, n, chunk):
            group(noop.s(**_common.KWARGS) for _ in range(min(chunk, n - start)))()

    def fill(self, n: int) -> None:
        self.push_bulk(n, 1000)

    def queued(self) -> int:
        return int(self.client.llen(self.args.queue))

    def consume(self, tally: _common.Tally, batch: int) -> None:
        app.worker_main(
            [
                "worker",
                "--pool=solo",
                "--concurrency=1",
                f"--prefetch-multiplier={batch}",
                f"--queues={self.args.queue}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=WARNING",
            ]
        )


def main() -> None:
    """Run the requested operation."""
    args = _common.parse()
    lib = CeleryLib(args)
    _common.main(lib, args, push_one=lib.push_one, client=lib.client)


if __name__ == "__main__":
    main()
