"""A worker guarded by a ProcessWatchdog, for supervisor runs in real processes.

Children import this module afresh (``tests.adapters.watchdog_workers:...``) with
the repository root as working directory, and take their files from the
environment: ``WD_BROKER`` (the SQLite file) and ``WD_LEDGER`` (a directory where
each process appends lines, with ``os.write`` so they survive a SIGKILL).

A task's ``do`` picks what it does past its deadline: ``spin`` (pure Python),
``regex`` (catastrophic backtracking in C), ``sleep`` (a blocking call), ``c_loop``
(an endless C loop that holds the GIL and never looks at signals), ``swallow``
(catches ``TaskTimedOut`` and carries on), or nothing (returns at once).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from pathlib import Path

from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.watchdogs.processes import ProcessWatchdog

from sergeant.config import Starvation, Timeouts, WorkerConfig
from sergeant.errors import TaskTimedOut
from sergeant.task import Task
from sergeant.worker import Worker

QUEUE = "guarded"
TIMEOUT = 0.3
GRACE = 0.5


def _spin_forever() -> None:
    while True:
        pass


class GuardedWorker(Worker):
    """Logs ``start``, ``done`` and ``timeout`` lines; misbehaves on request."""

    def __init__(self, *, owner: str) -> None:
        super().__init__(
            broker=SqliteBroker(os.environ["WD_BROKER"]),
            codec=PickleCodec(),
            executor=SerialExecutor(),
            watchdog=ProcessWatchdog(),
            config=WorkerConfig(
                name=QUEUE,
                timeouts=Timeouts(timeout=TIMEOUT, grace_period=GRACE),
                starvation=Starvation(time_with_no_tasks=1.0),
                max_deliveries=1,  # one hard kill and the task is dead-lettered
                wait=0.1,
                lease=60.0,  # far off: a killed task must come back by release
            ),
            owner=owner,
        )
        path = Path(os.environ["WD_LEDGER"]) / f"ledger-{os.getpid()}.txt"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if os.environ.get("WD_START"):  # the killer started by the factory
            self.watchdog.start()  # type: ignore[attr-defined]

    def line(self, *words: object) -> None:
        os.write(self._fd, (" ".join(map(str, words)) + "\n").encode())

    def work(self, task: Task) -> None:
        n, action = task.kwargs["n"], task.kwargs.get("do")
        self.line("start", n, time.monotonic(), os.getpid())
        if action == "spin":
            _spin_forever()
        elif action == "regex":
            re.match(r"(a+)+$", "a" * 40 + "b")
        elif action == "sleep":
            time.sleep(60.0)
        elif action == "c_loop":
            any(itertools.repeat(False))
        elif action == "swallow":
            try:
                _spin_forever()
            except TaskTimedOut:
                self.line("swallowed", n, time.monotonic())
            _spin_forever()
        self.line("done", n)

    def on_timeout(self, task: Task) -> None:
        self.line("timeout", task.kwargs["n"], time.monotonic())

    def on_starvation(self, time_with_no_tasks: float) -> None:
        self.request_stop()


def guarded_worker(*, owner: str) -> GuardedWorker:
    """The target the supervisor starts (``watchdog_workers:guarded_worker``)."""
    return GuardedWorker(owner=owner)


def read_lines(directory: Path) -> list[list[str]]:
    """Every ledger line of every process, split into words."""
    lines: list[list[str]] = []
    for path in sorted(directory.glob("ledger-*.txt")):
        lines += [line.split() for line in path.read_text().splitlines()]
    return lines
