"""Driver for Dramatiq on its Redis broker (run by its venv's Python).

One worker process with one worker thread (tasks are no-ops: more threads only
take turns on the GIL); the queue prefetch is the batch: Dramatiq's default for
one thread (2) for one at a time, 1,000 for batches (the Redis broker fetches up
to the prefetch in one script call; acks stay one call per message). Default
middleware. Dramatiq has no bulk enqueue: no bulk row. An idle consumer polls
with a back-off up to ``worker_timeout`` (default 1 s), which its wake-up latency
shows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

# The documented knob, dramatiq_queue_prefetch, is read when dramatiq is first
# imported. One at a time keeps Dramatiq's default (2 per worker thread): with a
# prefetch of 1 its consumer sleeps a back-off after every message.
_BATCH = int(sys.argv[sys.argv.index("--batch") + 1]) if "--batch" in sys.argv else 1
if _BATCH > 1:
    os.environ["dramatiq_queue_prefetch"] = str(_BATCH)  # noqa: SIM112 - its name

import _common  # noqa: E402 - after the prefetch is set
import dramatiq  # noqa: E402
import redis  # noqa: E402
from dramatiq import Worker  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402


class DramatiqLib:
    """A Redis broker with the benchmark's actor on the queue under test."""

    bulk = False
    batch = True

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.broker = RedisBroker(url=args.url)
        dramatiq.set_broker(self.broker)
        self.actor = dramatiq.actor(
            self._noop, actor_name="noop", queue_name=args.queue, max_retries=0
        )
        self.client = redis.Redis.from_url(args.url)

    @staticmethod
    def _noop(**kwargs: Any) -> None:
        assert _common.TALLY is not None
        _common.TALLY.tick(kwargs)

    def push_one(self, kwargs: dict[str, Any]) -> None:
        self.actor.send(**kwargs)

    def push_single(self, n: int) -> None:
        for _ in range(n):
            self.push_one(_common.KWARGS)

    def push_bulk(self, n: int, chunk: int) -> None:
        raise NotImplementedError

    def fill(self, n: int) -> None:
        self.push_single(n)

    def queued(self) -> int:
        return int(self.client.llen(f"dramatiq:{self.args.queue}"))

    def consume(self, tally: _common.Tally, batch: int) -> None:
        worker = Worker(self.broker, queues={self.args.queue}, worker_threads=1)
        worker.start()
        while True:  # the tally ends the process at the last task
            time.sleep(1)


def main() -> None:
    """Run the requested operation."""
    args = _common.parse()
    lib = DramatiqLib(args)
    _common.main(lib, args, push_one=lib.push_one, client=lib.client)


if __name__ == "__main__":
    main()
