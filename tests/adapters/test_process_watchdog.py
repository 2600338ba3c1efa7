"""ProcessWatchdog: the killer process, its signals, and what they can stop.

The watchdog signals the process that arms it (SIGINT, then SIGKILL), so each
scenario runs in a fresh interpreter (``process_watchdog_scenarios.py``); only the
checks that never arm run in pytest itself.
"""

from __future__ import annotations

import fcntl
import json
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from sergeant.adapters.watchdogs import processes
from sergeant.adapters.watchdogs.processes import ProcessWatchdog

from sergeant.errors import ConfigError, WatchdogError
from sergeant.protocols import Watchdog

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
SLACK = 0.5


class Scenario:
    """One scenario process: its JSON events as they come, and its exit."""

    def __init__(self, name: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.adapters.process_watchdog_scenarios", name],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: dict[str, dict[str, Any]] = {}

    def expect(self, event: str) -> dict[str, Any]:
        """Read lines until ``event`` (AssertionError if the process ends first)."""
        assert self.process.stdout is not None
        while event not in self.events:
            line = self.process.stdout.readline()
            if not line:
                raise AssertionError(f"no {event!r} event; stderr: {self.stderr()}")
            record = json.loads(line)
            self.events[record["event"]] = record
        return self.events[event]

    def finish(self, timeout: float = 20.0) -> tuple[int, float]:
        """Wait for the exit; return (exit code, monotonic time it was seen).

        A scenario still running after ``timeout`` seconds is killed and fails
        the test (a hang must not outlive it).
        """
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running after {timeout} s; stderr: {self.stderr()}"
            ) from None
        seen = time.monotonic()
        assert self.process.stdout is not None
        for line in self.process.stdout:
            record = json.loads(line)
            self.events[record["event"]] = record
        return code, seen

    def stderr(self) -> str:
        assert self.process.stderr is not None
        if self.process.poll() is None:
            self.process.kill()
        return self.process.stderr.read()


def _has_exited(process: psutil.Process) -> bool:
    """Gone, or a zombie: exited (an orphan waits for init to reap it)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def run(name: str, timeout: float = 20.0) -> dict[str, Any]:
    """Run a scenario that ends normally; return its ``done`` event."""
    scenario = Scenario(name)
    code, _ = scenario.finish(timeout)
    assert code == 0, scenario.stderr()
    return scenario.expect("done")


class TestDeadlines:
    def test_an_endless_python_loop_is_stopped_at_its_deadline(self) -> None:
        """A pure-Python loop armed with 0.2 s gets TaskTimedOut within 0.2 + 0.5 s."""
        done = run("loop")

        assert 0.2 <= done["elapsed"] < 0.2 + SLACK
        assert done["quick_disarm"] is True

    def test_a_blocking_sleep_is_cut_short(self) -> None:
        """time.sleep(10) under a 0.2 s deadline gets TaskTimedOut at about 0.2 s."""
        done = run("blocking")

        assert 0.2 <= done["elapsed"] < 0.2 + SLACK

    def test_a_catastrophic_regex_is_stopped_by_the_sigint(self) -> None:
        """A regex backtracking for hours in C is stopped within timeout + 0.5 s."""
        done = run("regex")

        assert 0.2 <= done["elapsed"] < 0.2 + SLACK

    def test_disarm_prevents_firing(self) -> None:
        """After disarm, running past the deadline and the grace raises nothing."""
        done = run("disarmed")

        assert done["first"] is True
        assert done["second"] is True

    def test_a_deadline_firing_inside_arm_ends_that_arm(self) -> None:
        """A TaskTimedOut surfacing before arm() returns leaves no live arm (the
        caller has no handle to disarm): the process is not SIGKILLed after the
        grace."""
        done = run("fired_in_arm")

        assert done["raised"] is True

    def test_arm_and_disarm_never_wait_for_the_killers_poll(self) -> None:
        """120,000 arm/disarm pairs (over 20 pipes full) under a 1 s poll_interval
        take about a second: a full pipe wakes the killer instead of waiting out
        its poll (20+ s), and the killer still gets every record: a short arm
        after them fires."""
        done = run("flood", timeout=10.0)

        assert done["elapsed"] >= 0.05  # -1: the last arm never fired

    def test_a_timeout_leaks_past_no_disarm_under_stress(self) -> None:
        """800 arm/disarm cycles racing a 1 ms deadline never leak a TaskTimedOut."""
        done = run("stress")

        assert done["leaked"] == 0
        assert done["interrupted"] > 0, "the deadline never raced the work: no test"
        assert done["completed"] > 0


class TestEscalation:
    def test_a_task_swallowing_the_timeout_is_killed_after_the_grace(self) -> None:
        """A task that swallows TaskTimedOut is SIGKILLed at timeout + grace."""
        scenario = Scenario("swallow")

        armed = scenario.expect("armed")["at"]
        swallowed = scenario.expect("swallowed")["at"]
        code, died = scenario.finish()

        assert code == -signal.SIGKILL
        assert 0.2 <= swallowed - armed < 0.2 + SLACK
        assert 0.6 <= died - armed < 0.6 + 1.0
        assert "survived" not in scenario.events
        assert "still running" in scenario.stderr()

    def test_the_grace_runs_from_the_sigint_not_the_deadline(self) -> None:
        """A killer that hears of an arm after its deadline plus grace (it reads
        arms every poll_interval) still grants the full grace after its SIGINT:
        a task that SIGINT stops and that disarms within the grace lives on."""
        scenario = Scenario("late_fire")

        code, _ = scenario.finish()

        assert code == 0, scenario.stderr()
        assert scenario.expect("done")["outcome"] == "timed out"

    def test_c_code_holding_the_gil_is_killed_after_the_grace(self) -> None:
        """An endless C loop that never checks signals is SIGKILLed at timeout+grace."""
        scenario = Scenario("c_loop")

        armed = scenario.expect("armed")["at"]
        code, died = scenario.finish()

        assert code == -signal.SIGKILL
        assert 0.5 <= died - armed < 0.5 + 1.0

    def test_a_process_over_its_memory_limit_is_killed(self) -> None:
        """RSS over memory_limit gets the worker SIGKILLed within a few readings."""
        scenario = Scenario("memory")

        allocating = scenario.expect("allocating")["at"]
        code, died = scenario.finish()

        assert code == -signal.SIGKILL
        assert died - allocating < 2.0
        assert "survived" not in scenario.events
        assert "over the limit" in scenario.stderr()


class TestSignals:
    def test_a_late_sigint_after_disarm_is_ignored(self) -> None:
        """The killer's SIGINT landing after disarm raises nothing, is not passed on."""
        done = run("late")

        assert done["previous_handler_calls"] == 0
        assert done["not_fired"] is True

    def test_someone_elses_sigint_goes_to_the_previous_handler(self) -> None:
        """A SIGINT the killer did not send reaches the handler installed before."""
        done = run("foreign")

        assert done["during_arm"] == 1
        assert done["after_disarm"] == 1

    def test_ctrl_c_during_a_task_is_still_keyboard_interrupt(self) -> None:
        """With Python's default handler, a foreign SIGINT raises KeyboardInterrupt."""
        done = run("keyboard")

        assert done["raised"] == "KeyboardInterrupt"


class TestKillerLifetime:
    def test_the_killer_exits_when_its_worker_is_killed(self) -> None:
        """SIGKILLing the worker makes its killer process exit within 2 s."""
        scenario = Scenario("orphan")
        killer = psutil.Process(scenario.expect("armed")["killer"])

        scenario.process.kill()
        scenario.finish()

        deadline = time.monotonic() + 2.0
        while not _has_exited(killer) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _has_exited(killer)

    def test_close_stops_the_killer_and_restores_the_handler(self) -> None:
        """close() reaps the killer and puts the previous SIGINT handler back."""
        done = run("close")

        assert done["killer_alive"] is False
        assert done["handler_restored"] is True

    def test_close_does_not_wait_for_copies_of_the_pipe_to_close(self) -> None:
        """A process forked after the killer started (a ProcessExecutor's pool)
        keeps copies of its pipe, so closing ours is no EOF for the killer: close()
        stops it at once instead of waiting out the 2 s reap and killing it."""
        done = run("close_forked")
        ignoring = run("close_forked_ignoring_term")

        assert done["close_seconds"] < 1.0
        assert ignoring["close_seconds"] < 1.0


class TestInProcess:
    def test_is_a_watchdog(self) -> None:
        """The adapter satisfies the Watchdog protocol."""
        assert isinstance(ProcessWatchdog(), Watchdog)

    def test_arming_outside_the_main_thread_raises(self) -> None:
        """arm() from another thread raises WatchdogError and starts no killer."""
        watchdog = ProcessWatchdog()
        errors: list[BaseException] = []

        def arm() -> None:
            try:
                watchdog.arm(1.0, grace=1.0)
            except WatchdogError as error:
                errors.append(error)

        thread = threading.Thread(target=arm)
        thread.start()
        thread.join()

        assert len(errors) == 1
        assert "main thread" in str(errors[0])
        assert watchdog.killer_pid is None

    @pytest.mark.parametrize(
        ("settings", "field"),
        [
            ({"memory_interval": 0}, "memory_interval"),
            ({"poll_interval": -1}, "poll_interval"),
            ({"poll_interval": True}, "poll_interval"),
            ({"memory_limit": "lots"}, "size"),
        ],
    )
    def test_bad_settings_raise_config_error(
        self, settings: dict[str, Any], field: str
    ) -> None:
        """A non-positive interval or an unreadable size raises ConfigError."""
        with pytest.raises(ConfigError, match=field):
            ProcessWatchdog(**settings)

    def test_a_foreign_handle_is_refused(self) -> None:
        """disarm() of a handle from another watchdog raises WatchdogError."""
        with pytest.raises(WatchdogError):
            ProcessWatchdog().disarm(object())

    def test_arm_after_close_raises(self) -> None:
        """arm() after close() raises WatchdogError, before any signal is touched."""
        watchdog = ProcessWatchdog()
        watchdog.close()
        handler = signal.getsignal(signal.SIGINT)

        with pytest.raises(WatchdogError):
            watchdog.arm(1.0, grace=1.0)

        assert signal.getsignal(signal.SIGINT) is handler


def _python_without_psutil(directory: Path) -> Path:
    """An interpreter (a shell wrapper) whose ``import psutil`` fails, as in an
    environment where psutil is not installed; everything else works."""
    script = (
        "import runpy, sys; sys.modules['psutil'] = None; "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    wrapper = directory / "python-without-psutil"
    wrapper.write_text(
        f'#!/bin/sh\nshift\nexec {shlex.quote(sys.executable)} -I -c "{script}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


class TestKillerStart:
    """A killer that cannot run raises WatchdogError instead of watching nothing.

    ``start()`` spawns the killer without arming, so these run in pytest itself.
    """

    def test_a_killer_without_psutil_for_a_memory_limit_raises(
        self, tmp_path: Path
    ) -> None:
        """memory_limit with an interpreter lacking psutil: WatchdogError with the
        killer's reason (psutil), no killer, the SIGINT handler untouched; without
        a limit that same interpreter runs the killer (standard library only)."""
        python = str(_python_without_psutil(tmp_path))
        handler = signal.getsignal(signal.SIGINT)
        watchdog = ProcessWatchdog(memory_limit="1GiB", python=python)

        with pytest.raises(WatchdogError, match="memory limit needs psutil"):
            watchdog.start()

        assert watchdog.killer_pid is None
        assert signal.getsignal(signal.SIGINT) is handler
        plain = ProcessWatchdog(python=python)
        try:
            plain.start()
            assert plain.killer_pid is not None
        finally:
            plain.close()

    def test_a_ctrl_c_while_the_killer_starts_does_not_kill_it(
        self, tmp_path: Path
    ) -> None:
        """A terminal's Ctrl-C reaches the whole process group, the killer too,
        maybe before its interpreter got to ignore SIGINT: it must survive that
        (or the arm fails, and with it the task). A slow-starting interpreter
        (a Python wrapper that sleeps, then execs Python) widens the window."""
        wrapper = tmp_path / "slow-python"
        wrapper.write_text(
            f"#!{sys.executable}\n"
            "import os, sys, time\n"
            "time.sleep(0.5)\n"
            "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
        )
        wrapper.chmod(0o755)
        watchdog = ProcessWatchdog(python=str(wrapper))
        me = psutil.Process()
        # Only the new child is signalled: the others (a session's redis-server)
        # must not get this Ctrl-C.
        others = {child.pid for child in me.children()}
        signalled: list[int] = []

        def interrupt_the_killer() -> None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                starting = [c for c in me.children() if c.pid not in others]
                if starting:
                    starting[0].send_signal(signal.SIGINT)
                    signalled.append(starting[0].pid)
                    return
                time.sleep(0.01)

        interrupter = threading.Thread(target=interrupt_the_killer)
        interrupter.start()
        try:
            watchdog.start()  # raised WatchdogError: the killer died of SIGINT
            killer = watchdog.killer_pid
            assert killer is not None
        finally:
            interrupter.join()
            watchdog.close()
        assert signalled == [killer]  # the Ctrl-C did reach the starting killer

    def test_an_interpreter_that_exits_at_once_raises(self) -> None:
        """A ``python`` that is no Python (``false``): WatchdogError with its exit
        status, instead of a watchdog that silently enforces no deadline."""
        false = shutil.which("false")
        assert false is not None
        watchdog = ProcessWatchdog(python=false)

        with pytest.raises(WatchdogError, match="exited with status 1"):
            watchdog.start()

        assert watchdog.killer_pid is None

    def test_a_worker_whose_killer_cannot_start_fails_before_taking_a_task(
        self,
    ) -> None:
        """``Worker.run()`` starts the killer before its first reserve: a killer
        that cannot start is a WatchdogError from ``run()``, with the queue as it
        was (no task taken, none counted as delivered)."""
        from sergeant.adapters.codecs.pickle import PickleCodec
        from sergeant.adapters.executors.serial import SerialExecutor
        from sergeant.adapters.memory import MemoryBroker

        from sergeant.config import WorkerConfig
        from sergeant.producer import Producer
        from sergeant.protocols import QueueLengths
        from sergeant.task import Task
        from sergeant.worker import Worker

        ran: list[Task] = []

        class Recorder(Worker):
            def work(self, task: Task) -> None:
                ran.append(task)

        false = shutil.which("false")
        assert false is not None
        broker, codec = MemoryBroker(), PickleCodec()
        Producer(broker=broker, codec=codec, queue="q").push_task({"n": 1})
        watchdog = ProcessWatchdog(python=false)
        worker = Recorder(
            broker=broker, codec=codec, executor=SerialExecutor(),
            watchdog=watchdog, config=WorkerConfig(name="q", wait=0.0),
        )  # fmt: skip

        try:
            with pytest.raises(WatchdogError, match="exited with status 1"):
                worker.run()
        finally:
            watchdog.close()

        assert ran == []
        assert broker.lengths("q") == QueueLengths(ready=1)

    def test_a_killer_that_never_gets_ready_is_killed_and_raises(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A killer silent past the ready timeout: WatchdogError, and the hung
        process is killed and reaped (no child is left behind)."""
        monkeypatch.setattr(processes, "_READY_TIMEOUT", 0.3)
        hang = tmp_path / "python-that-hangs"
        hang.write_text("#!/bin/sh\nexec sleep 30\n")
        hang.chmod(0o755)
        watchdog = ProcessWatchdog(python=str(hang))
        before = {child.pid for child in psutil.Process().children()}

        with pytest.raises(WatchdogError, match="not ready"):
            watchdog.start()

        assert {child.pid for child in psutil.Process().children()} <= before

    @pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
    def test_the_pipe_to_the_killer_is_enlarged(self) -> None:
        """On Linux the pipe holds _PIPE_SIZE bytes (or the system's maximum), so
        the killer is woken to drain it at most once per ~5,000 arm/disarm pairs."""
        maximum = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        watchdog = ProcessWatchdog()
        try:
            watchdog.start()
            size = fcntl.fcntl(watchdog._to_killer, fcntl.F_GETPIPE_SZ)
        finally:
            watchdog.close()

        assert size >= min(processes._PIPE_SIZE, maximum)
