"""Runs driver processes, checks what they report, and keeps every measurement.

A measurement is one driver process doing one operation (see
``peers/_common.py``) against a freshly flushed server. One that crashes, times
out, or reports fewer tasks done than pushed is an error: it is recorded (the
run goes on, so one broken peer does not hide the others) and the command exits
non-zero at the end.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from ._redis_server import RedisServer
from ._venvs import DRIVERS, HERE, Lib

# Rows of the throughput tables: key -> (operation, batch, label).
ROWS: dict[str, tuple[str, int, str]] = {
    "push_single": ("push_single", 1, "push, one by one"),
    "push_bulk": ("push_bulk", 1, "push, bulk (1,000 per call)"),
    "drain_1": ("drain", 1, "drain, one at a time"),
    "drain_1000": ("drain", 1000, "drain, batches of 1,000"),
}
SINGLE_ROWS = ("push_single", "drain_1")


@dataclass(frozen=True)
class Contender:
    """A library with the options it runs under (ours runs in two modes)."""

    key: str
    label: str
    lib: Lib
    delivery: str = "at_least_once"


@dataclass
class Runner:
    """Runs measurements against ``server`` and stores them by (section, key, row)."""

    server: RedisServer
    verbose: bool = True
    errors: list[str] = field(default_factory=list)
    data: dict[tuple[str, str, str], list[dict[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    # Which repeat the measurements being taken belong to (set by a section's
    # loop): contenders measured in the same turn ran back to back, so their
    # ratio is less exposed to a machine that slows down for a while.
    turn: int = 0

    def log(self, text: str) -> None:
        """Progress goes to stderr; the tables go to stdout."""
        if self.verbose:
            print(text, file=sys.stderr, flush=True)

    def measure(
        self,
        section: str,
        who: Contender,
        row: str,
        tasks: int,
        *,
        url: str | None = None,
        workers: int = 0,
        rate: float = 100.0,
    ) -> dict[str, Any] | None:
        """Run one measurement; store and return its result (None: error/skip)."""
        if row == "latency":
            op, batch = "latency", 1
        else:
            op, batch = ROWS[row][0], ROWS[row][1]
        if url is None:
            self.server.flush()
            url = self.server.url
        argv = [
            who.lib.python, str(who.lib.script),
            "--url", url, "--queue", f"bench-{uuid.uuid4().hex[:8]}",
            "--op", op, "--tasks", str(tasks), "--batch", str(batch),
            "--delivery", who.delivery, "--workers", str(workers),
            "--rate", str(rate),
        ]  # fmt: skip
        result = self._run(argv, who, row, tasks, rate)
        if result is None or "skip" in result:
            return None
        result["tasks"] = tasks
        result["turn"] = self.turn
        self.data[(section, who.key, row)].append(result)
        shown = (
            f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
            f"idle CPU {result['idle_cpu_ms']:.0f} ms"
            if row == "latency"
            else f"{result['rate']:,.0f} tasks/s"
        )
        self.log(f"  {section:8} {who.label:24} {row:12} x{tasks:<7,} {shown}")
        return result

    def _run(
        self, argv: list[str], who: Contender, row: str, tasks: int, rate: float
    ) -> dict[str, Any] | None:
        name = f"{who.label} {row} ({tasks:,} tasks)"
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if not who.lib.requirements and not who.lib.interpreter:
            env["PYTHONPATH"] = str(HERE.parent)  # ours: this repository's packages
        budget = 120 + tasks / 100 + (tasks / rate if row == "latency" else 0)
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=budget, env=env,
                cwd=DRIVERS, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return self._fail(f"{name}: no result after {budget:.0f} s")
        result = _last_result(done.stdout)
        if done.returncode or result is None:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return self._fail(f"{name}: exit {done.returncode}: {' | '.join(tail)}")
        if "skip" not in result and result.get("done") != tasks:
            return self._fail(f"{name}: {result.get('done')} tasks done, not {tasks}")
        return result

    def _fail(self, message: str) -> None:
        self.errors.append(message)
        self.log(f"  ERROR {message}")

    def median(self, section: str, key: str, row: str, field: str = "rate") -> float:
        """Median of ``field`` over the stored repeats (nan when none)."""
        values = [m[field] for m in self.data.get((section, key, row), [])]
        return statistics.median(values) if values else float("nan")

    def ratios(self, section: str, key: str, other: str, row: str) -> list[float]:
        """``key`` / ``other`` in each repeat where both were measured.

        The spread of these shows how far a median ratio can be trusted on a
        machine whose speed drifts (a shared VM's can by 25% within a run).
        """
        found = self.data.get((section, other, row), [])
        theirs = {m["turn"]: m["rate"] for m in found}
        return [
            m["rate"] / theirs[m["turn"]]
            for m in self.data.get((section, key, row), [])
            if theirs.get(m["turn"])
        ]

    def tasks(self, section: str, key: str, row: str) -> int:
        """How many tasks the stored measurements of a row used (0: none)."""
        found = self.data.get((section, key, row), [])
        return int(found[0]["tasks"]) if found else 0


def _last_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith('{"result"'):
            result: dict[str, Any] = json.loads(line)["result"]
            return result
    return None
