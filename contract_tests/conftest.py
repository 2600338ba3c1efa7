"""The adapter tables: one row per adapter, and the port fixtures parametrized over them.

Adding an adapter means adding its row here (and its backend fixture under
``tests/support/``); every suite in this folder then runs against it unchanged.
Suites take only the port fixtures below and never import a concrete adapter.
"""

from __future__ import annotations

from typing import Any

import pytest

# name -> (backend fixture name, capabilities claimed, marks)
# capabilities: "inspection" (SupportsInspection), "locks" (SupportsLocks),
# "keys" (SupportsKeys). Every broker row must claim all three to be complete.
BROKERS: dict[str, tuple[str, frozenset[str], tuple[Any, ...]]] = {}

# name -> fixture name building the codec (compositions, not only classes)
CODECS: dict[str, str] = {}

# name -> fixture name building the executor
EXECUTORS: dict[str, str] = {}

# name -> fixture name building a watchdog that fires
WATCHDOGS: dict[str, str] = {}


def _broker_params(capability: str | None = None) -> list[Any]:
    return [
        pytest.param(fixture, id=name, marks=marks)
        for name, (fixture, caps, marks) in BROKERS.items()
        if capability is None or capability in caps
    ]


def _params(table: dict[str, str]) -> list[Any]:
    return [pytest.param(fixture, id=name) for name, fixture in table.items()]


@pytest.fixture(params=_broker_params())
def broker(request: pytest.FixtureRequest) -> Any:
    """A fresh, empty broker of every registered kind."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_broker_params("inspection"))
def inspecting_broker(request: pytest.FixtureRequest) -> Any:
    """A fresh broker that claims ``SupportsInspection``."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_broker_params("locks"))
def lock_broker(request: pytest.FixtureRequest) -> Any:
    """A fresh broker that claims ``SupportsLocks``."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_broker_params("keys"))
def keys_broker(request: pytest.FixtureRequest) -> Any:
    """A fresh broker that claims ``SupportsKeys``."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_params(CODECS))
def codec(request: pytest.FixtureRequest) -> Any:
    """Every registered codec composition."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_params(EXECUTORS))
def executor(request: pytest.FixtureRequest) -> Any:
    """Every registered executor, shut down after the test."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_params(WATCHDOGS))
def watchdog(request: pytest.FixtureRequest) -> Any:
    """Every registered watchdog that enforces deadlines, closed after the test."""
    return request.getfixturevalue(request.param)
