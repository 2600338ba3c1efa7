"""How ours scales: 1, 2 and 4 worker processes, one Redis node or three, and the
SQLite and memory brokers, draining in batches of 1,000 at least once.

Each row fills the queue (untimed), then drains it with K worker processes that
stop when the queue is empty; the time runs from the first task start in any
worker to the last worker's end, and the count of tasks run must equal the count
pushed with nothing left in the queue. On a 2-core machine more than two workers
(plus redis-server) only share the same cores.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from . import _table
from ._redis_server import RedisServer
from ._runner import Contender, Runner
from ._venvs import OURS

SECTION = "scaling"
WORKERS = (1, 2, 4)


def _rows(one: str, three: str, sqlite: str) -> list[tuple[str, str, int]]:
    rows = [(f"Redis, 1 node, {k} worker{'s' * (k > 1)}", one, k) for k in WORKERS]
    rows += [(f"Redis, 3 nodes, {k} worker{'s' * (k > 1)}", three, k) for k in WORKERS]
    rows += [
        ("SQLite (temporary file), 1 worker", sqlite, 1),
        ("memory (in-process), 1 worker", "memory:", 0),
    ]
    return rows


def measure(runner: Runner, *, tasks: int, repeat: int) -> list[str]:
    """Run every row ``repeat`` times; return the row labels in order."""
    extra = [RedisServer.started() for _ in range(2)]
    folder = tempfile.TemporaryDirectory(prefix="sergeant-bench-")
    try:
        nodes = [runner.server, *extra]
        three = ",".join(server.url for server in nodes)
        sqlite = f"sqlite:///{Path(folder.name) / 'bench.db'}"
        rows = _rows(runner.server.url, three, sqlite)
        for turn in range(repeat):
            runner.log(f"[scaling] repeat {turn + 1}/{repeat}")
            for label, url, workers in rows:
                for server in nodes:
                    server.flush()
                (Path(folder.name) / "bench.db").unlink(missing_ok=True)
                who = Contender(label, label, OURS)
                runner.measure(
                    SECTION, who, "drain_1000", tasks, url=url, workers=workers
                )
    finally:
        for server in extra:
            server.stop()
        folder.cleanup()
    return [label for label, _, _ in rows]


def report(runner: Runner, labels: list[str]) -> str:
    """The scaling rows as a table."""
    base = runner.median(SECTION, labels[0], "drain_1000")
    rows = []
    for label in labels:
        value = runner.median(SECTION, label, "drain_1000")
        count = runner.tasks(SECTION, label, "drain_1000")
        rows.append(
            [label, f"{count:,}", _table.rate(value), _table.ratio(value, base)]
        )
    header = [
        "drain, batches of 1,000, at least once (median)",
        "tasks",
        "tasks/s",
        "vs 1 node, 1 worker",
    ]
    return _table.table(header, rows)
