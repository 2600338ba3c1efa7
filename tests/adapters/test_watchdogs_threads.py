"""ThreadWatchdog specifics (escalation, races, the GIL limit), and NullWatchdog."""

from __future__ import annotations

import contextlib
import logging
import random
import re
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from sergeant.adapters.watchdogs.null import NullWatchdog
from sergeant.adapters.watchdogs.threads import ThreadWatchdog, WatchdogHandle

from sergeant.errors import ConfigError, TaskTimedOut, WatchdogError

SLACK = 0.5


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.fixture
def escalations() -> list[tuple[WatchdogHandle, float]]:
    return []


@pytest.fixture
def recording_watchdog(
    escalations: list[tuple[WatchdogHandle, float]],
) -> Iterator[ThreadWatchdog]:
    """A ThreadWatchdog whose escalation only records (handle, monotonic time)."""
    watchdog = ThreadWatchdog(
        on_escalate=lambda handle: escalations.append((handle, time.monotonic()))
    )
    yield watchdog
    watchdog.close()


class TestEscalation:
    def test_on_escalate_gets_the_handle_after_timeout_plus_grace(
        self,
        recording_watchdog: ThreadWatchdog,
        escalations: list[tuple[WatchdogHandle, float]],
    ) -> None:
        """A task ignoring TaskTimedOut makes the watchdog call on_escalate(handle)."""
        start = time.monotonic()
        handle = recording_watchdog.arm(0.2, grace=0.3)
        with contextlib.suppress(TaskTimedOut):  # as a misbehaving task would
            _spin(5.0)
        _spin(1.0)  # the custom callback raises nothing more: this runs to its end
        recording_watchdog.disarm(handle)

        assert [h for h, _ in escalations] == [handle]
        assert 0.5 <= escalations[0][1] - start < 0.5 + SLACK
        assert handle.fired
        assert handle.disarmed

    def test_default_escalation_logs_at_error_and_raises_again(
        self, thread_watchdog: ThreadWatchdog, caplog: pytest.LogCaptureFixture
    ) -> None:
        """By default escalation logs an ERROR and raises TaskTimedOut once more."""
        caplog.set_level(logging.ERROR, logger="sergeant.adapters.watchdogs.threads")
        interruptions = 0
        handle = thread_watchdog.arm(0.1, grace=0.1)
        for _ in range(2):
            try:
                _spin(5.0)
            except TaskTimedOut:
                interruptions += 1
        thread_watchdog.disarm(handle)

        assert interruptions == 2
        [record] = caplog.records
        assert record.levelno == logging.ERROR
        assert "raising it once more" in record.getMessage()

    def test_disarm_within_the_grace_cancels_the_escalation(
        self,
        recording_watchdog: ThreadWatchdog,
        escalations: list[tuple[WatchdogHandle, float]],
    ) -> None:
        """A task that stops within the grace after its timeout is not escalated."""
        handle = recording_watchdog.arm(0.05, grace=0.2)
        with contextlib.suppress(TaskTimedOut):
            _spin(5.0)

        not_fired = recording_watchdog.disarm(handle)
        _spin(0.5)

        assert not_fired is False
        assert escalations == []

    def test_a_late_fire_still_gives_the_whole_grace(
        self,
        recording_watchdog: ThreadWatchdog,
        escalations: list[tuple[WatchdogHandle, float]],
    ) -> None:
        """A watchdog kept from running past the deadline and the grace (by a task
        holding the GIL in a C call; here, by holding its lock) fires late. The
        grace then counts from the firing: a task that stops within it is not
        escalated in the same instant."""
        handle = recording_watchdog.arm(0.05, grace=0.5)
        told = None
        try:
            with recording_watchdog._lock:  # its thread cannot fire meanwhile
                time.sleep(0.8)
            _spin(5.0)
        except TaskTimedOut:
            told = time.monotonic()
            _spin(0.2)  # a cleanup well within the grace

        not_fired = recording_watchdog.disarm(handle)
        _spin(0.6)

        assert told is not None
        assert not_fired is False
        assert escalations == []

    def test_a_raising_on_escalate_does_not_stop_the_watchdog(self) -> None:
        """An exception from on_escalate is logged and later deadlines still fire."""

        def broken(handle: WatchdogHandle) -> None:
            raise RuntimeError("callback bug")

        watchdog = ThreadWatchdog(on_escalate=broken)
        first = watchdog.arm(0.05, grace=0.0)
        try:
            _spin(5.0)
        except TaskTimedOut:
            _spin(0.2)  # swallowed: the broken escalation runs meanwhile
        watchdog.disarm(first)
        stopped = False

        second = watchdog.arm(0.05, grace=5.0)
        try:
            _spin(5.0)
        except TaskTimedOut:
            stopped = True
        watchdog.disarm(second)
        watchdog.close()

        assert stopped


class TestRaces:
    @pytest.mark.slow
    def test_disarm_never_lets_a_timeout_leak_past_it(
        self,
        recording_watchdog: ThreadWatchdog,
        escalations: list[tuple[WatchdogHandle, float]],
    ) -> None:
        """2,000 arm/disarm cycles racing a 1 ms deadline never leak a TaskTimedOut."""
        rng = random.Random(20240601)
        interrupted = completed = leaked = 0
        previous_interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)  # more thread switches, more interleavings
        try:
            for _ in range(2000):
                handle = None
                try:
                    handle = recording_watchdog.arm(0.001, grace=30.0)
                    _spin(rng.uniform(0.0, 0.002))
                    recording_watchdog.disarm(handle)
                    completed += 1
                except TaskTimedOut:
                    interrupted += 1
                    # It may have surfaced before disarm ran; disarm is idempotent.
                    # True would mean this arm never fired: the exception leaked
                    # from an earlier, already disarmed arm.
                    if handle is not None and recording_watchdog.disarm(handle):
                        leaked += 1
                try:
                    for _ in range(300):  # bytecode outside any armed region
                        pass
                except TaskTimedOut:
                    leaked += 1
        finally:
            sys.setswitchinterval(previous_interval)

        assert leaked == 0
        assert interrupted > 0, "the deadline never raced the work: no test"
        assert completed > 0
        assert escalations == []

    def test_arming_again_ends_the_threads_previous_arm(
        self, thread_watchdog: ThreadWatchdog
    ) -> None:
        """A new arm from a thread ends its un-disarmed previous arm (safety net)."""
        forgotten = thread_watchdog.arm(0.1, grace=0.1)

        current = thread_watchdog.arm(10.0, grace=1.0)
        _spin(0.4)  # past the forgotten deadline and grace: must not be interrupted

        assert forgotten.disarmed
        assert thread_watchdog.disarm(current) is True

    def test_a_timeout_surfacing_inside_arm_ends_that_arm(
        self,
        monkeypatch: pytest.MonkeyPatch,
        recording_watchdog: ThreadWatchdog,
        escalations: list[tuple[WatchdogHandle, float]],
    ) -> None:
        """A deadline shorter than a thread switch can fire before ``arm`` returns:
        the caller never gets that handle, so ``arm`` must end it itself, or its
        escalation hits whatever the thread runs next (here: an untimed spin)."""
        from sergeant.adapters.watchdogs import threads

        real_push = ThreadWatchdog._push

        def push_then_fire(
            self: ThreadWatchdog, when: float, handle: WatchdogHandle, **kw: bool
        ) -> None:
            real_push(self, when, handle, **kw)
            # What the watchdog's thread does at the deadline: the exception is
            # delivered at this thread's next bytecode, still inside arm().
            handle._fired = True
            handle._state = threads._State.FIRED
            real_push(self, handle.deadline + handle.grace, handle, escalation=True)
            threads._raise_in(handle.thread_id, TaskTimedOut)

        monkeypatch.setattr(ThreadWatchdog, "_push", push_then_fire)
        with pytest.raises(TaskTimedOut):
            recording_watchdog.arm(0.05, grace=0.05)
        monkeypatch.undo()

        _spin(0.4)  # past deadline and grace: nothing may reach this thread now

        assert escalations == []
        assert recording_watchdog._live == {}

    def test_a_thread_that_ends_armed_is_never_interrupted_again(
        self, thread_watchdog: ThreadWatchdog
    ) -> None:
        """An arm whose thread ended fires into nothing (its id may be reused)."""
        handles: list[WatchdogHandle] = []
        thread = threading.Thread(
            target=lambda: handles.append(thread_watchdog.arm(0.1, grace=0.1))
        )
        thread.start()
        thread.join()

        _spin(0.4)  # another thread may now run under the ended thread's id

        assert handles[0].fired
        assert thread_watchdog.disarm(handles[0]) is False

    def test_disarm_from_another_thread_stops_the_deadline(
        self, thread_watchdog: ThreadWatchdog
    ) -> None:
        """A handle disarmed by another thread never fires in the armed thread."""
        handle = thread_watchdog.arm(0.2, grace=0.1)

        other = threading.Thread(target=thread_watchdog.disarm, args=(handle,))
        other.start()
        other.join()
        _spin(0.5)

        assert handle.disarmed
        assert not handle.fired


class TestWhatItCannotStop:
    @pytest.mark.slow
    def test_a_blocking_sleep_is_interrupted_only_when_it_returns(
        self, thread_watchdog: ThreadWatchdog
    ) -> None:
        """time.sleep(1.0) under a 0.1 s deadline gets TaskTimedOut only at 1.0 s."""
        start = time.monotonic()
        handle = thread_watchdog.arm(0.1, grace=10.0)
        try:
            time.sleep(1.0)
            _spin(5.0)
        except TaskTimedOut:
            elapsed = time.monotonic() - start
        finally:
            thread_watchdog.disarm(handle)

        assert 1.0 <= elapsed < 1.0 + SLACK

    @pytest.mark.slow
    def test_a_regex_holding_the_gil_runs_to_its_end_first(
        self, thread_watchdog: ThreadWatchdog
    ) -> None:
        """A catastrophic regex (C code holding the GIL) outlives a 0.05 s deadline."""
        pattern, size = re.compile(r"(a+)+$"), 16
        while True:  # grow the input until one match takes at least 0.5 s here
            begin = time.monotonic()
            pattern.match("a" * size + "b")
            if time.monotonic() - begin >= 0.5:
                break
            size += 1
        start = time.monotonic()
        handle = thread_watchdog.arm(0.05, grace=10.0)
        try:
            pattern.match("a" * size + "b")
            _spin(5.0)
        except TaskTimedOut:
            elapsed = time.monotonic() - start
        finally:
            thread_watchdog.disarm(handle)

        assert elapsed >= 0.3  # the deadline passed at 0.05 s


class TestArguments:
    @pytest.mark.parametrize(
        ("timeout", "grace", "field"),
        [
            (-1, 1, "timeout"),
            (float("nan"), 1, "timeout"),
            (True, 1, "timeout"),
            (1, -0.5, "grace"),
            (1, "2", "grace"),
        ],
    )
    def test_bad_numbers_raise_config_error_naming_the_field(
        self,
        thread_watchdog: ThreadWatchdog,
        timeout: object,
        grace: object,
        field: str,
    ) -> None:
        """A negative, NaN or non-numeric timeout or grace raises ConfigError."""
        with pytest.raises(ConfigError, match=field):
            thread_watchdog.arm(timeout, grace=grace)  # type: ignore[arg-type]

    def test_an_infinite_timeout_never_fires_and_breaks_nothing(
        self, thread_watchdog: ThreadWatchdog
    ) -> None:
        """An infinite timeout is accepted and later finite deadlines still fire."""
        forever = threading.Thread(
            target=lambda: thread_watchdog.arm(float("inf"), grace=1.0), daemon=True
        )
        forever.start()
        forever.join()
        stopped = False

        handle = thread_watchdog.arm(0.1, grace=5.0)
        try:
            _spin(5.0)
        except TaskTimedOut:
            stopped = True
        thread_watchdog.disarm(handle)

        assert stopped

    def test_a_foreign_handle_is_refused(self, thread_watchdog: ThreadWatchdog) -> None:
        """disarm() of something this watchdog's arm() did not return raises."""
        other = ThreadWatchdog()
        foreign = other.arm(10.0, grace=1.0)

        with pytest.raises(WatchdogError):
            thread_watchdog.disarm(object())
        with pytest.raises(WatchdogError):
            thread_watchdog.disarm(foreign)

        assert other.disarm(foreign) is True
        other.close()

    def test_arm_after_close_raises(self, thread_watchdog: ThreadWatchdog) -> None:
        """A closed watchdog refuses to arm, so no deadline goes silently unwatched."""
        thread_watchdog.close()

        with pytest.raises(WatchdogError, match="close"):
            thread_watchdog.arm(1.0, grace=1.0)

    def test_no_thread_until_the_first_arm(self) -> None:
        """Building a watchdog starts no thread; the first arm starts one."""
        before = threading.active_count()

        watchdog = ThreadWatchdog(name="lazy-watchdog")
        built = threading.active_count()
        watchdog.disarm(watchdog.arm(10.0, grace=1.0))
        names = [t.name for t in threading.enumerate() if t.name == "lazy-watchdog"]
        watchdog.close()

        assert built == before
        assert names == ["lazy-watchdog"]

    def test_disarmed_entries_do_not_pile_up(
        self, thread_watchdog: ThreadWatchdog
    ) -> None:
        """Many arm/disarm cycles with long timeouts keep the deadline heap small."""
        for _ in range(5000):
            thread_watchdog.disarm(thread_watchdog.arm(3600.0, grace=1.0))

        pending = len(thread_watchdog._heap)  # white-box: memory must stay bounded

        assert pending < 600


class TestNullWatchdog:
    def test_never_fires_and_disarm_says_so(self) -> None:
        """NullWatchdog lets a task run past its timeout; disarm returns True."""
        watchdog = NullWatchdog()
        handle = watchdog.arm(0.01, grace=0.01)

        _spin(0.1)
        not_fired = watchdog.disarm(handle)
        watchdog.close()

        assert handle is not None
        assert not_fired is True
