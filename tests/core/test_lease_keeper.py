"""LeaseKeeper: the renewal thread outlives whatever one renewal raises."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import pytest

from sergeant._lease_keeper import LeaseKeeper
from sergeant.errors import BrokerUnavailable
from sergeant.protocols import Delivery


class _Flaky:
    """A broker whose ``extend`` raises the given errors in turn, then records."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.renewed: list[float] = []

    def extend(
        self, queue: str, deliveries: Sequence[Delivery], *, lease: float
    ) -> Any:
        if self.errors:
            raise self.errors.pop(0)
        self.renewed.append(lease)


@pytest.mark.parametrize(
    ("error", "level"),
    [
        (BrokerUnavailable("down"), logging.WARNING),
        (RuntimeError("an adapter's bug"), logging.ERROR),
    ],
    ids=["broker-error", "other-error"],
)
def test_renewals_go_on_after_one_raised(
    error: Exception, level: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A renewal that raises, a BrokerError or anything else, is logged and the
    next ones still run: a thread ended by it would let every lease lapse."""
    broker = _Flaky(error)
    keeper = LeaseKeeper(
        broker,  # type: ignore[arg-type]
        "q",
        lease=0.06,
        logger=logging.getLogger("sergeant.test"),
    )
    keeper.hold([Delivery("r", b"p")])
    give_up = time.monotonic() + 5.0
    while len(broker.renewed) < 2 and time.monotonic() < give_up:
        time.sleep(0.01)
    keeper.close()

    assert broker.renewed[:2] == [0.06, 0.06]
    assert [r.levelno for r in caplog.records] == [level]
