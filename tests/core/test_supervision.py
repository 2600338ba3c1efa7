"""The supervision policy, pure: every verdict, sizes, back-off and validation."""

from __future__ import annotations

import pytest

from sergeant.errors import ConfigError
from sergeant.supervision import (
    ExitVerdict,
    MemoryVerdict,
    StopReason,
    SupervisionPolicy,
    parse_size,
)

MIB = 2**20


@pytest.mark.parametrize("reason", list(StopReason))
def test_each_stop_reason_round_trips_through_its_exit_code(
    reason: StopReason,
) -> None:
    """A child exiting with ``reason.exit_code`` is read back as ``reason``."""
    code = reason.exit_code

    assert StopReason.from_exit_code(code) is reason


def test_exit_codes_are_distinct_and_stopped_is_zero() -> None:
    """A clean stop is exit 0; every reason has its own code."""
    codes = [reason.exit_code for reason in StopReason]

    assert StopReason.STOPPED.exit_code == 0
    assert len(set(codes)) == len(codes)


@pytest.mark.parametrize("code", [None, 1, 2, 70, 78, -9, -15])
def test_other_exit_codes_are_crashes(code: int | None) -> None:
    """An exit code no StopReason owns (or a signal) is a crash."""
    policy = SupervisionPolicy()

    assert StopReason.from_exit_code(code) is None
    assert policy.is_crash(code)


@pytest.mark.parametrize("reason", list(StopReason))
def test_deliberate_exits_are_not_crashes(reason: StopReason) -> None:
    """The worker's own exits never count as crashes (no back-off)."""
    assert not SupervisionPolicy().is_crash(reason.exit_code)


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (StopReason.STOPPED.exit_code, ExitVerdict.RETIRE),
        (StopReason.RESPAWN.exit_code, ExitVerdict.RESPAWN),
        (StopReason.MAX_TASKS.exit_code, ExitVerdict.RESPAWN),
        (StopReason.RECYCLE.exit_code, ExitVerdict.RESPAWN),
        (1, ExitVerdict.RESPAWN),
        (-9, ExitVerdict.RESPAWN),
        (None, ExitVerdict.RESPAWN),
    ],
)
def test_exit_verdicts_while_running(code: int | None, verdict: ExitVerdict) -> None:
    """Only a child that asked to stop is retired; every other exit is respawned."""
    assert SupervisionPolicy().on_exit(code, stopping=False) is verdict


@pytest.mark.parametrize("code", [0, 3, 4, 5, 1, -9, None])
def test_every_exit_retires_while_the_supervisor_stops(code: int | None) -> None:
    """Once stopping, nothing is respawned, whatever the exit."""
    assert SupervisionPolicy().on_exit(code, stopping=True) is ExitVerdict.RETIRE


@pytest.mark.parametrize(
    ("rss", "verdict"),
    [
        (0, MemoryVerdict.OK),
        (100 * MIB, MemoryVerdict.OK),  # at the soft limit is not over it
        (100 * MIB + 1, MemoryVerdict.RECYCLE),
        (200 * MIB, MemoryVerdict.RECYCLE),
        (200 * MIB + 1, MemoryVerdict.KILL),
        (10_000 * MIB, MemoryVerdict.KILL),
    ],
)
def test_memory_verdicts_with_both_limits(rss: int, verdict: MemoryVerdict) -> None:
    """Over soft: recycle; over hard: kill; hard wins over soft."""
    policy = SupervisionPolicy(soft_memory="100MiB", hard_memory="200MiB")

    assert policy.on_memory(rss) is verdict


def test_memory_verdicts_with_one_limit_or_none() -> None:
    """A missing limit never triggers; with none at all every reading is OK."""
    soft_only = SupervisionPolicy(soft_memory=MIB)
    hard_only = SupervisionPolicy(hard_memory=MIB)
    unlimited = SupervisionPolicy()

    assert soft_only.on_memory(10**12) is MemoryVerdict.RECYCLE
    assert hard_only.on_memory(10**12) is MemoryVerdict.KILL
    assert hard_only.on_memory(MIB) is MemoryVerdict.OK
    assert unlimited.on_memory(10**12) is MemoryVerdict.OK


def test_respawn_delay_doubles_per_rapid_crash_up_to_the_cap() -> None:
    """No delay without rapid crashes, then base, 2x base, 4x ... capped at max."""
    policy = SupervisionPolicy(crash_backoff_base=0.5, crash_backoff_max=3.0)

    delays = [policy.respawn_delay(rapid_crashes=n) for n in range(6)]

    assert delays == [0.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.respawn_delay(rapid_crashes=10_000) == 3.0
    assert policy.respawn_delay(rapid_crashes=-1) == 0.0


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512MiB", 512 * MIB),
        ("512 MiB", 512 * MIB),
        ("1.5GB", 1_500_000_000),
        ("800M", 800_000_000),
        ("800mib", 800 * MIB),
        ("2KiB", 2048),
        ("1TiB", 2**40),
        ("1048576", 1_048_576),
        ("10B", 10),
        (4096, 4096),
    ],
)
def test_parse_size_reads_units(text: str | int, size: int) -> None:
    """Decimal (K, M, G, T, with or without B) and binary (KiB ...) units, or bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text",
    ["abc", "", "12XB", "-5MiB", "MiB", "0", "0.1B", 0, -3, "7iB", "1.5", "9" * 30],
)
def test_parse_size_rejects_non_sizes_with_a_config_error(text: str | int) -> None:
    """Garbage, zero and negative sizes are refused with a message quoting them."""
    with pytest.raises(ConfigError, match=r"size"):
        parse_size(text)


def test_policy_accepts_size_strings_and_converts_them_to_bytes() -> None:
    """soft_memory / hard_memory may be given as strings; they are stored as bytes."""
    policy = SupervisionPolicy(soft_memory="1MiB", hard_memory="2MiB")

    assert (policy.soft_memory, policy.hard_memory) == (MIB, 2 * MIB)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "SupervisionPolicy.workers must be >= 1, got 0"),
        ({"workers": 1.5}, "SupervisionPolicy.workers must be an integer"),
        ({"workers": True}, "SupervisionPolicy.workers must be an integer"),
        ({"stop_grace": -1}, "SupervisionPolicy.stop_grace must be >= 0"),
        ({"stop_grace": 1e12}, "SupervisionPolicy.stop_grace must be <= "),
        ({"crash_backoff_base": -1}, "crash_backoff_base must be >= 0"),
        ({"crash_backoff_max": -1}, "crash_backoff_max must be >= 0"),
        ({"crash_window": -1}, "crash_window must be >= 0"),
        ({"stop_grace": float("nan")}, "stop_grace must be a finite number"),
        ({"crash_window": "5"}, "crash_window must be a finite number"),
        ({"stop_grace": 10**400}, "stop_grace must be a finite number"),
        ({"soft_memory": "2MiB", "hard_memory": "1MiB"}, "must be below hard_memory"),
        ({"soft_memory": "1MiB", "hard_memory": "1MiB"}, "must be below hard_memory"),
        ({"hard_memory": "lots"}, "not a size: 'lots'"),
    ],
)
def test_invalid_policies_are_refused_with_a_message_naming_the_field(
    kwargs: dict[str, object], message: str
) -> None:
    """Each bad value fails at construction with a ConfigError naming the field."""
    with pytest.raises(ConfigError, match=message):
        SupervisionPolicy(**kwargs)  # type: ignore[arg-type]


def test_quick_crashes_and_quick_recycles_back_off_and_the_rest_do_not() -> None:
    """A crash or a memory recycle soon after start counts toward the back-off (a
    start-up over soft_memory would otherwise respawn in a loop); a stop, a
    respawn request or anything after crash_window does not."""
    policy = SupervisionPolicy(crash_window=5.0)

    assert policy.backs_off(1, lifetime=0.5)
    assert policy.backs_off(-9, lifetime=4.9)
    assert policy.backs_off(StopReason.RECYCLE.exit_code, lifetime=2.0)
    assert not policy.backs_off(StopReason.RECYCLE.exit_code, lifetime=5.0)
    assert not policy.backs_off(StopReason.RESPAWN.exit_code, lifetime=0.1)
    assert not policy.backs_off(1, lifetime=60.0)
