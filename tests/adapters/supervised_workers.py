"""Worker targets that the supervisor tests start in real child processes.

Children import this module afresh (``tests.adapters.supervised_workers:...``) with
the repository root as their working directory, and learn their files and settings
from environment variables the test passes to the supervisor:

- ``SUP_BROKER``: the SQLite broker file; ``SUP_LEDGER``: a directory where each
  process appends one line per task it ran (``ledger-<pid>.txt``) and one line per
  task it received again after a crash (``redelivered-<pid>.txt``). Per-process
  append-only files keep the ledger free of write contention, and a line written
  with ``os.write`` survives a SIGKILL.
- ``SUP_BATCH`` (tasks per reserve), ``SUP_STARVE`` (seconds without tasks after
  which a worker stops itself, so ``Supervisor.run`` returns once the queue is
  drained), ``SUP_MAX_DELIVERIES``; ``SUP_SLOW_RELEASE`` (seconds each
  ``release_owner`` sleeps first, as over a broker riding out an outage: only the
  supervisor's releaser calls it).

A task's kwargs drive it: ``n`` (its number in the ledger), ``sleep`` (seconds),
``hog_mb`` (allocate that many MiB), ``hold`` (seconds to sit on them), ``keep``
(never free them: the process stays big), ``exit`` (crash with that exit code).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import Starvation, WorkerConfig
from sergeant.protocols import Delivery
from sergeant.task import Task
from sergeant.worker import Worker

QUEUE = "jobs"
_KEPT: list[bytes] = []


class _Appender:
    """One line per call to a per-process file, unbuffered (survives SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def line(self, text: str) -> None:
        os.write(self._fd, f"{text}\n".encode())


class _RedeliveryRecorder:
    """Wraps the broker: notes every task handed out more than once."""

    def __init__(self, inner: SqliteBroker, out: _Appender) -> None:
        self._inner = inner
        self._out = out
        self._codec = PickleCodec()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def release_owner(self, queue: str, owner: str) -> int:
        time.sleep(float(os.environ.get("SUP_SLOW_RELEASE", "0")))
        released: int = self._inner.release_owner(queue, owner)
        return released

    def reserve(self, queue: str, **kwargs: Any) -> list[Delivery]:
        got: Sequence[Delivery] = self._inner.reserve(queue, **kwargs)
        for delivery in got:
            if delivery.deliveries > 1:
                task = self._codec.decode(delivery.payload)
                self._out.line(f"{task.kwargs['n']} {delivery.deliveries}")
        return list(got)


class LedgerWorker(Worker):
    """Writes each task's number to the ledger; sleeps or hogs memory on request."""

    def __init__(self, *, owner: str) -> None:
        if os.environ.get("SUP_RECYCLE_AT_START"):  # as a supervisor would, early
            os.kill(os.getpid(), signal.SIGUSR1)
        if os.environ.get("SUP_SLOW_START"):  # a factory that hangs a while
            time.sleep(float(os.environ["SUP_SLOW_START"]))
        ledger = Path(os.environ["SUP_LEDGER"])
        pid = os.getpid()
        # Any: the recorder is a Broker by delegation, which mypy cannot see.
        broker: Any = _RedeliveryRecorder(
            SqliteBroker(os.environ["SUP_BROKER"]),
            _Appender(ledger / f"redelivered-{pid}.txt"),
        )
        super().__init__(
            broker=broker,
            codec=PickleCodec(),
            executor=SerialExecutor(),
            watchdog=NullWatchdog(),
            config=WorkerConfig(
                name=QUEUE,
                tasks_per_transaction=int(os.environ.get("SUP_BATCH", "20")),
                starvation=Starvation(
                    time_with_no_tasks=float(os.environ.get("SUP_STARVE", "1.5"))
                ),
                max_deliveries=int(os.environ.get("SUP_MAX_DELIVERIES", "5")),
                wait=0.2,
                lease=60.0,
            ),
            owner=owner,
        )
        self._ledger = _Appender(ledger / f"ledger-{pid}.txt")

    def work(self, task: Task) -> None:
        kwargs = task.kwargs
        if kwargs.get("exit") is not None:
            os._exit(kwargs["exit"])  # a crash: no cleanup, no settlement
        if kwargs.get("hog_mb"):
            block = b"x" * (kwargs["hog_mb"] * 2**20)  # filled, so resident
            if kwargs.get("keep"):
                _KEPT.append(block)
            time.sleep(kwargs.get("hold", 0.0))
            del block
        if kwargs.get("sleep"):
            time.sleep(kwargs["sleep"])
        self._ledger.line(str(kwargs["n"]))

    def on_starvation(self, time_with_no_tasks: float) -> None:
        self.request_stop()


def ledger_worker(*, owner: str) -> LedgerWorker:
    """The factory form of the target (``supervised_workers:ledger_worker``)."""
    return LedgerWorker(owner=owner)


def read_ledger(directory: Path, prefix: str = "ledger") -> list[int]:
    """Every task number written by every process, duplicates included."""
    numbers: list[int] = []
    for path in sorted(directory.glob(f"{prefix}-*.txt")):
        numbers += [int(line.split()[0]) for line in path.read_text().splitlines()]
    return numbers
