"""Stopping many workers: SIGTERM to the supervisor stops every worker gracefully.

Run it: ``python examples/stopping_many_workers.py`` (or start
``sergeant supervise ...`` and press Ctrl-C). Each worker finishes the task it is
running, gives back the tasks it reserved but did not start, and exits; a worker
still busy after ``stop_grace`` seconds is killed and its tasks released. Nothing
is left in flight, nothing is lost: what did not run is still queued.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.supervisor import SupervisionPolicy, Supervisor
from sergeant.adapters.watchdogs.null import NullWatchdog

import sergeant


class Encoder(sergeant.Worker):
    def __init__(self, *, owner: str | None = None) -> None:
        super().__init__(
            config=sergeant.WorkerConfig(name="videos", tasks_per_transaction=4),
            broker=SqliteBroker(os.environ["EXAMPLE_DB"]), codec=PickleCodec(),
            executor=SerialExecutor(), watchdog=NullWatchdog(), owner=owner,
        )  # fmt: skip

        self.done = 0

    def work(self, task: sergeant.Task) -> Any:
        time.sleep(0.3)  # a slow task
        self.done += 1

    def finalize(self) -> None:
        # One write per line: four processes share this pipe, and a line written
        # in one call (shorter than PIPE_BUF) is never split by another's.
        sys.stdout.write(f"worker pid {os.getpid()} encoded {self.done} videos\n")
        sys.stdout.flush()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as directory:
        os.environ["EXAMPLE_DB"] = str(Path(directory) / "jobs.db")
        producer = sergeant.Producer(broker=SqliteBroker(os.environ["EXAMPLE_DB"]),
                                     codec=PickleCodec(), queue="videos")  # fmt: skip
        producer.push_tasks([{"video": n} for n in range(500)])
        here = Path(__file__).resolve()
        policy = SupervisionPolicy(workers=4, stop_grace=10.0)
        supervisor = Supervisor(f"{here.stem}:Encoder", policy, cwd=here.parent)
        signalled: list[float] = []

        def terminate() -> None:  # what `kill -TERM <pid>` or systemd would do
            signalled.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Timer(2.0, terminate).start()
        supervisor.run()  # returns once every worker has stopped

        lengths = producer.queue_lengths()
        print(
            f"stopped 4 workers {time.monotonic() - signalled[0]:.1f} s after SIGTERM"
        )
        print(f"still queued {lengths.ready}, in flight {lengths.in_flight}")


if __name__ == "__main__":
    main()
