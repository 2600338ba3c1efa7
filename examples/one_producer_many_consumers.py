"""One producer, many consumers: a supervisor runs three worker processes.

Run it: ``python examples/one_producer_many_consumers.py``. The supervisor starts
fresh interpreters that import ``Consumer`` from this file by name, so the class
lives at module level and composes its own adapters. Each worker stops itself once
the queue stays empty; ``Supervisor.run()`` returns when all of them have.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.supervisor import SupervisionPolicy, Supervisor
from sergeant.adapters.watchdogs.null import NullWatchdog

import sergeant


class Consumer(sergeant.Worker):
    """Squares numbers; leaves once no task came for a second."""

    def __init__(self, *, owner: str | None = None) -> None:
        idle = sergeant.Starvation(time_with_no_tasks=1.0)
        super().__init__(
            config=sergeant.WorkerConfig(name="numbers", tasks_per_transaction=10,
                                         starvation=idle),
            broker=SqliteBroker(os.environ["EXAMPLE_DB"]), codec=PickleCodec(),
            executor=SerialExecutor(), watchdog=NullWatchdog(), owner=owner,
        )  # fmt: skip
        self.done = 0

    def work(self, task: sergeant.Task) -> Any:
        time.sleep(0.005)  # pretend to work
        self.done += 1
        return task.kwargs["n"] ** 2

    def on_starvation(self, time_with_no_tasks: float) -> None:
        self.request_stop()  # exit code 0: the supervisor retires this worker

    def finalize(self) -> None:
        print(f"worker pid {os.getpid()} squared {self.done} numbers", flush=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as directory:
        os.environ["EXAMPLE_DB"] = str(Path(directory) / "jobs.db")  # children too
        broker = SqliteBroker(os.environ["EXAMPLE_DB"])
        producer = sergeant.Producer(
            broker=broker, codec=PickleCodec(), queue="numbers"
        )
        producer.push_tasks([{"n": n} for n in range(1000)])

        here = Path(__file__).resolve()
        supervisor = Supervisor(f"{here.stem}:Consumer", SupervisionPolicy(workers=3),
                                cwd=here.parent)  # fmt: skip
        supervisor.run()

        print(f"left in the queue: {producer.number_of_enqueued_tasks()}")


if __name__ == "__main__":
    main()
