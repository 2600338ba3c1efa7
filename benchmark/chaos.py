"""The chaos run: push N tasks, kill things while they drain, prove none was lost.

Run from the repository root (not a test; ``tests/test_chaos.py`` runs a short one)::

    python -m benchmark.chaos --broker redis            # 200,000 tasks, 20 kills
    python -m benchmark.chaos --broker sqlite --tasks 20000 --kills 3

A producer pushes N tasks with unique ids, signed (``HmacSigner(PickleCodec())``),
while ``sergeant supervise benchmark.chaos_worker:ChaosWorker --workers 4`` (the
real command, in its own process) drains them; each run of a task is written to a
ledger, a separate SQLite file, before the task is acked. Meanwhile a chaos loop,
bounded in count and in time:

- SIGKILLs a random worker process, ``--kills`` times, at least ``--interval``
  seconds apart;
- SIGKILLs ``redis-server`` once and starts it again on the same port and files
  (``--broker redis``); it runs with ``appendonly yes`` and ``appendfsync always``,
  so every write Redis acknowledged (a push, an ack) is on disk before the reply.
  With ``everysec`` a crash may drop the last second of acknowledged pushes:
  that would be a lost task, and this run would report it;
- sends SIGTERM to the whole supervisor once, and starts it again.

Events are spread over the drain (event *i* of *E* waits until *i/(E+1)* of the
tasks are settled) so that they hit a busy queue; each is logged with the number
of tasks still pending. At the end it prints pushed, ran at least once, ran more
than once, lost (pushed, never in the ledger and not dead-lettered: must be 0),
dead-lettered with reasons, and the wall time. Exit code 0 only when lost is 0
and the queue drained within ``--time-limit``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TextIO

import psutil
from sergeant.adapters.codecs import HmacSigner, PickleCodec
from sergeant.adapters.registry import broker_from_url

from sergeant.errors import BrokerError, DecodeError
from sergeant.protocols import Broker, SupportsInspection
from sergeant.task import Task

from . import chaos_worker as cw
from ._redis_server import RedisServer, run_cli

REPO = Path(__file__).resolve().parents[1]
TARGET = "benchmark.chaos_worker:ChaosWorker"
PUSH_CHUNK = 5_000
STOP_GRACE = 15.0


@dataclasses.dataclass(frozen=True)
class Options:
    """What to run: the broker, the load and the chaos."""

    broker: str
    tasks: int = 200_000
    kills: int = 20
    workers: int = 4
    interval: float = 2.0
    batch: int = 50
    work_ms: float = 2.0
    time_limit: float = 1800.0
    seed: int | None = None


@dataclasses.dataclass
class Result:
    """What the run found; ``lost`` must be 0."""

    broker: str
    pushed: int
    ran: int
    ran_more_than_once: int
    lost: int
    dead: Counter[str]
    wall: float
    drained: bool
    pending: int
    events: list[str]

    @property
    def ok(self) -> bool:
        """No task lost, and the queue drained in time."""
        return self.lost == 0 and self.drained


class _Run:
    """One chaos run in a temporary directory; ``cleanup`` stops what it started."""

    def __init__(self, options: Options, directory: Path, out: TextIO) -> None:
        self.options = options
        self.directory = directory
        self.out = out
        self.rng = random.Random(options.seed)
        key = secrets.token_hex(32)
        self.codec = HmacSigner(PickleCodec(), key=bytes.fromhex(key))
        self.redis: RedisServer | None = None
        if options.broker == "redis":
            self.redis = RedisServer(directory / "redis", appendonly=True)
            self.redis.start()
            self.url = self.redis.url
        else:
            self.url = f"sqlite:///{directory / 'broker.db'}"
        self.ledger_path = directory / "ledger.db"
        cw.Ledger(self.ledger_path).close()  # the table exists before any worker
        self.env = {
            **os.environ,
            cw.BROKER_VARIABLE: self.url,
            cw.LEDGER_VARIABLE: str(self.ledger_path),
            cw.KEY_VARIABLE: key,
            cw.BATCH_VARIABLE: str(options.batch),
            cw.WORK_VARIABLE: str(options.work_ms),
        }
        self.broker: Broker = broker_from_url(self.url)
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.log = (directory / "supervisor.log").open("ab")
        self.pushed_ids: list[str] = []
        self.push_error: BaseException | None = None
        self.events: list[str] = []
        self.started = time.monotonic()

    # -- processes -------------------------------------------------------------

    def start_supervisor(self) -> None:
        command = [
            sys.executable, "-m", "sergeant.adapters.cli", "supervise", TARGET,
            "--workers", str(self.options.workers),
            "--stop-grace", str(STOP_GRACE), "--log-level", "WARNING",
        ]  # fmt: skip
        self.supervisor = subprocess.Popen(
            command, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=self.log,
        )  # fmt: skip

    def stop_supervisor(self) -> None:
        process, self.supervisor = self.supervisor, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE + 30)
        except subprocess.TimeoutExpired:
            self.note("the supervisor ignored SIGTERM for too long: SIGKILL")
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            process.wait()

    def cleanup(self) -> None:
        self.stop_supervisor()
        self.broker.close()
        if self.redis is not None:
            self.redis.stop()
        self.log.close()

    # -- the producer ------------------------------------------------------------

    def push_all(self) -> None:
        """Push every task in chunks; a failed chunk is pushed again, same ids."""
        broker = broker_from_url(self.url)
        try:
            for start in range(0, self.options.tasks, PUSH_CHUNK):
                stop = min(self.options.tasks, start + PUSH_CHUNK)
                tasks = [
                    Task(kwargs={"n": n}, queue=cw.QUEUE) for n in range(start, stop)
                ]
                payloads = [self.codec.encode(task) for task in tasks]
                while True:
                    try:
                        broker.push(cw.QUEUE, payloads)
                        break
                    except BrokerError as error:
                        self.note(f"push failed, pushing the chunk again: {error}")
                        time.sleep(0.5)
                self.pushed_ids.extend(task.id for task in tasks)
        except BaseException as error:
            self.push_error = error
            raise
        finally:
            broker.close()

    # -- chaos ---------------------------------------------------------------------

    def note(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:7.1f} s] {text}"
        self.events.append(line)
        print(line, file=self.out, flush=True)

    def pending(self) -> int | None:
        """Tasks not settled yet (ready, delayed or leased); None if unreachable."""
        try:
            lengths = self.broker.lengths(cw.QUEUE)
        except BrokerError:
            return None
        return lengths.ready + lengths.delayed + lengths.in_flight

    def schedule(self) -> list[str]:
        """The events in order: kills, with the restarts a third and two thirds in."""
        events = ["kill"] * self.options.kills
        events.insert(2 * len(events) // 3, "supervisor")
        if self.redis is not None:
            events.insert(len(events) // 3, "redis")
        return events

    def fire(self, event: str, pending: int | None) -> None:
        waiting = "?" if pending is None else f"{pending:,}"
        if event == "kill":
            self.kill_a_worker(waiting)
        elif event == "redis" and self.redis is not None:
            began = time.monotonic()
            self.redis.kill()
            self.redis.start()
            took = time.monotonic() - began
            self.note(f"SIGKILL redis-server, started again in {took:.1f} s "
                      f"({waiting} pending)")  # fmt: skip
        elif event == "supervisor":
            began = time.monotonic()
            self.stop_supervisor()
            self.start_supervisor()
            took = time.monotonic() - began
            self.note(f"SIGTERM the supervisor, started again after {took:.1f} s "
                      f"({waiting} pending)")  # fmt: skip

    def kill_a_worker(self, waiting: str) -> None:
        give_up = time.monotonic() + 10
        while time.monotonic() < give_up and self.supervisor is not None:
            workers = [
                child
                for child in psutil.Process(self.supervisor.pid).children()
                if "sergeant.adapters.child" in " ".join(_cmdline(child))
            ]
            if workers:
                victim = self.rng.choice(workers)
                os.kill(victim.pid, signal.SIGKILL)
                self.note(f"SIGKILL worker pid {victim.pid} ({waiting} pending)")
                return
            time.sleep(0.1)  # all respawning: wait for one
        self.note("no worker alive to kill within 10 s")

    def loop(self, pusher: threading.Thread) -> tuple[bool, int]:
        """Fire the events, then wait for the drain; return (drained, pending)."""
        events = self.schedule()
        deadline = self.started + self.options.time_limit
        last = time.monotonic()
        fired = 0
        pending: int | None = None
        while time.monotonic() < deadline:
            time.sleep(0.2)
            pending = self.pending()
            if fired < len(events):
                settled = 0 if pending is None else len(self.pushed_ids) - pending
                share = (fired + 1) / (len(events) + 1)
                spaced = time.monotonic() - last >= self.options.interval
                if spaced and settled >= share * self.options.tasks:
                    self.fire(events[fired], pending)
                    fired += 1
                    last = time.monotonic()
            elif not pusher.is_alive() and pending == 0:
                return True, 0
            if self.push_error is not None:
                break
        return False, -1 if pending is None else pending

    def tally(self, drained: bool, pending: int, wall: float) -> Result:
        ledger = cw.Ledger(self.ledger_path)
        runs = ledger.runs()
        ledger.close()
        pushed = set(self.pushed_ids)
        dead_ids: set[str] = set()
        reasons: Counter[str] = Counter()
        if isinstance(self.broker, SupportsInspection):
            for letter in self.broker.dead_letters(cw.QUEUE, limit=len(pushed) + 1):
                reasons[letter.reason] += 1
                # Not one of ours (undecodable): it accounts for no pushed task.
                with contextlib.suppress(DecodeError):
                    dead_ids.add(self.codec.decode(letter.payload).id)
        ran = pushed & set(runs)
        return Result(
            broker=self.options.broker,
            pushed=len(pushed),
            ran=len(ran),
            ran_more_than_once=sum(1 for i in ran if runs[i] > 1),
            lost=len(pushed - ran - dead_ids),
            dead=reasons,
            wall=wall,
            drained=drained,
            pending=pending,
            events=self.events,
        )

    def execute(self) -> Result:
        self.start_supervisor()
        pusher = threading.Thread(target=self.push_all, name="chaos-pusher")
        pusher.start()
        try:
            drained, pending = self.loop(pusher)
        finally:
            pusher.join()
        self.stop_supervisor()
        return self.tally(drained, pending, time.monotonic() - self.started)

    def supervisor_log(self, lines: int = 30) -> str:
        self.log.flush()
        text = (self.directory / "supervisor.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []  # gone meanwhile


def run(options: Options, out: TextIO = sys.stdout) -> Result:
    """Run the chaos run described by ``options``; print events and the table."""
    print(
        f"chaos run on {options.broker}: {options.tasks:,} tasks, {options.workers} "
        f"worker processes, batches of {options.batch}, {options.kills} kills",
        file=out,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="sergeant-chaos-") as directory:
        chaos = _Run(options, Path(directory), out)
        try:
            result = chaos.execute()
            if not result.ok:
                print(f"supervisor log tail:\n{chaos.supervisor_log()}", file=out)
        finally:
            chaos.cleanup()
    print_table(result, out)
    return result


def print_table(result: Result, out: TextIO) -> None:
    """The result as a two-column table."""
    dead = sum(result.dead.values())
    rows = [
        ("broker", result.broker),
        ("pushed", f"{result.pushed:,}"),
        ("ran at least once", f"{result.ran:,}"),
        ("ran more than once", f"{result.ran_more_than_once:,}"),
        ("lost", f"{result.lost:,}"),
        ("dead-lettered", f"{dead:,}"),
        ("wall time", f"{result.wall:.1f} s"),
    ]
    if not result.drained:
        rows.append(("NOT DRAINED", f"{result.pending:,} pending at the time limit"))
    print("\n| measure | value |\n| --- | ---: |", file=out)
    for name, value in rows:
        print(f"| {name} | {value} |", file=out)
    for reason, count in result.dead.most_common():
        print(f"  dead-letter reason ({count:,}): {reason}", file=out)
    print("OK: lost = 0" if result.ok else "FAILED", file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, return 0 when nothing was lost."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.chaos", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--broker", choices=["redis", "sqlite"], required=True)
    parser.add_argument("--tasks", type=int, default=Options.tasks)
    parser.add_argument("--kills", type=int, default=Options.kills)
    parser.add_argument("--workers", type=int, default=Options.workers)
    parser.add_argument(
        "--interval", type=float, default=Options.interval,
        help="least seconds between two chaos events",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=Options.batch)
    parser.add_argument(
        "--work-ms", type=float, default=Options.work_ms,
        help="simulated work per task, milliseconds",
    )  # fmt: skip
    parser.add_argument("--time-limit", type=float, default=Options.time_limit)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    options = Options(**{k.replace("-", "_"): v for k, v in vars(args).items()})
    return 0 if run(options).ok else 1


if __name__ == "__main__":
    sys.exit(run_cli(main))
