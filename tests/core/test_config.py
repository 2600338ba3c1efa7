"""Configuration objects fail at construction with a message naming the field."""

from __future__ import annotations

import random

import pytest

from sergeant.config import (
    DeliveryMode,
    RetryPolicy,
    Starvation,
    Timeouts,
    WorkerConfig,
)
from sergeant.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "WorkerConfig.name"),
        ({"name": "q\n"}, "WorkerConfig.name"),
        (
            {"name": "q", "tasks_per_transaction": 0},
            "WorkerConfig.tasks_per_transaction",
        ),
        (
            {"name": "q", "tasks_per_transaction": 1.5},
            "WorkerConfig.tasks_per_transaction",
        ),
        (  # more than a broker's reserve may ask for (check_reserve)
            {"name": "q", "tasks_per_transaction": 2**31},
            "WorkerConfig.tasks_per_transaction",
        ),
        ({"name": "q", "max_tasks_per_run": -1}, "WorkerConfig.max_tasks_per_run"),
        ({"name": "q", "max_retries": -2}, "WorkerConfig.max_retries"),
        ({"name": "q", "lease": 0}, "WorkerConfig.lease"),
        ({"name": "q", "max_deliveries": 0}, "WorkerConfig.max_deliveries"),
        ({"name": "q", "wait": -1}, "WorkerConfig.wait"),
        ({"name": "q", "delivery": "exactly_once"}, "WorkerConfig.delivery"),
        ({"name": "q", "retry": {"base_delay": 1}}, "WorkerConfig.retry"),
        ({"name": "q", "timeouts": 5}, "WorkerConfig.timeouts"),
        ({"name": "q", "starvation": 5}, "WorkerConfig.starvation"),
        ({"name": "q", "lease": "60"}, "WorkerConfig.lease"),
        ({"name": "q", "max_retries": True}, "WorkerConfig.max_retries"),
        ({"name": "q", "lease": float("nan")}, "WorkerConfig.lease"),
        ({"name": "q", "lease": float("inf")}, "WorkerConfig.lease"),
        ({"name": "q", "wait": float("nan")}, "WorkerConfig.wait"),
        (
            {"name": "q", "max_payload_bytes": float("nan")},
            "WorkerConfig.max_payload_bytes",
        ),
        ({"name": "q", "max_payload_bytes": 1.5}, "WorkerConfig.max_payload_bytes"),
        # Past any wait's limit (threading.TIMEOUT_MAX): refused here, not later
        # as an OverflowError in the loop or in the lease keeper's thread.
        ({"name": "q", "wait": 1e10}, "WorkerConfig.wait"),
        ({"name": "q", "lease": 1e11}, "WorkerConfig.lease"),
        # An int past a float's range (math.isfinite would raise OverflowError).
        ({"name": "q", "max_tasks_per_run": 10**400}, "WorkerConfig.max_tasks_per_run"),
    ],
)
def test_bad_worker_config_names_the_field(kwargs: dict, field: str) -> None:
    """Each invalid value raises ConfigError whose message names the field."""
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        WorkerConfig(**kwargs)


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: RetryPolicy(base_delay=-1), "RetryPolicy.base_delay"),
        (lambda: RetryPolicy(factor=0.5), "RetryPolicy.factor"),
        (lambda: Timeouts(timeout=-1), "Timeouts.timeout"),
        (lambda: Timeouts(timeout=float("nan")), "Timeouts.timeout"),
        (lambda: RetryPolicy(base_delay=float("nan")), "RetryPolicy.base_delay"),
        (lambda: Timeouts(grace_period=-0.1), "Timeouts.grace_period"),
        (lambda: Starvation(time_with_no_tasks=0), "Starvation.time_with_no_tasks"),
        (lambda: RetryPolicy(max_delay=1e308), "RetryPolicy.max_delay"),
        (lambda: RetryPolicy(jitter=1e308), "RetryPolicy.jitter"),
        (lambda: Timeouts(timeout=1e12), "Timeouts.timeout"),
        (lambda: Starvation(time_with_no_tasks=1e12), "Starvation.time_with_no_tasks"),
    ],
)
def test_bad_nested_config_names_the_field(factory, field: str) -> None:  # type: ignore[no-untyped-def]
    """Nested policies validate their own fields the same way."""
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        factory()


def test_delivery_mode_accepts_its_string_value() -> None:
    """The delivery mode may be given as the enum or its string value."""
    config = WorkerConfig(name="q", delivery="at_most_once")

    assert config.delivery is DeliveryMode.AT_MOST_ONCE


def test_retry_delay_grows_exponentially_within_jitter_and_cap() -> None:
    """Delays grow by ``factor`` per attempt, stay within the jitter band and cap."""
    policy = RetryPolicy(base_delay=1.0, factor=2.0, max_delay=10.0, jitter=0.5)
    rng = random.Random(7)

    delays = [policy.delay(attempt, rng) for attempt in range(6)]

    for attempt, delay in enumerate(delays):
        base = min(10.0, 2.0**attempt)
        assert base <= delay <= base * 1.5
    assert delays[-1] <= 15.0


def test_retry_delay_survives_huge_attempt_counts() -> None:
    """A very large attempt number does not overflow; it is capped."""
    policy = RetryPolicy(base_delay=1.0, max_delay=30.0, jitter=0.0)

    assert policy.delay(10_000, random.Random(1)) == 30.0


def test_retry_delay_survives_a_huge_factor() -> None:
    """``factor ** attempt`` overflows a float long before 64 attempts when the
    factor is big; the delay is then the cap (or 0 with no base delay), and the
    retry is not lost to an OverflowError inside the worker's settlement."""
    policy = RetryPolicy(base_delay=1.0, factor=1e6, max_delay=60.0, jitter=0.0)
    no_base = RetryPolicy(base_delay=0.0, factor=1e6, max_delay=60.0, jitter=0.0)

    assert policy.delay(60, random.Random(1)) == 60.0
    assert no_base.delay(60, random.Random(1)) == 0.0
