"""Fixtures for the sqlite backend: a fresh database file per test, closed after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sergeant.adapters.sqlite import SqliteBroker


@pytest.fixture
def sqlite_broker(tmp_path: Path) -> Iterator[SqliteBroker]:
    """A SqliteBroker on a new file under ``tmp_path``, closed after the test."""
    broker = SqliteBroker(str(tmp_path / "broker.db"))
    yield broker
    broker.close()
