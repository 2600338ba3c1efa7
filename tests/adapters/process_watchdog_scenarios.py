"""ProcessWatchdog scenarios, each run in a fresh process by test_process_watchdog.py.

A ``ProcessWatchdog`` signals (and may SIGKILL) the process that arms it, so no
scenario runs inside pytest. ``python -m tests.adapters.process_watchdog_scenarios
NAME`` runs one and prints JSON lines (``{"event": ..., ...}``, flushed at once so a
SIGKILL loses none); times are ``time.monotonic()`` readings, which are system-wide,
so the test compares them with its own clock.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from sergeant.adapters.watchdogs.processes import ProcessWatchdog

from sergeant.errors import TaskTimedOut


def say(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "at": time.monotonic(), **fields}), flush=True)


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def timed_out_after(watchdog: ProcessWatchdog, timeout: float, work: Any) -> float:
    """Arm, run ``work()``, disarm; seconds until TaskTimedOut (-1: none came)."""
    start = time.monotonic()
    handle = watchdog.arm(timeout, grace=30.0)
    try:
        work()
    except TaskTimedOut:
        return time.monotonic() - start
    finally:
        watchdog.disarm(handle)
    return -1.0


def loop(watchdog: ProcessWatchdog) -> None:
    elapsed = timed_out_after(watchdog, 0.2, lambda: spin(5.0))
    handle = watchdog.arm(5.0, grace=5.0)
    spin(0.05)
    say("done", elapsed=elapsed, quick_disarm=watchdog.disarm(handle))


def blocking(watchdog: ProcessWatchdog) -> None:
    say("done", elapsed=timed_out_after(watchdog, 0.2, lambda: time.sleep(10.0)))


def regex(watchdog: ProcessWatchdog) -> None:
    # 2**40 backtracking steps: hours, inside one C call holding the GIL.
    pattern = re.compile(r"(a+)+$")
    say("armed")
    elapsed = timed_out_after(watchdog, 0.2, lambda: pattern.match("a" * 40 + "b"))
    say("done", elapsed=elapsed)


def c_loop(watchdog: ProcessWatchdog) -> None:
    # An endless C loop that holds the GIL and never checks for signals.
    watchdog.arm(0.2, grace=0.3)
    say("armed")
    any(itertools.repeat(False))
    say("survived")


def swallow(watchdog: ProcessWatchdog) -> None:
    watchdog.arm(0.2, grace=0.4)
    say("armed")
    try:
        spin(5.0)
    except TaskTimedOut:
        say("swallowed")  # ... and carries on, as a bare ``except:`` would
    spin(5.0)
    say("survived")


def disarmed(watchdog: ProcessWatchdog) -> None:
    handle = watchdog.arm(0.1, grace=0.1)
    first = watchdog.disarm(handle)
    spin(0.6)  # past the deadline and the grace
    say("done", first=first, second=watchdog.disarm(handle))


def fired_in_arm(watchdog: ProcessWatchdog) -> None:
    """The deadline fires before arm() returns (stalled right after writing the
    record, as a thread switch could): arm ends the arm and raises TaskTimedOut;
    the process then outlives the grace."""
    send = watchdog._send

    def send_then_stall(record: bytes) -> None:
        send(record)
        spin(0.3)  # the killer fires the 0.01 s deadline meanwhile

    watchdog._send = send_then_stall  # type: ignore[method-assign]
    raised = False
    try:
        watchdog.arm(0.01, grace=0.3)
    except TaskTimedOut:
        raised = True
    watchdog._send = send  # type: ignore[method-assign]
    spin(1.0)  # past the grace: an arm left live would have been SIGKILLed
    say("done", raised=raised)


def late(watchdog: ProcessWatchdog) -> None:
    calls: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    # Hold SIGINT back so the killer's signal lands after disarm, as it would if
    # the task ended in the instant the deadline fired.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handle = watchdog.arm(0.05, grace=30.0)
    time.sleep(0.5)
    not_fired = watchdog.disarm(handle)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    spin(0.2)
    say("done", not_fired=not_fired, previous_handler_calls=len(calls))


def foreign(watchdog: ProcessWatchdog) -> None:
    calls: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    handle = watchdog.arm(30.0, grace=30.0)
    os.kill(os.getpid(), signal.SIGINT)
    spin(0.1)
    during = len(calls)
    watchdog.disarm(handle)
    os.kill(os.getpid(), signal.SIGINT)
    spin(0.1)
    say("done", during_arm=during, after_disarm=len(calls) - during)


def keyboard(watchdog: ProcessWatchdog) -> None:
    handle = watchdog.arm(30.0, grace=30.0)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        spin(1.0)
    except KeyboardInterrupt:
        say("done", raised="KeyboardInterrupt")
    except TaskTimedOut:
        say("done", raised="TaskTimedOut")
    finally:
        watchdog.disarm(handle)


def stress(watchdog: ProcessWatchdog) -> None:
    rng = random.Random(20240601)
    interrupted = completed = leaked = 0
    for _ in range(800):
        handle = None
        try:
            handle = watchdog.arm(0.001, grace=30.0)
            spin(rng.uniform(0.0, 0.002))
            watchdog.disarm(handle)
            completed += 1
        except TaskTimedOut:
            interrupted += 1
            if handle is not None and watchdog.disarm(handle):
                leaked += 1  # True: this arm never fired, so an older one leaked
        try:
            spin(0.0002)  # outside any arm: nothing may arrive here
        except TaskTimedOut:
            leaked += 1
    say("done", interrupted=interrupted, completed=completed, leaked=leaked)


def late_fire(watchdog: ProcessWatchdog) -> None:
    # The killer hears of the arm only after its deadline and grace have passed
    # (stopped here; a long poll_interval does the same): the grace still runs
    # from the SIGINT, so a task that SIGINT stops cleans up and lives on.
    watchdog.start()
    killer = watchdog.killer_pid or 0
    os.kill(killer, signal.SIGSTOP)
    try:
        handle = watchdog.arm(0.05, grace=0.5)
        try:
            spin(0.8)  # past the deadline and the grace; no SIGINT yet
            os.kill(killer, signal.SIGCONT)
            spin(5.0)
            outcome = "not interrupted"
        except TaskTimedOut:
            time.sleep(0.05)  # cleaning up, well within the grace
            watchdog.disarm(handle)
            outcome = "timed out"
    finally:
        os.kill(killer, signal.SIGCONT)  # never leave a stopped killer behind
    time.sleep(0.8)  # past the SIGINT plus the grace: a SIGKILL would land here
    say("done", outcome=outcome)


def flood(watchdog: ProcessWatchdog) -> None:
    # 120,000 arm/disarm pairs (5.8 MB: over 20 pipes full, even enlarged) in
    # about a second, with the killer polling every second: arm/disarm must not
    # wait for its next poll each time the pipe fills.
    watchdog.start()
    for _ in range(120_000):
        watchdog.disarm(watchdog.arm(60.0, grace=60.0))
    say("flooded")
    # Nothing was lost or garbled on the way: a short arm still fires.
    elapsed = timed_out_after(watchdog, 0.05, lambda: time.sleep(5.0))
    say("done", elapsed=elapsed)


def memory(watchdog: ProcessWatchdog) -> None:
    watchdog.start()
    say("allocating")
    hog = bytearray(160 * 2**20)
    hog[::4096] = b"x" * len(range(0, len(hog), 4096))  # touch every page: resident
    time.sleep(10.0)
    say("survived", size=len(hog))


def orphan(watchdog: ProcessWatchdog) -> None:
    watchdog.arm(60.0, grace=60.0)
    say("armed", killer=watchdog.killer_pid)
    time.sleep(60.0)


def close(watchdog: ProcessWatchdog) -> None:
    before = signal.getsignal(signal.SIGINT)
    handle = watchdog.arm(10.0, grace=10.0)
    watchdog.disarm(handle)
    killer = watchdog.killer_pid
    watchdog.close()
    try:
        os.kill(killer or 0, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    say(
        "done",
        killer_alive=alive,
        handler_restored=signal.getsignal(signal.SIGINT) is before,
    )


def close_forked(watchdog: ProcessWatchdog) -> None:
    """close() while a process forked after the killer started (a process
    executor's pool) holds copies of the killer's pipes: EOF never comes."""
    watchdog.start()
    child = os.fork()
    if child == 0:  # the copy: holds the pipes until killed
        time.sleep(60.0)
        os._exit(0)
    try:
        started = time.monotonic()
        watchdog.close()
        took = time.monotonic() - started
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    say("done", close_seconds=took)


def close_forked_ignoring_term(watchdog: ProcessWatchdog) -> None:
    """The same from a worker that ignores SIGTERM (the killer inherits that)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    close_forked(watchdog)


_ALL = (loop, blocking, regex, c_loop, swallow, disarmed, fired_in_arm, late,
        foreign, keyboard, stress, late_fire, flood, memory, orphan, close,
        close_forked, close_forked_ignoring_term)  # fmt: skip
SCENARIOS: dict[str, Callable[[ProcessWatchdog], None]] = {f.__name__: f for f in _ALL}


if __name__ == "__main__":
    name = sys.argv[1]
    settings: dict[str, dict[str, Any]] = {
        "memory": {"memory_limit": "100MiB", "memory_interval": 0.05},
        "flood": {"poll_interval": 1.0},
    }
    SCENARIOS[name](ProcessWatchdog(**settings.get(name, {})))
