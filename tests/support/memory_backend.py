"""Fixtures for the memory backend: a fresh ``MemoryBroker`` per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sergeant.adapters.memory import MemoryBroker


@pytest.fixture
def memory_broker() -> Iterator[MemoryBroker]:
    """A fresh, empty in-process broker on the real wall clock, closed afterwards."""
    broker = MemoryBroker()
    yield broker
    broker.close()
