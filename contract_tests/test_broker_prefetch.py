"""The SupportsPrefetch contract: a reserve started now and collected later.

The fixture ``prefetching_broker`` yields a fresh, empty, namespaced broker that
claims ``SupportsPrefetch``. Between ``begin_reserve`` and collecting its batch the
broker must serve other calls as usual; the batch, once collected, is leased exactly
as ``reserve`` would have leased it.
"""

from __future__ import annotations

import time
from typing import Any

from contract_tests._refusals import refuses_each
from sergeant.protocols import QueueLengths
from sergeant.task import Priority


class TestPrefetchContract:
    def test_collected_batch_is_leased_like_a_reserve(
        self, prefetching_broker: Any
    ) -> None:
        """The batch comes back in order, first deliveries, counted in flight."""
        broker = prefetching_broker
        broker.push("q", [b"a", b"b", b"c"])

        pending = broker.begin_reserve("q", owner="w", count=2, lease=60)
        got = pending()

        assert [d.payload for d in got] == [b"a", b"b"]
        assert [d.deliveries for d in got] == [1, 1]
        assert broker.lengths("q") == QueueLengths(ready=1, in_flight=2)

    def test_other_calls_work_while_a_reserve_is_pending(
        self, prefetching_broker: Any
    ) -> None:
        """Push, lengths, reserve, ack and dead_letter all work before collecting."""
        broker = prefetching_broker
        broker.push("q", [b"a", b"b"])

        pending = broker.begin_reserve("q", owner="w1", count=1, lease=60)
        other = broker.reserve("q", owner="w2", count=1, lease=60)
        broker.push("q", [b"c"])
        broker.dead_letter("q", other[0], "poison")
        counted = broker.lengths("q")
        got = pending()
        broker.ack("q", got)

        assert {d.payload for d in got + other} == {b"a", b"b"}
        assert counted.dead == 1
        assert broker.lengths("q") == QueueLengths(ready=1, dead=1)

    def test_acks_given_to_begin_reserve_are_applied(
        self, prefetching_broker: Any
    ) -> None:
        """ack=... settles those deliveries, like reserve(ack=...)."""
        broker = prefetching_broker
        broker.push("q", [b"a", b"b"])
        first = broker.reserve("q", owner="w", count=1, lease=60)

        second = broker.begin_reserve("q", owner="w", count=1, lease=60, ack=first)()

        assert [d.payload for d in second] == [b"b"]
        assert broker.lengths("q") == QueueLengths(in_flight=1)

    def test_empty_queue_collects_nothing_without_waiting(
        self, prefetching_broker: Any
    ) -> None:
        """Nothing ready: the batch is empty, at once (begin_reserve never blocks)."""
        broker = prefetching_broker
        started = time.monotonic()

        got = broker.begin_reserve("q", owner="w", count=5, lease=60)()

        assert got == []
        assert time.monotonic() - started < 0.5

    def test_high_priority_first_and_count_respected(
        self, prefetching_broker: Any
    ) -> None:
        """HIGH before NORMAL, and never more than ``count``."""
        broker = prefetching_broker
        broker.push("q", [b"n1", b"n2"])
        broker.push("q", [b"h1"], priority=Priority.HIGH)

        got = broker.begin_reserve("q", owner="w", count=2, lease=60)()

        assert [d.payload for d in got] == [b"h1", b"n1"]

    def test_prefetched_batch_can_be_released_untouched(
        self, prefetching_broker: Any
    ) -> None:
        """Released unrun, the tasks are ready again and not counted as delivered."""
        broker = prefetching_broker
        broker.push("q", [b"a", b"b"])
        got = broker.begin_reserve("q", owner="w", count=2, lease=60)()

        broker.release("q", got)
        again = broker.reserve("q", owner="w2", count=2, lease=60)

        assert [d.payload for d in again] == [b"a", b"b"]
        assert [d.deliveries for d in again] == [1, 1]

    def test_prefetched_batch_belongs_to_its_owner(
        self, prefetching_broker: Any
    ) -> None:
        """release_owner returns a prefetched batch, as it does a reserved one."""
        broker = prefetching_broker
        broker.push("q", [b"a", b"b"])
        broker.begin_reserve("q", owner="dead", count=2, lease=60)()

        released = broker.release_owner("q", "dead")

        assert released == 2
        assert broker.lengths("q") == QueueLengths(ready=2)

    def test_a_bad_lease_is_refused_before_acking_or_taking(
        self, prefetching_broker: Any
    ) -> None:
        """begin_reserve with a lease that is not a finite number of seconds > 0
        raises ValueError at once; nothing is acked or taken."""
        broker = prefetching_broker
        broker.push("q", [b"a", b"b"])
        held = broker.reserve("q", owner="w1", lease=60)
        refuses_each(
            lambda bad: broker.begin_reserve("q", owner="w2", lease=bad, ack=held),
            (float("nan"), float("inf"), -1.0, 0, 10**400, "5", True),
            "lease",
        )

        assert broker.lengths("q") == QueueLengths(ready=1, in_flight=1)
