"""Driver for Huey on Redis (run by its venv's Python).

``RedisHuey`` with results off and blocking dequeue (BRPOP, the default), one
thread worker, periodic tasks off. Huey enqueues and dequeues one task per round
trip: no bulk row and no batch row.
"""

from __future__ import annotations

import argparse
from typing import Any

import _common
import redis
from huey import RedisHuey


class HueyLib:
    """A RedisHuey on the queue under test."""

    bulk = False
    batch = False

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.huey = RedisHuey(args.queue, url=args.url, results=False)
        self.task = self.huey.task(name="noop")(self._noop)
        self.client = redis.Redis.from_url(args.url)

    @staticmethod
    def _noop(**kwargs: Any) -> None:
        assert _common.TALLY is not None
        _common.TALLY.tick(kwargs)

    def push_one(self, kwargs: dict[str, Any]) -> None:
        self.task(**kwargs)

    def push_single(self, n: int) -> None:
        for _ in range(n):
            self.push_one(_common.KWARGS)

    def push_bulk(self, n: int, chunk: int) -> None:
        raise NotImplementedError

    def fill(self, n: int) -> None:
        self.push_single(n)

    def queued(self) -> int:
        return int(self.huey.pending_count())

    def consume(self, tally: _common.Tally, batch: int) -> None:
        consumer = self.huey.create_consumer(
            workers=1, worker_type="thread", periodic=False
        )
        consumer.run()  # the tally ends the process at the last task


def main() -> None:
    """Run the requested operation."""
    args = _common.parse()
    lib = HueyLib(args)
    _common.main(lib, args, push_one=lib.push_one, client=lib.client)


if __name__ == "__main__":
    main()
