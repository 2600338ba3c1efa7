"""What is particular to MemoryBroker: its injected clock and its test helpers.

The shared behaviour is in ``contract_tests/``; here a fake clock makes leases,
etas and ttls lapse without sleeping, and ``drain``/``join`` are checked.
"""

from __future__ import annotations

import threading
import time

import pytest
from sergeant.adapters.memory import MemoryBroker

from sergeant.clock import FakeClock
from sergeant.errors import BrokerError
from sergeant.protocols import QueueLengths
from sergeant.task import Priority


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def broker(clock: FakeClock) -> MemoryBroker:
    return MemoryBroker(clock=clock)


def test_lease_lapses_when_the_fake_clock_passes_it(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    """A lease lapses exactly when the injected clock passes its deadline."""
    broker.push("q", [b"a"])
    broker.reserve("q", owner="w1", lease=30)
    clock.advance(29.9)
    before = broker.reserve("q", owner="w2")
    clock.advance(0.1)

    after = broker.reserve("q", owner="w2")

    assert before == []
    assert [(d.payload, d.deliveries) for d in after] == [(b"a", 2)]


def test_eta_and_release_delay_follow_the_fake_clock(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    """Delayed pushes and delayed releases become ready when the clock says so."""
    broker.push("q", [b"later"], eta=clock() + 10)
    broker.push("q", [b"now"])
    (now,) = broker.reserve("q", owner="w")
    broker.release("q", [now], delay=5)
    clock.advance(5)
    first = broker.reserve("q", owner="w", count=5)
    clock.advance(5)

    second = broker.reserve("q", owner="w", count=5)

    assert [d.payload for d in first] == [b"now"]
    assert [d.payload for d in second] == [b"later"]


def test_extend_moves_the_deadline_on_the_fake_clock(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    """An extended lease lapses ``lease`` seconds after the extension, not before."""
    broker.push("q", [b"a"])
    held = broker.reserve("q", owner="w1", lease=10)
    clock.advance(8)
    broker.extend("q", held, lease=10)
    clock.advance(9)
    still_held = broker.reserve("q", owner="w2")
    clock.advance(1)

    lapsed = broker.reserve("q", owner="w2")

    assert still_held == []
    assert [d.payload for d in lapsed] == [b"a"]


def test_stale_receipt_cannot_ack_a_redelivered_task(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    """Each handout has its own receipt, so a lapsed holder's ack is ignored."""
    broker.push("q", [b"a"])
    stale = broker.reserve("q", owner="w1", lease=1)
    clock.advance(2)
    broker.reserve("q", owner="w2", lease=60)

    broker.ack("q", stale)

    assert broker.lengths("q") == QueueLengths(in_flight=1)


def test_dead_at_comes_from_the_clock(broker: MemoryBroker, clock: FakeClock) -> None:
    """A dead letter is stamped with the injected clock's time."""
    broker.push("q", [b"a"])
    (delivery,) = broker.reserve("q", owner="w")

    broker.dead_letter("q", delivery, "poison")

    assert broker.dead_letters("q")[0].dead_at == clock()


def test_dead_letter_of_an_unleased_delivery_is_kept(broker: MemoryBroker) -> None:
    """A task reserved without a lease (at-most-once) can still be dead-lettered."""
    broker.push("q", [b"poison"])
    (delivery,) = broker.reserve("q", owner="w", lease=None)

    broker.dead_letter("q", delivery, "cannot decode")

    assert [d.payload for d in broker.dead_letters("q")] == [b"poison"]


def test_lock_and_key_ttls_follow_the_fake_clock(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    """Lock and key ttls are measured on the injected clock."""
    lock = broker.lock("l")
    lock.acquire(timeout=0, ttl=10)
    broker.set_key("k", b"v", ttl=10)
    clock.advance(4)
    remaining = lock.get_ttl()
    clock.advance(6)

    lapsed_lock = lock.is_locked()

    assert remaining == 6
    assert lapsed_lock is False
    assert broker.get_key("k") is None


def test_drain_returns_pending_payloads_and_leaves_leased_ones(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    """drain removes ready (priority order) then delayed payloads, not leased ones."""
    broker.push("q", [b"leased"])
    broker.reserve("q", owner="w")
    broker.push("q", [b"n1", b"n2"])
    broker.push("q", [b"h"], priority=Priority.HIGH)
    broker.push("q", [b"late"], eta=clock() + 100)
    broker.push("q", [b"soon"], eta=clock() + 10)

    drained = broker.drain("q")

    assert drained == [b"h", b"n1", b"n2", b"soon", b"late"]
    assert broker.lengths("q") == QueueLengths(in_flight=1)


def test_join_returns_once_a_consumer_acks_everything() -> None:
    """join waits until a consumer thread has acked every task."""
    broker = MemoryBroker()
    broker.push("q", [b"a", b"b", b"c"])

    def consume() -> None:
        while batch := broker.reserve("q", owner="c", count=1):
            time.sleep(0.05)
            broker.ack("q", batch)

    consumer = threading.Thread(target=consume)
    consumer.start()
    broker.join("q", timeout=10)
    consumer.join()

    assert broker.lengths("q") == QueueLengths()


def test_join_ignores_dead_letters(broker: MemoryBroker) -> None:
    """A queue holding only dead letters counts as joined."""
    broker.push("q", [b"a"])
    (delivery,) = broker.reserve("q", owner="w")
    broker.dead_letter("q", delivery, "poison")

    broker.join("q", timeout=0)

    assert broker.lengths("q") == QueueLengths(dead=1)


def test_join_times_out_on_a_busy_queue(broker: MemoryBroker) -> None:
    """join raises TimeoutError when the queue is still busy after the timeout."""
    broker.push("q", [b"a"])

    with pytest.raises(TimeoutError, match="still busy"):
        broker.join("q", timeout=0.1)


def test_waiting_reserve_wakes_when_a_delayed_task_is_due() -> None:
    """reserve(wait=...) hands out a delayed task as soon as its eta passes."""
    broker = MemoryBroker()
    broker.push("q", [b"a"], eta=time.time() + 0.2)
    started = time.monotonic()

    got = broker.reserve("q", owner="w", wait=10)

    assert [d.payload for d in got] == [b"a"]
    assert time.monotonic() - started < 5


def test_closed_broker_refuses_work(broker: MemoryBroker) -> None:
    """After close, queue operations raise BrokerError."""
    broker.close()

    with pytest.raises(BrokerError, match="closed"):
        broker.push("q", [b"a"])


def test_closing_wakes_a_waiting_reserve() -> None:
    """close() makes a reserve blocked in wait raise BrokerError promptly."""
    broker = MemoryBroker()
    closer = threading.Timer(0.1, broker.close)
    closer.start()
    started = time.monotonic()

    with pytest.raises(BrokerError):
        broker.reserve("q", owner="w", wait=10)

    closer.join()
    assert time.monotonic() - started < 5


def test_lapsed_leases_come_back_in_the_order_they_were_taken(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    """Leases lapsing together return to the head in hand-out order, whatever
    order their deadlines fall in."""
    broker.push("q", [b"a", b"b", b"c", b"d"])
    broker.reserve("q", owner="w1", lease=5)  # a
    broker.reserve("q", owner="w2", lease=10)  # b
    broker.reserve("q", owner="w3", lease=3)  # c: its lease ends first
    clock.advance(11)

    again = broker.reserve("q", owner="w4", count=4, lease=None)

    assert [d.payload for d in again] == [b"a", b"b", b"c", b"d"]


def test_a_task_that_fell_due_stays_ahead_of_later_pushes(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    """A delayed task whose eta passed is ready (and counted so) before a task
    pushed afterwards, as on the other brokers."""
    broker.push("q", [b"x"], eta=clock() + 1)
    clock.advance(2)
    broker.push("q", [b"y"])

    lengths = broker.lengths("q")
    got = broker.reserve("q", owner="w", count=2, lease=None)

    assert lengths == QueueLengths(ready=2)
    assert [d.payload for d in got] == [b"x", b"y"]


def test_counting_or_pushing_leaves_a_lapsed_lease_to_its_holder(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    """lengths() counts a lapsed lease as ready and a push promotes due delayed
    tasks, but neither reclaims the lease: until a reserve retakes the task, its
    holder's late ack removes it and its late dead-letter only records it."""
    broker.push("q", [b"acked", b"killed"])
    (acked,) = broker.reserve("q", owner="w1", lease=10)
    (killed,) = broker.reserve("q", owner="w1", lease=10)
    broker.push("q", [b"due"], eta=clock() + 5)
    clock.advance(11)

    lapsed = broker.lengths("q")
    broker.push("q", [b"new"])
    broker.ack("q", [acked])
    broker.dead_letter("q", killed, "late verdict")
    settled = broker.lengths("q")
    rest = broker.reserve("q", owner="w2", count=5, lease=None)

    assert lapsed == QueueLengths(ready=3)
    assert settled == QueueLengths(ready=2, dead=1)
    assert [d.payload for d in rest] == [b"due", b"new"]


def test_a_reserve_after_a_push_still_puts_lapsed_tasks_first(
    broker: MemoryBroker, clock: FakeClock
) -> None:
    """A lapsed task left unreclaimed by a push still comes back at the head when
    a reserve reclaims it, ahead of what was pushed meanwhile."""
    broker.push("q", [b"a", b"b"])
    broker.reserve("q", owner="w1", lease=10)
    clock.advance(11)
    broker.push("q", [b"c"])

    got = broker.reserve("q", owner="w2", count=3, lease=None)

    assert [(d.payload, d.deliveries) for d in got] == [(b"a", 2), (b"b", 1), (b"c", 1)]
