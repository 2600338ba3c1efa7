"""Fixtures of the Mongo broker's own tests: a recording database, a fake clock."""

from __future__ import annotations

import pytest
from sergeant.adapters.mongo import MongoBroker

from sergeant.clock import FakeClock
from tests.adapters.mongo.recording import Recorder, T


@pytest.fixture
def wall() -> FakeClock:
    """The broker's wall clock, moved by hand."""
    return FakeClock(start=T)


@pytest.fixture
def rec() -> Recorder:
    """A recording database."""
    return Recorder()


@pytest.fixture
def mb(rec: Recorder, wall: FakeClock) -> MongoBroker:
    """A broker over the recording database and the fake clock."""
    return MongoBroker(rec, clock=wall, retry_budget=0.3)
