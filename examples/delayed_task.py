"""Delayed task: push now, run later (``delay=`` seconds or an ``eta``).

Run it: ``python examples/delayed_task.py``. A delayed task waits in the broker,
not in a worker's memory; the reserve that finds it due promotes it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

import sergeant

START = time.monotonic()


class Reminder(sergeant.Worker):
    def work(self, task: sergeant.Task) -> Any:
        print(f"{task.kwargs['say']!r} ran after {time.monotonic() - START:.1f} s")


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        broker = SqliteBroker(str(Path(directory) / "jobs.db"))
        worker = Reminder(
            config=sergeant.WorkerConfig(name="reminders", max_tasks_per_run=2),
            broker=broker, codec=PickleCodec(), executor=SerialExecutor(),
            watchdog=NullWatchdog(),
        )  # fmt: skip
        worker.push_task({"say": "in two seconds"}, delay=2.0)
        worker.push_task({"say": "right away"})
        lengths = worker.queue_lengths()
        print(f"ready {lengths.ready}, delayed {lengths.delayed}")

        worker.run()  # two tasks, then returns
        broker.close()


if __name__ == "__main__":
    main()
