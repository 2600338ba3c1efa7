"""The SupportsInspection contract: listing queues and handling dead letters.

The fixture ``inspecting_broker`` yields a fresh, empty, namespaced broker that
claims ``SupportsInspection``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sergeant.protocols import QueueLengths


def _kill(broker: Any, queue: str, payloads: list[bytes], reason: str = "") -> None:
    """Push ``payloads`` to ``queue`` and dead-letter them one by one, in order."""
    broker.push(queue, payloads)
    for i, delivery in enumerate(broker.reserve(queue, owner="w", count=len(payloads))):
        broker.dead_letter(queue, delivery, reason or f"reason-{i}")


class TestInspectionContract:
    def test_queues_lists_queues_holding_tasks_or_dead_letters(
        self, inspecting_broker: Any
    ) -> None:
        """queues() sorts every queue with a ready, delayed, leased or dead task."""
        broker = inspecting_broker
        broker.push("b-ready", [b"x"])
        broker.push("a-delayed", [b"x"], eta=time.time() + 60)
        broker.push("c-leased", [b"x"])
        broker.reserve("c-leased", owner="w", lease=60)
        _kill(broker, "d-dead", [b"x"])

        names = broker.queues()

        assert names == ["a-delayed", "b-ready", "c-leased", "d-dead"]

    def test_queues_omits_emptied_queues(self, inspecting_broker: Any) -> None:
        """A queue whose tasks were all acked or purged is not listed."""
        broker = inspecting_broker
        broker.push("acked", [b"x"])
        broker.ack("acked", broker.reserve("acked", owner="w"))
        broker.push("purged", [b"x"])
        broker.purge("purged")
        broker.push("kept", [b"x"])

        names = broker.queues()

        assert names == ["kept"]

    def test_dead_letter_keeps_payload_reason_and_time(
        self, inspecting_broker: Any
    ) -> None:
        """A dead letter keeps the exact payload, the reason and when it died."""
        broker = inspecting_broker
        payload = b"\x00\xff not decodable \x80"
        before = time.time()
        _kill(broker, "q", [payload], reason="DecodeError: truncated")
        after = time.time()

        (letter,) = broker.dead_letters("q")

        assert letter.payload == payload
        assert letter.reason == "DecodeError: truncated"
        assert before - 1.0 <= letter.dead_at <= after + 1.0

    def test_a_reason_holding_a_lone_surrogate_is_still_recorded(
        self, broker: Any
    ) -> None:
        """A reason may hold a lone surrogate (a file name decoded with
        ``surrogateescape``), which UTF-8 cannot carry: the task is still
        dead-lettered, not left in flight behind an encoding error."""
        broker.push("q", [b"a"])
        got = broker.reserve("q", owner="w1", lease=60)
        reason = "cannot open " + os.fsdecode(b"report-\xff.csv")

        broker.dead_letter("q", got[0], reason)

        assert broker.lengths("q") == QueueLengths(dead=1)
        [letter] = broker.dead_letters("q")
        assert letter.payload == b"a"
        assert letter.reason.startswith("cannot open report-")
        assert letter.reason.endswith(".csv")

    def test_dead_letters_oldest_first_up_to_limit(
        self, inspecting_broker: Any
    ) -> None:
        """dead_letters(limit=n) returns the n oldest dead letters, oldest first."""
        broker = inspecting_broker
        _kill(broker, "q", [b"0", b"1", b"2"])

        letters = broker.dead_letters("q", limit=2)
        everything = broker.dead_letters("q")

        assert [d.payload for d in letters] == [b"0", b"1"]
        assert [d.reason for d in letters] == ["reason-0", "reason-1"]
        assert [d.payload for d in everything] == [b"0", b"1", b"2"]

    def test_dead_lettering_a_receipt_twice_keeps_the_first_letter(
        self, inspecting_broker: Any
    ) -> None:
        """A second dead_letter with the same receipt (a repeated verdict, a retry
        after a lost reply) records nothing: the first letter keeps its reason,
        its time and its place among the dead letters, oldest first."""
        broker = inspecting_broker
        broker.push("q", [b"a", b"b"])
        (first,) = broker.reserve("q", owner="w1", lease=60)
        broker.dead_letter("q", first, "first reason")
        (second,) = broker.reserve("q", owner="w1", lease=60)
        broker.dead_letter("q", second, "b's reason")

        broker.dead_letter("q", first, "second reason")

        letters = broker.dead_letters("q")
        assert [(d.payload, d.reason) for d in letters] == [
            (b"a", "first reason"),
            (b"b", "b's reason"),
        ]
        assert broker.lengths("q") == QueueLengths(dead=2)

    def test_dead_letters_of_unknown_queue_are_empty(
        self, inspecting_broker: Any
    ) -> None:
        """A queue with no dead letters lists none."""
        letters = inspecting_broker.dead_letters("never-used")

        assert letters == []

    def test_replay_dead_pushes_them_back_as_ready(
        self, inspecting_broker: Any
    ) -> None:
        """replay_dead turns dead letters into fresh ready tasks, oldest first."""
        broker = inspecting_broker
        _kill(broker, "q", [b"0", b"1", b"2"])

        replayed = broker.replay_dead("q")
        lengths = broker.lengths("q")
        got = broker.reserve("q", owner="w", count=10)

        assert replayed == 3
        assert lengths == QueueLengths(ready=3)
        assert [d.payload for d in got] == [b"0", b"1", b"2"]
        assert [d.deliveries for d in got] == [1, 1, 1]
        assert broker.dead_letters("q") == []

    def test_replay_dead_with_limit_replays_the_oldest(
        self, inspecting_broker: Any
    ) -> None:
        """replay_dead(limit=n) replays only the n oldest dead letters."""
        broker = inspecting_broker
        _kill(broker, "q", [b"0", b"1", b"2"])

        replayed = broker.replay_dead("q", limit=1)

        assert replayed == 1
        assert broker.lengths("q") == QueueLengths(ready=1, dead=2)
        assert [d.payload for d in broker.dead_letters("q")] == [b"1", b"2"]

    def test_a_limit_of_zero_takes_none_and_a_negative_one_is_refused(
        self, inspecting_broker: Any
    ) -> None:
        """limit=0 lists and replays nothing; a negative limit is a ValueError
        (it meant all, none or all but one, depending on the broker)."""
        broker = inspecting_broker
        _kill(broker, "q", [b"0", b"1", b"2"])

        listed, replayed = (
            broker.dead_letters("q", limit=0),
            broker.replay_dead("q", limit=0),
        )
        refused = 0
        for call in (broker.dead_letters, broker.replay_dead):
            try:
                call("q", limit=-1)
            except ValueError:
                refused += 1

        assert (listed, replayed, refused) == ([], 0, 2)
        assert broker.lengths("q") == QueueLengths(dead=3)

    def test_purge_dead_drops_only_dead_letters(self, inspecting_broker: Any) -> None:
        """purge_dead drops (and counts) the dead letters and keeps live tasks."""
        broker = inspecting_broker
        _kill(broker, "q", [b"0", b"1"])
        broker.push("q", [b"live"])

        dropped = broker.purge_dead("q")

        assert dropped == 2
        assert broker.lengths("q") == QueueLengths(ready=1)
        assert broker.dead_letters("q") == []
