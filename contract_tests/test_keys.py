"""The SupportsKeys contract: a small bytes key-value store beside the queues.

The fixture ``keys_broker`` yields a fresh, namespaced broker that claims
``SupportsKeys``. Ttl tests use real, short durations.
"""

from __future__ import annotations

import time
from typing import Any

from contract_tests._refusals import refuses_each


class TestKeysContract:
    def test_set_then_get(self, keys_broker: Any) -> None:
        """A stored value is read back unchanged."""
        keys_broker.set_key("k", b"value")

        value = keys_broker.get_key("k")

        assert value == b"value"

    def test_missing_key_is_none(self, keys_broker: Any) -> None:
        """Reading a key never set returns None."""
        value = keys_broker.get_key("missing")

        assert value is None

    def test_set_overwrites(self, keys_broker: Any) -> None:
        """Setting an existing key replaces its value."""
        keys_broker.set_key("k", b"old")

        keys_broker.set_key("k", b"new")

        assert keys_broker.get_key("k") == b"new"

    def test_arbitrary_bytes_round_trip(self, keys_broker: Any) -> None:
        """Every byte value, and the empty value, round-trips exactly."""
        every_byte = bytes(range(256)) * 4

        keys_broker.set_key("all", every_byte)
        keys_broker.set_key("empty", b"")

        assert keys_broker.get_key("all") == every_byte
        assert keys_broker.get_key("empty") == b""

    def test_keys_are_independent(self, keys_broker: Any) -> None:
        """Distinct keys hold distinct values."""
        keys_broker.set_key("a", b"1")
        keys_broker.set_key("b", b"2")

        keys_broker.delete_key("a")

        assert keys_broker.get_key("a") is None
        assert keys_broker.get_key("b") == b"2"

    def test_delete_returns_whether_the_key_existed(self, keys_broker: Any) -> None:
        """delete_key removes the key and returns True, then False once it is gone."""
        keys_broker.set_key("k", b"v")

        first = keys_broker.delete_key("k")
        second = keys_broker.delete_key("k")

        assert first is True
        assert second is False
        assert keys_broker.get_key("k") is None

    def test_ttl_expiry(self, keys_broker: Any) -> None:
        """A key set with a ttl is readable until the ttl lapses, then missing."""
        keys_broker.set_key("k", b"v", ttl=0.3)
        early = keys_broker.get_key("k")

        time.sleep(0.6)

        assert early == b"v"
        assert keys_broker.get_key("k") is None

    def test_expired_key_cannot_be_deleted(self, keys_broker: Any) -> None:
        """Deleting a key whose ttl lapsed returns False."""
        keys_broker.set_key("k", b"v", ttl=0.3)
        time.sleep(0.6)

        deleted = keys_broker.delete_key("k")

        assert deleted is False

    def test_set_without_ttl_clears_an_earlier_ttl(self, keys_broker: Any) -> None:
        """Replacing a key without a ttl makes it permanent."""
        keys_broker.set_key("k", b"old", ttl=0.3)

        keys_broker.set_key("k", b"new")
        time.sleep(0.6)

        assert keys_broker.get_key("k") == b"new"

    def test_a_ttl_that_is_no_duration_is_refused_and_stores_nothing(
        self, keys_broker: Any
    ) -> None:
        """A ttl that is not a finite number of seconds > 0 raises ValueError (as
        a lock's does) and stores nothing: NaN or inf would make the key live
        for ever on one broker and fail deep in the driver on another."""
        refuses_each(
            lambda bad: keys_broker.set_key("k", b"v", ttl=bad),
            (0, -1.0, float("nan"), float("inf"), 10**400, "5", True),
            "ttl",
        )

        assert keys_broker.get_key("k") is None
