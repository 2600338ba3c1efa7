"""Conformance: every broker row is a Broker and claims exactly what it supports.

The capabilities claimed in ``BROKERS`` gate which suites run against an adapter, so
a claim that drifts from the adapter's real surface would silently skip a suite
(or run one that cannot pass). Both directions are checked.
"""

from __future__ import annotations

from typing import Any

import pytest

from contract_tests.conftest import BROKERS
from sergeant.protocols import (
    Broker,
    Lock,
    SupportsInspection,
    SupportsKeys,
    SupportsLocks,
    SupportsPrefetch,
)

CAPABILITIES: dict[str, type] = {
    "inspection": SupportsInspection,
    "locks": SupportsLocks,
    "keys": SupportsKeys,
    "prefetch": SupportsPrefetch,
}

ROWS = [
    pytest.param(fixture, claimed, id=name, marks=marks)
    for name, (fixture, claimed, marks) in BROKERS.items()
]


@pytest.mark.parametrize(("fixture", "claimed"), ROWS)
class TestConformance:
    def test_adapter_is_a_broker(
        self, request: pytest.FixtureRequest, fixture: str, claimed: frozenset[str]
    ) -> None:
        """Every registered broker adapter satisfies the Broker protocol."""
        adapter = request.getfixturevalue(fixture)

        assert isinstance(adapter, Broker)

    def test_claimed_capabilities_match_the_adapter(
        self, request: pytest.FixtureRequest, fixture: str, claimed: frozenset[str]
    ) -> None:
        """A row claims a capability exactly when its adapter implements it."""
        adapter = request.getfixturevalue(fixture)

        actual = {
            name for name, proto in CAPABILITIES.items() if isinstance(adapter, proto)
        }

        assert set(claimed) == actual
        assert set(claimed) <= set(CAPABILITIES)


class TestLockConformance:
    def test_lock_handles_satisfy_the_lock_protocol(self, lock_broker: Any) -> None:
        """A broker that claims locks hands out handles satisfying the Lock protocol."""
        handle = lock_broker.lock("conformance")

        assert isinstance(handle, Lock)
