"""Max retries: failed tasks are retried with back-off, then dead-lettered.

Run it: ``python examples/max_retries.py``. ``on_failure`` asks for a retry;
``WorkerConfig.max_retries`` caps them and ``retry`` sets the back-off. A task that
fails every time ends in the dead-letter store with the reason, where
``sergeant dead QUEUE --broker URL`` lists it and ``--replay`` pushes it back.
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


class Fetcher(sergeant.Worker):
    def work(self, task: sergeant.Task) -> Any:
        print(f"{task.kwargs['url']}: attempt {task.attempt}")
        if task.kwargs["url"] == "broken" or task.attempt < 2:
            raise ConnectionError("no route to host")
        return "fetched"

    def on_failure(self, task: sergeant.Task, exception: BaseException) -> Any:
        return self.retry(task)  # back-off from config.retry

    def on_success(self, task: sergeant.Task, returned_value: Any) -> None:
        print(f"{task.kwargs['url']}: {returned_value}")

    def on_max_retries(self, task: sergeant.Task) -> None:
        print(f"{task.kwargs['url']}: giving up after {task.attempt} retries")

    def on_starvation(self, time_with_no_tasks: float) -> None:
        self.request_stop()


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        broker = SqliteBroker(str(Path(directory) / "jobs.db"))
        worker = Fetcher(
            config=sergeant.WorkerConfig(
                name="fetch", max_retries=3, wait=0.1,
                retry=sergeant.RetryPolicy(base_delay=0.05, factor=2.0),
                starvation=sergeant.Starvation(time_with_no_tasks=1.0),
            ),
            broker=broker, codec=PickleCodec(), executor=SerialExecutor(),
            watchdog=NullWatchdog(),
        )  # fmt: skip
        worker.push_tasks([{"url": "flaky"}, {"url": "broken"}])
        worker.run()

        for letter in broker.dead_letters("fetch"):
            print(f"dead letter: {letter.reason}")
        broker.close()


if __name__ == "__main__":
    main()
