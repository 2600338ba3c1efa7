"""The Broker contract: what every broker adapter must do, run unchanged against each.

The fixture ``broker`` yields a fresh, empty, namespaced broker. Payloads are
arbitrary bytes (no codec is involved). Time-based tests use real, short durations
because the brokers run against real servers: leases of ~0.3 s, sleeps of ~0.5 s,
and generous bounds on anything measured.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from contract_tests._refusals import refuses_each
from sergeant.protocols import Delivery, QueueLengths
from sergeant.task import Priority

SHORT_LEASE = 0.3
PAST_SHORT = 0.6  # comfortably longer than SHORT_LEASE and the short etas below
# Not a number of seconds >= 0: refused by every call that takes a duration.
BAD_SECONDS = (float("nan"), float("inf"), -1.0, 10**400, "5", True)


def _payloads(deliveries: list[Delivery]) -> list[bytes]:
    return [d.payload for d in deliveries]


def _setup_every_place(broker: Any) -> None:
    """Leave queue "q" with 1 ready, 1 delayed, 1 in-flight task and 1 dead letter."""
    broker.push("q", [b"a", b"b", b"c"])
    broker.push("q", [b"later"], eta=time.time() + 60)
    first, _second = broker.reserve("q", owner="w1", count=2, lease=60)
    broker.dead_letter("q", first, "poison")


class TestBrokerContract:
    def test_pushed_payload_is_reserved_unchanged_with_one_delivery(
        self, broker: Any
    ) -> None:
        """A pushed payload is reserved byte for byte, on its first delivery."""
        payload = bytes(range(256))
        broker.push("q", [payload])

        got = broker.reserve("q", owner="w1")

        assert _payloads(got) == [payload]
        assert got[0].deliveries == 1

    def test_reserve_on_empty_queue_returns_nothing(self, broker: Any) -> None:
        """Reserving from an empty queue without waiting returns an empty list."""
        got = broker.reserve("q", owner="w1", count=5)

        assert got == []

    def test_push_of_nothing_stores_nothing(self, broker: Any) -> None:
        """Pushing an empty sequence is a no-op."""
        broker.push("q", [])

        assert broker.lengths("q") == QueueLengths()

    def test_fifo_within_a_priority(self, broker: Any) -> None:
        """Ready tasks of one priority come out in push order, across pushes."""
        broker.push("q", [b"1", b"2", b"3"])
        broker.push("q", [b"4", b"5"])

        got = broker.reserve("q", owner="w1", count=3) + broker.reserve(
            "q", owner="w1", count=3
        )

        assert _payloads(got) == [b"1", b"2", b"3", b"4", b"5"]

    def test_high_priority_before_normal(self, broker: Any) -> None:
        """Ready HIGH tasks are handed out before NORMAL ones pushed earlier."""
        broker.push("q", [b"n1", b"n2"], priority=Priority.NORMAL)
        broker.push("q", [b"h1", b"h2"], priority=Priority.HIGH)

        got = broker.reserve("q", owner="w1", count=4)

        assert _payloads(got) == [b"h1", b"h2", b"n1", b"n2"]

    def test_count_larger_than_available_returns_what_there_is(
        self, broker: Any
    ) -> None:
        """Reserving more tasks than are ready returns all the ready ones."""
        broker.push("q", [b"a", b"b", b"c"])

        got = broker.reserve("q", owner="w1", count=10)

        assert _payloads(got) == [b"a", b"b", b"c"]

    def test_duplicate_payloads_are_distinct_tasks(self, broker: Any) -> None:
        """Two identical payloads are two tasks with distinct receipts."""
        broker.push("q", [b"same", b"same"])

        got = broker.reserve("q", owner="w1", count=2)
        broker.ack("q", got[:1])

        assert _payloads(got) == [b"same", b"same"]
        assert got[0].receipt != got[1].receipt
        assert broker.lengths("q") == QueueLengths(in_flight=1)

    def test_queues_are_isolated(self, broker: Any) -> None:
        """Tasks of one queue are never reserved, counted or purged through another."""
        broker.push("a", [b"a1", b"a2"])
        broker.push("b", [b"b1"])

        got = broker.reserve("a", owner="w1", count=10)
        purged = broker.purge("a")

        assert _payloads(got) == [b"a1", b"a2"]
        assert purged == 2
        assert broker.lengths("b") == QueueLengths(ready=1)
        assert _payloads(broker.reserve("b", owner="w1", count=10)) == [b"b1"]

    def test_future_eta_is_delayed_until_it_passes(self, broker: Any) -> None:
        """A task with a future eta is delayed, not reserved, until the eta passes."""
        broker.push("q", [b"later"], eta=time.time() + SHORT_LEASE)

        early = broker.reserve("q", owner="w1")
        lengths_before = broker.lengths("q")
        time.sleep(PAST_SHORT)
        lengths_after = broker.lengths("q")
        late = broker.reserve("q", owner="w1")

        assert early == []
        assert lengths_before == QueueLengths(delayed=1)
        assert lengths_after.ready + lengths_after.delayed == 1
        assert _payloads(late) == [b"later"]

    def test_past_eta_is_ready_at_once(self, broker: Any) -> None:
        """A task whose eta has already passed is ready immediately."""
        broker.push("q", [b"now"], eta=time.time() - 10)

        got = broker.reserve("q", owner="w1")

        assert _payloads(got) == [b"now"]

    def test_due_delayed_high_task_beats_ready_normal_backlog(
        self, broker: Any
    ) -> None:
        """A HIGH task whose eta has passed comes before NORMAL tasks already ready."""
        broker.push("q", [b"n1", b"n2"])
        broker.push("q", [b"h"], priority=Priority.HIGH, eta=time.time() + 0.2)
        time.sleep(PAST_SHORT)

        got = broker.reserve("q", owner="w1")

        assert _payloads(got) == [b"h"]

    def test_leased_task_is_not_handed_out_again_while_leased(
        self, broker: Any
    ) -> None:
        """A task under a live lease is in flight and not reserved by anyone else."""
        broker.push("q", [b"a"])
        broker.reserve("q", owner="w1", lease=60)

        again = broker.reserve("q", owner="w2")

        assert again == []
        assert broker.lengths("q") == QueueLengths(in_flight=1)

    def test_lapsed_lease_redelivers_with_deliveries_incremented(
        self, broker: Any
    ) -> None:
        """An unacked task whose lease lapses goes to another owner as delivery 2."""
        broker.push("q", [b"a"])
        broker.reserve("q", owner="w1", lease=SHORT_LEASE)
        time.sleep(PAST_SHORT)

        again = broker.reserve("q", owner="w2", lease=60)

        assert _payloads(again) == [b"a"]
        assert again[0].deliveries == 2
        assert broker.lengths("q") == QueueLengths(in_flight=1)

    def test_ack_removes_for_good(self, broker: Any) -> None:
        """An acked task is gone: not counted and not redelivered after its lease."""
        broker.push("q", [b"a", b"b"])
        got = broker.reserve("q", owner="w1", count=2, lease=SHORT_LEASE)

        broker.ack("q", got)
        time.sleep(PAST_SHORT)

        assert broker.lengths("q") == QueueLengths()
        assert broker.reserve("q", owner="w2", count=2) == []

    def test_acking_twice_is_harmless(self, broker: Any) -> None:
        """Acking an already-acked delivery is a no-op that touches no other task."""
        broker.push("q", [b"a", b"b"])
        first = broker.reserve("q", owner="w1")
        broker.ack("q", first)

        broker.ack("q", first)

        assert broker.lengths("q") == QueueLengths(ready=1)

    def test_acking_unknown_receipt_is_harmless(self, broker: Any) -> None:
        """Acking a receipt the broker never issued is a no-op, not an error."""
        broker.push("q", [b"a"])
        held = broker.reserve("q", owner="w1")
        forged = Delivery(receipt="never-issued-receipt", payload=b"a")

        broker.ack("q", [forged])

        assert broker.lengths("q") == QueueLengths(in_flight=1)
        broker.ack("q", held)
        assert broker.lengths("q") == QueueLengths()

    def test_reserve_acks_the_given_deliveries_first(self, broker: Any) -> None:
        """reserve(ack=...) acks those deliveries and then hands out the next tasks."""
        broker.push("q", [b"a", b"b"])
        first = broker.reserve("q", owner="w1")

        second = broker.reserve("q", owner="w1", ack=first)

        assert _payloads(second) == [b"b"]
        assert broker.lengths("q") == QueueLengths(in_flight=1)

    def test_reserve_acks_even_when_nothing_is_ready(self, broker: Any) -> None:
        """reserve(ack=...) on a queue with nothing ready still acks the deliveries."""
        broker.push("q", [b"a"])
        first = broker.reserve("q", owner="w1")

        got = broker.reserve("q", owner="w1", ack=first)

        assert got == []
        assert broker.lengths("q") == QueueLengths()

    def test_a_pop_acks_first_so_a_lapsed_lease_it_settles_is_not_retaken(
        self, broker: Any
    ) -> None:
        """reserve(lease=None, ack=...) acks first, as any reserve does: tasks
        whose lease lapsed, settled by these acks, are gone, not handed out."""
        broker.push("q", [b"a", b"b"])
        held = broker.reserve("q", owner="w1", count=2, lease=SHORT_LEASE)
        time.sleep(PAST_SHORT)

        got = broker.reserve("q", owner="w1", count=10, lease=None, ack=held)

        assert got == []
        assert broker.lengths("q") == QueueLengths()

    def test_a_reserve_takes_normal_tasks_after_the_high_ones(
        self, broker: Any
    ) -> None:
        """A reserve for more than the ready HIGH tasks takes NORMAL ones after
        them, at least once and at most once, on a queue's first reserve too."""
        for lease in (60.0, None):
            queue = f"q{lease}"
            broker.push(queue, [b"n1", b"n2", b"n3"])
            broker.push(queue, [b"h1"], priority=Priority.HIGH)

            got = broker.reserve(queue, owner="w1", count=4, lease=lease)

            assert _payloads(got) == [b"h1", b"n1", b"n2", b"n3"], lease

    def test_reserve_refuses_a_bad_count_or_no_wait_before_acking(
        self, broker: Any
    ) -> None:
        """A count that is not an int >= 1, or a wait of None, raises ValueError
        before the call acks or takes anything."""
        broker.push("q", [b"a", b"b"])
        held = broker.reserve("q", owner="w1", lease=60)
        refuses_each(
            lambda bad: broker.reserve("q", owner="w2", ack=held, count=bad),
            (0, -1, 1.5, True, "2", 2**63),
            "count",
        )
        refuses_each(
            lambda bad: broker.reserve("q", owner="w2", ack=held, wait=bad),
            (None,),
            "wait",
        )

        assert broker.lengths("q") == QueueLengths(ready=1, in_flight=1)

    def test_reserve_without_lease_removes_at_once(self, broker: Any) -> None:
        """With lease=None a reserved task is removed at once: nothing is in flight."""
        broker.push("q", [b"a", b"b"])

        got = broker.reserve("q", owner="w1", count=2, lease=None)
        time.sleep(0.1)

        assert _payloads(got) == [b"a", b"b"]
        assert broker.lengths("q") == QueueLengths()
        assert broker.reserve("q", owner="w2", count=2) == []

    def test_release_puts_back_without_counting_a_delivery(self, broker: Any) -> None:
        """A released task is ready again and its next reservation is delivery 1."""
        broker.push("q", [b"a"])
        got = broker.reserve("q", owner="w1", lease=60)

        broker.release("q", got)
        lengths = broker.lengths("q")
        again = broker.reserve("q", owner="w2", lease=60)

        assert lengths == QueueLengths(ready=1)
        assert _payloads(again) == [b"a"]
        assert again[0].deliveries == 1

    def test_release_with_delay_delays(self, broker: Any) -> None:
        """A task released with a delay is delayed, then ready once the delay passes."""
        broker.push("q", [b"a"])
        got = broker.reserve("q", owner="w1", lease=60)

        broker.release("q", got, delay=SHORT_LEASE)
        early = broker.reserve("q", owner="w2")
        lengths = broker.lengths("q")
        time.sleep(PAST_SHORT)
        late = broker.reserve("q", owner="w2")

        assert early == []
        assert lengths == QueueLengths(delayed=1)
        assert _payloads(late) == [b"a"]

    def test_tasks_released_together_with_a_delay_come_back_in_order(
        self, broker: Any
    ) -> None:
        """Released together, in the order taken, with one delay: due together,
        they come back in that order. (HIGH: a broker over several nodes keeps a
        queue's HIGH tasks on one node.)"""
        broker.push("q", [b"a", b"b", b"c"], priority=Priority.HIGH)
        got = broker.reserve("q", owner="w1", count=3, lease=60)

        broker.release("q", got, delay=SHORT_LEASE)
        time.sleep(PAST_SHORT)
        again = broker.reserve("q", owner="w2", count=3, lease=None)

        assert _payloads(again) == [b"a", b"b", b"c"]

    def test_release_of_unknown_receipt_is_ignored(self, broker: Any) -> None:
        """Releasing a receipt the broker never issued changes nothing."""
        broker.push("q", [b"a"])
        broker.reserve("q", owner="w1", lease=60)

        broker.release("q", [Delivery(receipt="never-issued-receipt", payload=b"a")])

        assert broker.lengths("q") == QueueLengths(in_flight=1)

    def test_release_puts_tasks_back_at_the_head_in_order(self, broker: Any) -> None:
        """Released tasks go ahead of the tasks still waiting, in the order taken."""
        broker.push("q", [b"a", b"b", b"c", b"d", b"e"])
        got = broker.reserve("q", owner="w1", count=2, lease=60)

        broker.release("q", got)
        again = broker.reserve("q", owner="w2", count=5, lease=None)

        assert _payloads(again) == [b"a", b"b", b"c", b"d", b"e"]

    def test_release_puts_tasks_back_in_the_order_given(self, broker: Any) -> None:
        """Released in another order than taken, tasks come back in the order
        given, still ahead of the tasks waiting. (HIGH: a broker over several
        nodes keeps a queue's HIGH tasks on one node.)"""
        broker.push("q", [b"a", b"b", b"c", b"d"], priority=Priority.HIGH)
        got = broker.reserve("q", owner="w1", count=3, lease=60)

        broker.release("q", [got[2], got[0], got[1]])
        again = broker.reserve("q", owner="w2", count=4, lease=None)

        assert _payloads(again) == [b"c", b"a", b"b", b"d"]

    def test_release_keeps_the_order_taken_not_the_order_pushed(
        self, broker: Any
    ) -> None:
        """A delayed task pushed first but due after a ready one is taken second;
        released together, they come back in the order they were taken. (HIGH:
        a broker over several nodes keeps a queue's HIGH tasks on one node, and
        orders tasks within a node only.)"""
        broker.push(
            "q", [b"delayed"], priority=Priority.HIGH, eta=time.time() + SHORT_LEASE
        )
        broker.push("q", [b"ready"], priority=Priority.HIGH)
        first = broker.reserve("q", owner="w1", lease=60)
        time.sleep(PAST_SHORT)
        second = broker.reserve("q", owner="w1", lease=60)

        broker.release("q", first + second)
        again = broker.reserve("q", owner="w2", count=2, lease=None)

        assert _payloads(first + second) == [b"ready", b"delayed"]
        assert _payloads(again) == [b"ready", b"delayed"]

    def test_release_owner_puts_tasks_back_at_the_head_in_order(
        self, broker: Any
    ) -> None:
        """A dead owner's tasks go ahead of the tasks still waiting, in order."""
        broker.push("q", [b"a", b"b", b"c", b"d"])
        broker.reserve("q", owner="dead", count=2, lease=60)

        broker.release_owner("q", "dead")
        again = broker.reserve("q", owner="w2", count=4, lease=None)

        assert _payloads(again) == [b"a", b"b", b"c", b"d"]

    def test_a_stale_receipt_leaves_the_next_holders_lease_alone(
        self, broker: Any
    ) -> None:
        """After a lease lapsed and another owner took the task, the first owner's
        receipt can neither ack, release, extend nor dead-letter it."""
        broker.push("q", [b"a"])
        (stale,) = broker.reserve("q", owner="w1", lease=SHORT_LEASE)
        time.sleep(PAST_SHORT)
        broker.reserve("q", owner="w2", lease=SHORT_LEASE * 4)

        broker.ack("q", [stale])
        broker.release("q", [stale])
        broker.extend("q", [stale], lease=60)
        broker.dead_letter("q", stale, "late verdict of a lapsed holder")
        others = broker.reserve("q", owner="w3", lease=60)
        lengths = broker.lengths("q")
        returned = broker.release_owner("q", "w2")

        assert others == []
        assert lengths.in_flight == 1
        assert returned == 1

    def test_a_released_tasks_old_receipt_leaves_the_next_holders_lease_alone(
        self, broker: Any
    ) -> None:
        """After its holder released a task and another owner reserved it, the old
        receipt can neither ack, extend, release nor dead-letter it: every reserve
        issues a receipt that no earlier holder had, even though a release takes
        its delivery back."""
        broker.push("q", [b"a"])
        (first,) = broker.reserve("q", owner="w1", lease=60)
        broker.release("q", [first])
        (second,) = broker.reserve("q", owner="w2", lease=SHORT_LEASE)

        broker.extend("q", [first], lease=60)
        broker.release("q", [first])
        broker.ack("q", [first])
        broker.dead_letter("q", first, "late verdict of a holder that released it")
        lengths = broker.lengths("q")
        time.sleep(PAST_SHORT)  # w2's lease lapses: the stale extend did not renew it
        again = broker.reserve("q", owner="w3", lease=60)

        assert second.receipt != first.receipt
        assert (lengths.ready, lengths.in_flight) == (0, 1)
        assert _payloads(again) == [b"a"]
        assert again[0].deliveries == 2

    def test_a_lapsed_lease_stays_its_holders_until_a_reserve_retakes_it(
        self, broker: Any
    ) -> None:
        """Neither counting nor pushing reclaims a lapsed lease: until the next
        reserve retakes the task, its holder's late ack or dead-letter settles it."""
        broker.push("q", [b"a", b"b"])
        (acked,) = broker.reserve("q", owner="w1", lease=SHORT_LEASE)
        (killed,) = broker.reserve("q", owner="w1", lease=SHORT_LEASE)
        time.sleep(PAST_SHORT)

        lapsed = broker.lengths("q")
        broker.push("q", [b"c"])
        broker.ack("q", [acked])
        broker.dead_letter("q", killed, "late verdict of a lapsed holder")
        settled = broker.lengths("q")
        rest = broker.reserve("q", owner="w2", count=5, lease=None)

        assert lapsed == QueueLengths(ready=2)
        assert settled == QueueLengths(ready=1, dead=1)
        assert _payloads(rest) == [b"c"]

    def test_settling_under_another_queue_leaves_the_tasks_alone(
        self, broker: Any
    ) -> None:
        """ack, release and extend act only on the queue they name: receipts of
        "emails" settled as "reports" neither remove, return nor renew them."""
        broker.push("emails", [b"a", b"b"])
        got = broker.reserve("emails", owner="w1", count=2, lease=SHORT_LEASE)

        broker.ack("reports", got)
        broker.release("reports", got)
        broker.extend("reports", got, lease=60)
        held = broker.lengths("emails")
        time.sleep(PAST_SHORT)  # the leases lapse: the extend did not renew them
        again = broker.reserve("emails", owner="w2", count=2, lease=60)

        assert held == QueueLengths(in_flight=2)
        assert sorted(_payloads(again)) == [b"a", b"b"]
        assert [d.deliveries for d in again] == [2, 2]

    def test_push_refuses_an_unknown_priority(self, broker: Any) -> None:
        """A priority that is not a Priority raises ValueError and stores nothing."""
        refuses_each(
            lambda bad: broker.push("q", [b"a"], priority=bad), (2, -1, 7), "priority"
        )

        assert broker.lengths("q") == QueueLengths()

    def test_push_refuses_an_eta_that_is_no_time_and_stores_nothing(
        self, broker: Any
    ) -> None:
        """An eta that is not a finite time raises ValueError; nothing is stored."""
        refuses_each(
            lambda bad: broker.push("q", [b"a"], eta=bad),
            (float("nan"), float("inf"), float("-inf"), 10**400, "5", True),
            "eta",
        )

        assert broker.lengths("q") == QueueLengths()

    def test_reserve_refuses_a_bad_lease_or_wait_before_acking_or_taking(
        self, broker: Any
    ) -> None:
        """A lease that is not a finite number of seconds > 0, or a wait that is
        not one >= 0, raises ValueError before the call acks or takes anything
        (a deadline no clock reaches, or one half applied, strands tasks)."""
        broker.push("q", [b"a", b"b"])
        held = broker.reserve("q", owner="w1", lease=60)
        refuses_each(
            lambda bad: broker.reserve("q", owner="w2", ack=held, lease=bad),
            (*BAD_SECONDS, 0),
            "lease",
        )
        refuses_each(
            lambda bad: broker.reserve("q", owner="w2", ack=held, wait=bad),
            BAD_SECONDS,
            "wait",
        )

        assert broker.lengths("q") == QueueLengths(ready=1, in_flight=1)

    def test_release_and_extend_refuse_bad_seconds_and_keep_the_lease(
        self, broker: Any
    ) -> None:
        """release with a delay, or extend with a lease, that is not a finite
        number of seconds (>= 0, > 0) raises ValueError; the lease stands."""
        broker.push("q", [b"a"])
        got = broker.reserve("q", owner="w1", lease=60)
        refuses_each(
            lambda bad: broker.release("q", got, delay=bad), BAD_SECONDS, "delay"
        )
        refuses_each(
            lambda bad: broker.extend("q", got, lease=bad), (*BAD_SECONDS, 0), "lease"
        )

        assert broker.lengths("q") == QueueLengths(in_flight=1)
        assert broker.reserve("q", owner="w2") == []

    def test_extend_keeps_a_lease_alive_past_its_deadline(self, broker: Any) -> None:
        """An extended lease holds the task past its original deadline."""
        broker.push("q", [b"a"])
        got = broker.reserve("q", owner="w1", lease=SHORT_LEASE)

        broker.extend("q", got, lease=30)
        time.sleep(PAST_SHORT)
        other = broker.reserve("q", owner="w2")

        assert other == []
        assert broker.lengths("q") == QueueLengths(in_flight=1)

    def test_release_owner_returns_only_that_owners_tasks(self, broker: Any) -> None:
        """release_owner readies exactly that owner's leased tasks and counts them."""
        broker.push("q", [b"a", b"b", b"c"])
        broker.reserve("q", owner="dead", count=2, lease=60)
        broker.reserve("q", owner="alive", count=1, lease=60)

        released = broker.release_owner("q", "dead")
        nobody = broker.release_owner("q", "nobody")

        assert released == 2
        assert nobody == 0
        assert broker.lengths("q") == QueueLengths(ready=2, in_flight=1)

    def test_release_owner_keeps_the_delivery_count(self, broker: Any) -> None:
        """Tasks returned by release_owner keep their count: next is delivery 2."""
        broker.push("q", [b"a", b"b"])
        broker.reserve("q", owner="dead", count=2, lease=60)
        broker.release_owner("q", "dead")

        again = broker.reserve("q", owner="w2", count=2, lease=60)

        assert sorted(_payloads(again)) == [b"a", b"b"]
        assert [d.deliveries for d in again] == [2, 2]

    def test_dead_letter_moves_out_of_flight(self, broker: Any) -> None:
        """A dead-lettered task leaves the in-flight set for the dead-letter store."""
        broker.push("q", [b"a"])
        got = broker.reserve("q", owner="w1", lease=SHORT_LEASE)

        broker.dead_letter("q", got[0], "cannot decode")
        time.sleep(PAST_SHORT)

        assert broker.lengths("q") == QueueLengths(dead=1)
        assert broker.reserve("q", owner="w2") == []

    def test_a_holder_whose_lease_went_to_another_records_no_dead_letter(
        self, broker: Any
    ) -> None:
        """Once a lapsed task is leased again, its old holder's dead-lettering
        records nothing: the task lives on with its new holder, and a second copy
        in the dead-letter store would run it twice once replayed."""
        broker.push("q", [b"a"])
        stale = broker.reserve("q", owner="w1", lease=SHORT_LEASE)
        time.sleep(PAST_SHORT)
        again = broker.reserve("q", owner="w2", lease=60)

        broker.dead_letter("q", stale[0], "poison")

        assert _payloads(again) == [b"a"]
        assert broker.lengths("q") == QueueLengths(in_flight=1)

    def test_lengths_count_each_place(self, broker: Any) -> None:
        """lengths counts ready, delayed, in-flight and dead tasks separately."""
        _setup_every_place(broker)

        lengths = broker.lengths("q")

        assert lengths == QueueLengths(ready=1, delayed=1, in_flight=1, dead=1)

    def test_lengths_of_unknown_queue_are_zero(self, broker: Any) -> None:
        """A queue never pushed to has zero everywhere."""
        lengths = broker.lengths("never-used")

        assert lengths == QueueLengths()

    def test_purge_drops_live_tasks_and_keeps_dead_letters(self, broker: Any) -> None:
        """purge drops ready, delayed and in-flight tasks (counted) and keeps dead."""
        _setup_every_place(broker)

        purged = broker.purge("q")

        assert purged == 3
        assert broker.lengths("q") == QueueLengths(dead=1)
        assert broker.reserve("q", owner="w1", count=10) == []

    def test_purge_of_empty_queue_returns_zero(self, broker: Any) -> None:
        """Purging an empty queue returns 0."""
        purged = broker.purge("q")

        assert purged == 0

    def test_bulk_push_and_batched_reserve_keep_count_and_order(
        self, broker: Any
    ) -> None:
        """10,000 tasks pushed at once come back whole and in order through batches."""
        payloads = [b"%d" % i for i in range(10_000)]
        broker.push("q", payloads)
        got: list[Delivery] = []

        while batch := broker.reserve("q", owner="w1", count=500, lease=60):
            got.extend(batch)
            broker.ack("q", batch)

        assert _payloads(got) == payloads
        assert broker.lengths("q") == QueueLengths()

    def test_wait_on_empty_queue_blocks_then_returns_nothing(self, broker: Any) -> None:
        """reserve(wait=w) on an empty queue returns [] after about w seconds."""
        started = time.monotonic()

        got = broker.reserve("q", owner="w1", wait=0.5)
        elapsed = time.monotonic() - started

        assert got == []
        assert 0.4 <= elapsed < 5.0

    def test_wait_returns_early_when_a_task_is_pushed(self, broker: Any) -> None:
        """reserve(wait=w) returns a task pushed meanwhile well before w passes."""
        pusher = threading.Timer(0.2, broker.push, args=("q", [b"a"]))
        started = time.monotonic()
        pusher.start()

        got = broker.reserve("q", owner="w1", wait=10.0)
        elapsed = time.monotonic() - started
        pusher.join()

        assert _payloads(got) == [b"a"]
        assert elapsed < 5.0
