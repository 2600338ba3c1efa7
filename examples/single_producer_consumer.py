"""Single producer, single consumer: push tasks to an SQLite file, run one worker.

Run it: ``python examples/single_producer_consumer.py``. The producer and the worker
share one process here; in real life the producer is your application and the
worker runs under ``sergeant supervise``. Both only need the same file and codec.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

import sergeant


class Greeter(sergeant.Worker):
    """Greets the name in each task."""

    def work(self, task: sergeant.Task) -> Any:
        return f"hello, {task.kwargs['name']}"

    def on_success(self, task: sergeant.Task, returned_value: Any) -> None:
        print(returned_value)


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        broker = SqliteBroker(str(Path(directory) / "jobs.db"))
        producer = sergeant.Producer(
            broker=broker, codec=PickleCodec(), queue="greetings"
        )
        producer.push_tasks([{"name": name} for name in ("ada", "grace", "linus")])
        print(f"queued: {producer.number_of_enqueued_tasks()}")

        worker = Greeter(
            config=sergeant.WorkerConfig(name="greetings", max_tasks_per_run=3),
            broker=broker,
            codec=PickleCodec(),
            executor=SerialExecutor(),
            watchdog=NullWatchdog(),
        )
        reason = worker.run()  # returns after max_tasks_per_run tasks

        print(f"worker stopped: {reason.value}")
        print(f"queued: {producer.number_of_enqueued_tasks()}")
        broker.close()


if __name__ == "__main__":
    main()
