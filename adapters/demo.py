"""``sergeant demo``: a batch of tasks in an SQLite file drained by supervised workers.

The README's "run it" command: nothing to install or configure. ``run_demo`` pushes
the tasks, starts a ``Supervisor`` over ``DemoWorker`` processes, prints progress
about once a second and a summary at the end. ``DemoWorker`` does a tiny hash per
task and fails a small deterministic fraction, so that the summary shows retries
(every ``RETRY_EVERY``-th task fails its first attempt) and a dead letter or two
(tasks with ``n % DEAD_EVERY == 7`` always fail and exhaust their retries).

Each worker process counts what it did and writes the counts into a ``demo_stats``
table of the same file when it stops; that is where the summary's retries come
from (the queue lengths give the rest).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from sergeant.config import RetryPolicy, WorkerConfig
from sergeant.errors import ConfigError
from sergeant.producer import Producer
from sergeant.supervision import SupervisionPolicy
from sergeant.task import Task
from sergeant.worker import Worker

from .codecs.pickle import PickleCodec
from .executors.serial import SerialExecutor
from .sqlite import SqliteBroker
from .supervisor import Supervisor
from .watchdogs.null import NullWatchdog

QUEUE = "demo"
#: The environment variable naming the database file, for the worker processes.
PATH_VARIABLE = "SERGEANT_DEMO_DB"
RETRY_EVERY = 100
DEAD_EVERY = 10_007
STALL_SECONDS = 30.0

CONFIG = WorkerConfig(
    name=QUEUE,
    tasks_per_transaction=100,
    max_retries=2,
    retry=RetryPolicy(base_delay=0.05, max_delay=0.2),
    wait=0.5,
)


class DemoWorker(Worker):
    """Hashes ``n``; fails some tasks on purpose (see the module docstring).

    Args:
        owner: the lease owner name (given by the supervisor).
        path: the SQLite file; defaults to ``$SERGEANT_DEMO_DB``.
    """

    def __init__(self, *, owner: str | None = None, path: str | None = None) -> None:
        path = path or os.environ.get(PATH_VARIABLE)
        if not path:
            raise ConfigError(f"DemoWorker needs path= or ${PATH_VARIABLE}")
        super().__init__(
            broker=SqliteBroker(path),
            codec=PickleCodec(),
            executor=SerialExecutor(),
            watchdog=NullWatchdog(),
            config=CONFIG,
            owner=owner,
        )
        self.path = path
        self.counts = {"done": 0, "retried": 0, "dead": 0}

    def work(self, task: Task) -> str:
        """A tiny hash; raises for the tasks chosen to fail."""
        n = task.kwargs["n"]
        if n % DEAD_EVERY == 7:
            raise ValueError(f"task {n} always fails (a demo dead letter)")
        if n % RETRY_EVERY == 0 and task.attempt == 0:
            raise ValueError(f"task {n} fails its first attempt (a demo retry)")
        return hashlib.blake2b(str(n).encode(), digest_size=8).hexdigest()

    def on_failure(self, task: Task, exception: BaseException) -> Any:
        """Every failure is retried, up to ``max_retries``."""
        return self.retry(task)

    def on_success(self, task: Task, returned_value: Any) -> None:
        """Count it."""
        self.counts["done"] += 1

    def on_retry(self, task: Task, delay: float) -> None:
        """Count it."""
        self.counts["retried"] += 1

    def on_max_retries(self, task: Task) -> None:
        """Count it."""
        self.counts["dead"] += 1

    def finalize(self) -> None:
        """Write this process's counts for the summary."""
        with _stats(self.path) as connection:
            connection.execute(
                "INSERT OR REPLACE INTO demo_stats VALUES (?, ?, ?, ?)",
                (self.owner, *self.counts.values()),
            )


@contextlib.contextmanager
def _stats(path: str) -> Iterator[sqlite3.Connection]:
    """A connection to the ``demo_stats`` table, in one transaction, then closed."""
    connection = sqlite3.connect(path, timeout=30.0)
    try:
        with connection:  # commits, or rolls back on error
            connection.execute(
                "CREATE TABLE IF NOT EXISTS demo_stats (owner TEXT PRIMARY KEY,"
                " done INTEGER, retried INTEGER, dead INTEGER)"
            )
            yield connection
    finally:
        connection.close()


def run_demo(
    *, tasks: int, workers: int, path: str | None, out: TextIO, tick: float = 1.0
) -> int:
    """Push ``tasks`` tasks, drain them with ``workers`` processes; return 0 or 1.

    Without ``path`` the file lives in a temporary directory removed at the end.
    """
    if path is not None:
        return _demo_in(Path(path), tasks=tasks, workers=workers, out=out, tick=tick)
    with tempfile.TemporaryDirectory(prefix="sergeant-demo-") as directory:
        file = Path(directory) / "demo.db"
        return _demo_in(file, tasks=tasks, workers=workers, out=out, tick=tick)


def _demo_in(path: Path, *, tasks: int, workers: int, out: TextIO, tick: float) -> int:
    broker = SqliteBroker(str(path))
    producer = Producer(broker=broker, codec=PickleCodec(), queue=QUEUE)
    broker.purge(QUEUE)  # a reused --path starts afresh
    broker.purge_dead(QUEUE)
    with _stats(str(path)) as connection:
        connection.execute("DELETE FROM demo_stats")
    started = time.monotonic()
    producer.push_tasks([{"n": n} for n in range(tasks)])
    print(
        f"pushed {tasks:,} tasks to {path} in {time.monotonic() - started:.2f} s; "
        f"draining with {workers} worker processes",
        file=out,
        flush=True,
    )
    # For the supervisor's probe and the children, which run in the file's folder:
    # ``python -m`` puts the children's working directory first on sys.path, and
    # in a checkout of sergeant its ``sergeant/`` folder (the core alone) would hide
    # the installed package and its adapters.
    os.environ[PATH_VARIABLE] = str(path.resolve())
    supervisor = Supervisor(
        f"{__name__}:DemoWorker",
        SupervisionPolicy(workers=workers, stop_grace=10.0),
        log_level="ERROR",  # per-task failures are the point, not news
        handle_signals=False,  # it runs in a thread; Ctrl-C lands here
        cwd=path.resolve().parent,
    )
    thread = threading.Thread(target=supervisor.run, name="sergeant-demo-supervisor")
    started = time.monotonic()
    thread.start()
    try:
        seconds = _watch(producer, tasks, started, out, tick)
    finally:
        supervisor.request_stop()
        thread.join()
    if seconds is None:
        print(
            f"sergeant demo: no progress for {STALL_SECONDS:.0f} s; giving up "
            "(see the workers' messages above)",
            file=out,
        )
        return 1
    _summary(producer, str(path), tasks, seconds, out)
    broker.close()
    return 0


def _watch(
    producer: Producer, total: int, started: float, out: TextIO, tick: float
) -> float | None:
    """Print progress every ``tick`` s until the queue is drained or stalls.

    Returns the seconds it took to drain, or None when no task was settled for
    ``STALL_SECONDS``. The queue is looked at ten times a tick, so the time is
    accurate to a tenth of one.
    """
    last_settled, last_change, next_print = -1, started, started + tick
    while True:
        time.sleep(tick / 10)
        lengths = producer.queue_lengths()
        pending = lengths.ready + lengths.delayed + lengths.in_flight
        settled, now = total - pending, time.monotonic()
        if pending == 0 or now >= next_print:
            next_print += tick
            print(
                f"[{now - started:6.1f} s] settled {settled:>9,} of {total:,}  "
                f"ready {lengths.ready:,}  in flight {lengths.in_flight:,}  "
                f"delayed {lengths.delayed:,}  dead {lengths.dead:,}",
                file=out,
                flush=True,
            )
        if pending == 0:
            return now - started
        if settled != last_settled:
            last_settled, last_change = settled, now
        elif now - last_change > STALL_SECONDS:
            return None


def _summary(
    producer: Producer, path: str, tasks: int, seconds: float, out: TextIO
) -> None:
    with _stats(path) as connection:
        row = connection.execute(
            "SELECT count(*), sum(retried) FROM demo_stats"
        ).fetchone()
    processes, retried = row[0], row[1] or 0
    dead = producer.queue_lengths().dead
    print(
        "\nsummary\n"
        f"  tasks      {tasks:,}\n"
        f"  seconds    {seconds:.2f}\n"
        f"  tasks/s    {tasks / seconds:,.0f}\n"
        f"  retries    {retried:,}\n"
        f"  dead       {dead:,}\n"
        f"  processes  {processes} worker processes reported",
        file=out,
        flush=True,
    )


__all__ = ["DemoWorker", "run_demo"]
