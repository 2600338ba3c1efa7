"""Multithreaded worker: one process runs a batch on 8 threads (I/O-bound work).

Run it: ``python examples/multithreaded_worker.py``. ``ThreadExecutor(threads=8)``
runs up to 8 tasks of a reserved batch at once; set ``tasks_per_transaction`` to
at least the thread count so each batch keeps every thread busy. For CPU-bound
work use several processes (``sergeant supervise --workers N``) instead.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.threads import ThreadExecutor
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

import sergeant

THREADS: set[str] = set()


class Downloader(sergeant.Worker):
    def work(self, task: sergeant.Task) -> Any:
        time.sleep(0.2)  # waiting on the network: the GIL is free meanwhile
        return threading.current_thread().name

    def on_success(self, task: sergeant.Task, returned_value: Any) -> None:
        THREADS.add(returned_value)  # handlers run in the worker's own thread


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        broker = SqliteBroker(str(Path(directory) / "jobs.db"))
        executor = ThreadExecutor(threads=8)
        worker = Downloader(
            config=sergeant.WorkerConfig(
                name="downloads", tasks_per_transaction=8, max_tasks_per_run=40
            ),
            broker=broker, codec=PickleCodec(), executor=executor,
            watchdog=NullWatchdog(),
        )  # fmt: skip
        worker.push_tasks([{"url": f"https://example.com/{n}"} for n in range(40)])

        started = time.monotonic()
        worker.run()
        elapsed = time.monotonic() - started

        print(f"40 downloads of 0.2 s took {elapsed:.1f} s on {len(THREADS)} threads")
        print(f"one thread would have taken {40 * 0.2:.1f} s")
        executor.shutdown()
        broker.close()


if __name__ == "__main__":
    main()
