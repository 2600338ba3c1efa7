"""Ours against Celery, RQ, Dramatiq and Huey: same workload, interleaved.

For every peer and row, ours runs right before the peer with the same task
count, so drift on a shared machine hits both; the ratio of a row is the median
of ours over the median of the peer, both from those paired runs. A row where a
library is slow uses fewer tasks (about ``budget`` seconds of work at the rate in
its hints, at least 1,000), so the whole comparison fits in minutes.
"""

from __future__ import annotations

import math
import statistics

from . import _table
from ._runner import ROWS, SINGLE_ROWS, Contender, Runner
from ._venvs import OURS, Lib
from .redis import SECTION as REDIS_SECTION

SECTION = "peers"
MIN_TASKS = 1000


def contender(lib: Lib) -> Contender:
    """A peer runs with its own settings (delivery is ours' option only)."""
    return Contender(lib.key, lib.label, lib)


def ours_for(lib: Lib) -> Contender:
    """Ours, at-least-once, stored under a key paired with ``lib``."""
    return Contender(f"ours@{lib.key}", "ours, at-least-once", OURS)


def size(lib: Lib, row: str, tasks: int, single_tasks: int, budget: float) -> int:
    """Tasks for one row of ``lib``: the row's count, fewer when it is slow."""
    count = single_tasks if row in SINGLE_ROWS else tasks
    hint = lib.hints.get(row)
    if hint is None:
        return count
    sized = int(hint * budget) // 1000 * 1000
    return max(min(count, MIN_TASKS), min(count, sized))


def measure(
    runner: Runner,
    peers: list[Lib],
    *,
    tasks: int,
    single_tasks: int,
    repeat: int,
    latency_tasks: int,
    rate: float,
    budget: float,
) -> None:
    """Every peer, every row, ``repeat`` times: ours, then the peer."""
    for turn in range(repeat):
        runner.log(f"[peers] repeat {turn + 1}/{repeat}")
        for lib in peers:
            for row in ROWS:
                count = size(lib, row, tasks, single_tasks, budget)
                got = runner.measure(SECTION, contender(lib), row, count)
                if got is not None:
                    runner.measure(SECTION, ours_for(lib), row, count)
            runner.measure(SECTION, contender(lib), "latency", latency_tasks, rate=rate)
            runner.measure(SECTION, ours_for(lib), "latency", latency_tasks, rate=rate)


def report(runner: Runner, peers: list[Lib]) -> str:
    """One table per peer (with task counts and ratios), then a summary."""
    parts = []
    for lib in peers:
        ours, theirs = ours_for(lib).key, lib.key
        rows = []
        for row, (_, _, label) in ROWS.items():
            mine, other = (
                runner.median(SECTION, ours, row),
                runner.median(SECTION, theirs, row),
            )
            count = runner.tasks(SECTION, theirs, row)
            rows.append(
                [
                    label,
                    f"{count:,}" if count else "—",
                    _table.rate(mine),
                    _table.rate(other),
                    _table.ratio(mine, other),
                ]
            )
        for field, label in (
            ("p50_ms", "latency p50 (ms)"),
            ("p99_ms", "latency p99 (ms)"),
            ("idle_cpu_ms", "idle CPU over 2 s (ms)"),
        ):
            mine = runner.median(SECTION, ours, "latency", field)
            other = runner.median(SECTION, theirs, "latency", field)
            lower = _table.ratio(other, mine) if field != "idle_cpu_ms" else ""
            rows.append([label, "", _table.ms(mine), _table.ms(other), lower])
        header = [f"vs {lib.label}", "tasks", "ours", lib.label, "ours / peer"]
        parts.append(
            f"**{lib.label}** ({lib.settings})\n\n" + _table.table(header, rows)
        )
    parts.append(
        "Latency ratios are peer / ours (higher is better for ours); every other "
        "ratio is ours / peer.\n\n" + summary(runner, peers)
    )
    return "\n\n".join(parts)


def summary_values(runner: Runner, peers: list[Lib]) -> dict[str, dict[str, float]]:
    """Median tasks/s per library and row: ours over all its runs, 0.27 from
    the Redis section, each peer from its paired runs."""
    out: dict[str, dict[str, float]] = {}
    ours_keys = [("peers", ours_for(lib).key) for lib in peers]
    ours_keys.append((REDIS_SECTION, "ours"))
    out["sergeant (this)"] = {
        row: _pooled(runner, ours_keys, row) for row in (*ROWS, "latency")
    }
    old = {row: runner.median(REDIS_SECTION, "sergeant027", row) for row in ROWS}
    old["latency"] = runner.median(REDIS_SECTION, "sergeant027", "latency", "p99_ms")
    out["sergeant 0.27.0"] = old
    for lib in peers:
        values = {row: runner.median(SECTION, lib.key, row) for row in ROWS}
        values["latency"] = runner.median(SECTION, lib.key, "latency", "p99_ms")
        out[lib.label] = values
    return out


def _pooled(runner: Runner, keys: list[tuple[str, str]], row: str) -> float:
    field = "p99_ms" if row == "latency" else "rate"
    values = [
        m[field]
        for section, key in keys
        for m in runner.data.get((section, key, row), [])
    ]
    return statistics.median(values) if values else math.nan


def summary(runner: Runner, peers: list[Lib]) -> str:
    """All libraries side by side (tasks/s; latency p99 in ms)."""
    values = summary_values(runner, peers)
    header = ["median", *values]
    rows = []
    for row, (_, _, label) in ROWS.items():
        rows.append(
            [f"{label} (tasks/s)", *(_table.rate(v[row]) for v in values.values())]
        )
    rows.append(
        [
            "idle wake-up latency p99 (ms)",
            *(_table.ms(v["latency"]) for v in values.values()),
        ]
    )
    return _table.table(header, rows)
