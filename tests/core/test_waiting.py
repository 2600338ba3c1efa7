"""The polling loop behind every broker's Lock.acquire timeout."""

from __future__ import annotations

import time

from sergeant.waiting import poll


def test_a_zero_timeout_tries_exactly_once() -> None:
    """timeout=0 makes one attempt and gives up without sleeping."""
    calls = []

    result = poll(lambda: calls.append(1) or False, timeout=0, check_interval=1.0)

    assert (result, len(calls)) == (False, 1)


def test_it_returns_true_as_soon_as_an_attempt_succeeds() -> None:
    """The third attempt succeeding ends the wait with True."""
    calls = []

    result = poll(
        lambda: len(calls.append(1) or calls) >= 3, timeout=5, check_interval=0.001
    )

    assert (result, len(calls)) == (True, 3)


def test_it_gives_up_at_the_timeout_not_at_the_next_interval() -> None:
    """With an interval longer than the timeout, the wait ends near the timeout."""
    started = time.monotonic()

    result = poll(lambda: False, timeout=0.1, check_interval=10.0)

    assert result is False
    assert 0.1 <= time.monotonic() - started < 2.0


def test_no_timeout_keeps_polling_until_success() -> None:
    """timeout=None polls until the attempt succeeds."""
    calls = []

    result = poll(
        lambda: len(calls.append(1) or calls) >= 5, timeout=None, check_interval=0.001
    )

    assert (result, len(calls)) == (True, 5)
