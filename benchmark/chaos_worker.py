"""The worker the chaos run supervises, and the ledger it writes (not a test).

``ChaosWorker`` is a supervisor target (``benchmark.chaos_worker:ChaosWorker``):
each worker process builds one from environment variables set by
``benchmark.chaos``:

- ``SERGEANT_CHAOS_BROKER``: the broker URL (``sqlite:///...`` or ``redis://...``);
- ``SERGEANT_CHAOS_LEDGER``: the ledger, an SQLite file of its own;
- ``SERGEANT_HMAC_KEY``: the hex key of the signed pickle codec;
- ``SERGEANT_CHAOS_BATCH``: tasks per reserve (default 50);
- ``SERGEANT_CHAOS_WORK_MS``: milliseconds of simulated work per task (default 0),
  done after the ledger write.

The work is to record the task's id in the ledger, one row per run, in one
transaction per batch, **before** the batch is acked (``work_batch`` returns
before settlement). So a task acked is a task in the ledger, and a worker killed
between the two runs the batch again: a duplicate row, never a missing one. The
ledger is a separate file so that neither a broker restart nor a killed worker
can take it down with the queue.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sergeant.adapters.codecs import HmacSigner, PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.registry import broker_from_url
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import WorkerConfig
from sergeant.task import Task
from sergeant.worker import Worker

QUEUE = "chaos"
BROKER_VARIABLE = "SERGEANT_CHAOS_BROKER"
LEDGER_VARIABLE = "SERGEANT_CHAOS_LEDGER"
BATCH_VARIABLE = "SERGEANT_CHAOS_BATCH"
WORK_VARIABLE = "SERGEANT_CHAOS_WORK_MS"
KEY_VARIABLE = "SERGEANT_HMAC_KEY"


class Ledger:
    """Which task ids ran, one row per run, in an SQLite file shared by processes.

    Args:
        path: the ledger file; created with its table on first use.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE below).
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # A commit survives the process being killed (the OS holds the WAL);
        # only a power cut could take the last ones, which this run does not do.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS runs (task_id TEXT NOT NULL, owner TEXT)"
        )

    def record(self, task_ids: Iterable[str], owner: str) -> None:
        """Add one row per id, all in one transaction (all or none survive a kill)."""
        rows = [(task_id, owner) for task_id in task_ids]
        for attempt in range(100):
            try:
                self._db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError:  # busy past the timeout: try again
                time.sleep(min(0.01 * 2**attempt, 1.0))
        else:
            raise RuntimeError(f"the ledger {self.path} stayed locked")
        try:
            self._db.executemany("INSERT INTO runs VALUES (?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def runs(self) -> Counter[str]:
        """How many times each recorded task id ran."""
        rows = self._db.execute("SELECT task_id, count(*) FROM runs GROUP BY task_id")
        return Counter(dict(rows.fetchall()))

    def close(self) -> None:
        """Close the connection."""
        self._db.close()


class ChaosWorker(Worker):
    """Records every task it runs in the ledger before the batch is acked.

    Args:
        owner: the lease owner name (given by the supervisor).
    """

    def __init__(self, *, owner: str | None = None) -> None:
        super().__init__(
            broker=broker_from_url(os.environ[BROKER_VARIABLE]),
            codec=HmacSigner.from_env(PickleCodec(), KEY_VARIABLE),
            executor=SerialExecutor(),
            watchdog=NullWatchdog(),
            config=WorkerConfig(
                name=QUEUE,
                tasks_per_transaction=int(os.environ.get(BATCH_VARIABLE, "50")),
                # Short enough that a batch whose reserve reply was lost to a
                # Redis restart comes back soon; the worker renews held leases.
                lease=10.0,
                wait=0.5,
                max_deliveries=5,
            ),
            owner=owner,
        )
        self.ledger = Ledger(os.environ[LEDGER_VARIABLE])
        self.work_seconds = float(os.environ.get(WORK_VARIABLE, "0")) / 1000

    def work_batch(self, tasks: Sequence[Task]) -> Sequence[Any]:
        """Record the batch in the ledger; nothing is acked before this returns."""
        self.ledger.record((task.id for task in tasks), self.owner)
        if self.work_seconds:
            # After the ledger write: a kill now re-runs a recorded batch, which
            # is what at-least-once allows and what "ran more than once" counts.
            time.sleep(self.work_seconds * len(tasks))
        return [None] * len(tasks)

    def on_failure(self, task: Task, exception: BaseException) -> Any:
        """The ledger could not be written: run the task again, it must not drop."""
        return self.requeue(task)

    def finalize(self) -> None:
        """Close the ledger."""
        self.ledger.close()
