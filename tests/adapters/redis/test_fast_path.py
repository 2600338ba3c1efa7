"""The Redis broker's hot path: whole-batch acks and the dedicated connection.

Real ``redis-server`` processes, started by the fixtures in
``tests/support/redis_backend.py``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sergeant.adapters.codecs import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.redis import RedisBroker, _node
from sergeant.adapters.redis._node import LISTED_FROM, MAINTAIN_EVERY
from sergeant.adapters.watchdogs.null import NullWatchdog

from sergeant.config import WorkerConfig
from sergeant.errors import BrokerUnavailable
from sergeant.producer import Producer
from sergeant.protocols import QueueLengths
from sergeant.task import Priority, Task
from sergeant.worker import Worker
from tests.support.redis_backend import (
    TEST_RETRY,
    delete_namespace,
    new_namespace,
    payloads,
)
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.redis


def _lease_keys(raw: redis.Redis, namespace: str) -> list[bytes]:
    return sorted(raw.scan_iter(match=f"{{{namespace}:q}}:leases*"))


def test_a_whole_batch_ack_leaves_no_lease_behind(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Acking every task of a batch, on its own or with the next reserve, drops it."""
    broker, raw, namespace = single
    broker.push("q", [b"%d" % i for i in range(20)])
    first = broker.reserve("q", owner="w", count=10)

    second = broker.reserve("q", owner="w", count=10, ack=first)
    broker.ack("q", second)

    assert len(first) == len(second) == 10
    assert broker.lengths("q") == QueueLengths()
    assert _lease_keys(raw, namespace) == []


def test_acks_mixing_a_whole_batch_and_part_of_another_settle_only_those(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """One ack may cover a whole batch, part of another, in any order."""
    broker, _, _ = single
    broker.push("q", [b"%d" % i for i in range(8)])
    a = broker.reserve("q", owner="w", count=4)
    b = broker.reserve("q", owner="w", count=4)

    broker.ack("q", [b[1], *reversed(a), b[3]])
    broker.release("q", [b[0], b[2]])

    back = broker.reserve("q", owner="w", count=8)
    assert payloads(back) == [b"4", b"6"]


def test_a_connection_killed_by_the_server_is_replaced(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """A dedicated connection the server dropped is replaced; nothing is lost."""
    broker, raw, _ = single
    broker.push("q", [b"a", b"b"])
    first = broker.reserve("q", owner="w")

    raw.client_kill_filter(_type="normal", skipme=True)
    second = broker.reserve("q", owner="w", ack=first)

    assert payloads(first + second) == [b"a", b"b"]
    assert broker.lengths("q") == QueueLengths(in_flight=1)


def test_a_push_after_the_server_dropped_the_connection_lands_once(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """The MULTI/EXEC push retries on a fresh connection; the tasks land once."""
    broker, raw, _ = single
    broker.push("q", [b"a"])  # the dedicated connection is open

    raw.client_kill_filter(_type="normal", skipme=True)
    broker.push("q", [b"b", b"c"])

    got = broker.reserve("q", owner="w", count=10, lease=None)
    assert payloads(got) == [b"a", b"b", b"c"]


def test_threads_sharing_a_broker_get_their_own_replies(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Calls from several threads at once never read each other's replies."""
    broker, _, _ = single
    broker.push("q", [b"x"] * 400)
    counts: list[int] = []

    def drain() -> None:
        got = broker.reserve("q", owner="w", count=2)
        while got:
            broker.extend("q", got, lease=60)
            counts.append(len(got))
            got = broker.reserve("q", owner="w", count=2, ack=got)

    threads = [threading.Thread(target=drain) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sum(counts) == 400
    assert broker.lengths("q") == QueueLengths()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_a_thread_holds_the_brokers_locks_can_use_them(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """A lock another thread holds at the fork (the lease keeper inside the
    broker, say) would stay held for ever in the child: the broker's locks are
    made new there, so the child's calls that take them do not hang."""
    broker, _, _ = single
    held = [broker._nodes[0].guard._lock, broker._late_lock]
    entered = threading.Event()
    leave = threading.Event()

    def hold() -> None:
        with held[0], held[1]:
            entered.set()
            leave.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    entered.wait(5)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            broker._defer_acks("q", 0, ["m", "*"])  # both take _late_lock
            taken = broker._take_late_acks("q")
            if broker._nodes[0].guard.probe_due() and taken == {0: ["m", "*"]}:
                code = 0
        finally:
            os._exit(code)
    leave.set()
    holder.join(5)
    give_up = time.monotonic() + 10
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > give_up:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the child hung on a lock held at the fork")
        time.sleep(0.01)

    assert os.waitstatus_to_exitcode(done[1]) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_does_not_use_the_parents_connection(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Parent and forked child pushing at once each get their own replies."""
    broker, _, _ = single
    broker.push("q", [b"warm-up"])  # the parent's dedicated connection is open

    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            for _ in range(300):
                broker.push("q", [b"child"])
        except BaseException:
            code = 1
        os._exit(code)
    for _ in range(300):
        broker.push("q", [b"parent"])
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert broker.lengths("q") == QueueLengths(ready=601)


# -- at most once without Lua on the payload path ------------------------------------


class _Clock:
    """A settable wall clock for the broker (etas and maintenance intervals)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clocked(
    redis_server: RedisServer,
) -> Iterator[tuple[RedisBroker, redis.Redis, _Clock]]:
    """A broker on the shared server whose clock the test sets."""
    namespace = new_namespace()
    clock = _Clock()
    broker = RedisBroker(
        redis_server.client(), namespace=namespace, retry=TEST_RETRY, clock=clock
    )
    raw = redis_server.client()
    yield broker, raw, clock
    broker.close()
    raw.close()
    delete_namespace([redis_server], namespace)


def test_a_busy_pop_skips_maintenance_but_a_short_one_promotes_due_tasks(
    clocked: tuple[RedisBroker, redis.Redis, _Clock],
) -> None:
    """Full pops inside MAINTAIN_EVERY send no script; a short pop still gets due tasks.

    A NORMAL task falling due while the ready list is full would only join its
    tail (a HIGH one waits up to MAINTAIN_EVERY, docs/redis.md says so); once the
    pop comes up short, the due task is promoted and handed out in that same call.
    """
    broker, raw, clock = clocked
    broker._nodes[0].monotonic = lambda: 50.0  # never past MAINTAIN_EVERY
    broker.push("q", [b"1", b"2", b"3"])
    broker.push("q", [b"later"], eta=clock.now + 0.01)
    first = broker.reserve("q", owner="w", lease=None)  # maintains: nothing due
    clock.now += 0.02  # "later" is due; still inside MAINTAIN_EVERY
    raw.config_resetstat()

    second = broker.reserve("q", owner="w", lease=None)
    scripts_in_a_full_pop = raw.info("commandstats").get("cmdstat_evalsha", {})
    rest = broker.reserve("q", owner="w", count=5, lease=None)

    assert payloads(first + second) == [b"1", b"2"]
    assert scripts_in_a_full_pop == {}
    assert payloads(rest) == [b"3", b"later"]
    assert broker.lengths("q") == QueueLengths()


def test_a_pop_that_another_client_emptied_after_the_upkeep_says_nothing_due(
    clocked: tuple[RedisBroker, redis.Redis, _Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upkeep said more were ready than asked for (a woken caller over several
    nodes), then another client's pop came between it and this one's, which found
    none: no due time comes back, not the upkeep's '+' (read as a time, it raised
    ValueError out of reserve)."""
    broker, _, _ = clocked
    node = broker._nodes[0]
    monkeypatch.setattr(node, "_call", lambda commands: [b"+", None])

    got = node._pop(node.keys("q"), ("1.0", 1, "2", "m"), 1, "2")

    assert got == ([], "", False)


def test_maintenance_keeps_its_pace_when_the_wall_clock_steps_back(
    clocked: tuple[RedisBroker, redis.Redis, _Clock],
) -> None:
    """The maintenance interval is measured on the monotonic clock: after the wall
    clock steps back (NTP, a resumed VM), a busy pop still promotes a task falling
    due within MAINTAIN_EVERY, not only once the wall clock has caught up."""
    broker, _, clock = clocked
    node = broker._nodes[0]
    ticks = _Clock()
    node.monotonic = ticks  # the maintenance interval's clock, set by the test
    broker.push("q", [b"n%d" % i for i in range(200)])
    broker.reserve("q", owner="w", count=5, lease=None)  # maintains
    clock.now -= 30.0  # the wall clock steps back
    broker.push("q", [b"urgent"], priority=Priority.HIGH, eta=clock.now + 0.2)
    clock.now += 0.3  # due now
    ticks.now += MAINTAIN_EVERY + 0.3

    got = broker.reserve("q", owner="w", count=5, lease=None)

    assert payloads(got) == [b"urgent", b"n5", b"n6", b"n7", b"n8"]


def test_an_at_most_once_pop_reports_a_lapsed_tasks_delivery_count(
    clocked: tuple[RedisBroker, redis.Redis, _Clock],
) -> None:
    """Counts are read from the popped entries: a task whose lease lapsed is on
    its second delivery, a fresh one on its first."""
    broker, _, clock = clocked
    broker._nodes[0].monotonic = clock  # 11 s pass for the maintenance interval too
    broker.push("q", [b"lapsed"])
    broker.reserve("q", owner="w", lease=10.0)
    broker.push("q", [b"fresh"])
    clock.now += 11.0

    got = broker.reserve("q", owner="w", count=5, lease=None)

    assert [(d.payload, d.deliveries) for d in got] == [(b"lapsed", 2), (b"fresh", 1)]


def test_an_at_most_once_pop_survives_a_script_flush(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """After SCRIPT FLUSH the maintenance script is loaded again; no task is lost."""
    broker, raw, _ = single
    broker.push("q", [b"a", b"b"])
    got = broker.reserve("q", owner="w", lease=None)

    raw.script_flush()
    more = broker.reserve("q", owner="w", count=5, lease=None)
    none = broker.reserve("q", owner="w", count=5, lease=None)

    assert payloads(got + more) == [b"a", b"b"]
    assert none == []
    assert broker.lengths("q") == QueueLengths()


def test_a_woken_reserve_passes_the_wake_up_on_to_the_next_waiter(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Two idle workers, one push of two tasks: both wake, each takes one.

    The push leaves one wake-up token; the worker that takes it sees a task left
    after its own and passes the token on, so the second waiter does not sleep
    until its wait runs out.
    """
    broker, _, _ = single
    woke: list[float] = []

    def wait(lease: float | None) -> None:
        got = broker.reserve("q", owner="w", wait=20.0, lease=lease)
        if got:
            woke.append(time.monotonic())

    waiters = [threading.Thread(target=wait, args=(lease,)) for lease in (60.0, None)]
    for waiter in waiters:
        waiter.start()
    time.sleep(0.3)  # both are blocked now
    pushed = time.monotonic()
    broker.push("q", [b"a", b"b"])
    for waiter in waiters:
        waiter.join(timeout=30)

    assert len(woke) == 2
    assert max(woke) - pushed < 2.0


def test_tasks_popped_before_an_outage_are_handed_out_not_dropped(
    single: tuple[RedisBroker, redis.Redis, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short plain pop followed by an unreachable server returns what it popped.

    At most once, popped entries exist nowhere else: raising would lose them.
    """
    broker, _, _ = single
    node = broker._nodes[0]
    plain_pop = node._pop

    def pop_then_fail(keys: list[str], maintain: Any, count: int, levels: str) -> Any:
        if maintain is None:
            return plain_pop(keys, maintain, count, levels)
        raise BrokerUnavailable("redis test: unreachable")

    broker.push("q", [b"a"])
    node._maintained["q"] = node.monotonic()  # inside the interval: plain pop first
    monkeypatch.setattr(node, "_pop", pop_then_fail)

    got, _ = node.pop("q", time.time(), 5, "2", "")
    with pytest.raises(BrokerUnavailable):
        node.pop("q", time.time(), 5, "2", "")

    assert len(got) == 1
    assert got[0].endswith(b"a")


# -- at least once, a few at a time: the lean reserve script between upkeeps ------


def _calls(raw: redis.Redis, command: str) -> int:
    """How many times the server ran ``command`` (scripts' calls included)."""
    return int(raw.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_reserves_between_upkeeps_lease_and_ack_without_maintenance(
    clocked: tuple[RedisBroker, redis.Redis, _Clock],
) -> None:
    """One at a time, each reserve acking the one before: inside MAINTAIN_EVERY
    no reserve looks for lapsed leases or due tasks (the lean script), every task
    is handed out once and in order, and the acks leave nothing behind; past the
    interval the next reserve maintains again."""
    broker, raw, _ = clocked
    ticks = _Clock()
    broker._nodes[0].monotonic = ticks
    broker.push("q", [b"%d" % i for i in range(12)])
    got = broker.reserve("q", owner="w")  # the whole script: maintains
    raw.config_resetstat()

    ran = list(got)
    for _ in range(10):
        got = broker.reserve("q", owner="w", ack=got)
        ran += got
    lean_lookups = _calls(raw, "zrangebyscore")
    ticks.now += MAINTAIN_EVERY
    ran += broker.reserve("q", owner="w", ack=got)
    later_lookups = _calls(raw, "zrangebyscore")

    assert payloads(ran) == [b"%d" % i for i in range(12)]
    assert [d.deliveries for d in ran] == [1] * 12
    assert lean_lookups == 0
    assert later_lookups == 2  # lapsed leases, due delayed tasks
    assert broker.lengths("q") == QueueLengths(in_flight=1)


def test_a_busy_reserve_takes_lapsed_tasks_at_the_interval_and_due_ones_at_once(
    clocked: tuple[RedisBroker, redis.Redis, _Clock],
) -> None:
    """While tasks are ready, a lease lapsing inside MAINTAIN_EVERY waits for the
    next upkeep, which puts its task back at the front of the NORMAL tasks; a
    delayed task falling due brings the upkeep forward (HIGH: first of all)."""
    broker, _, clock = clocked
    ticks = _Clock()
    broker._nodes[0].monotonic = ticks
    broker.push("q", [b"lapsing"])
    broker.reserve("q", owner="dead", lease=1.0)
    broker.push("q", [b"%d" % i for i in range(5)])
    broker.push("q", [b"urgent"], priority=Priority.HIGH, eta=clock.now + 3.5)
    first = broker.reserve("q", owner="w")  # maintains: nothing due yet
    clock.now += 2.0  # "lapsing" has lapsed; "urgent" is not due yet

    inside = broker.reserve("q", owner="w", ack=first)
    ticks.now += MAINTAIN_EVERY
    after = broker.reserve("q", owner="w", count=2, ack=inside)
    clock.now += 2.0  # "urgent" is due, inside the next interval
    due = broker.reserve("q", owner="w", ack=after)

    assert payloads(first + inside) == [b"0", b"1"]
    assert [(d.payload, d.deliveries) for d in after] == [
        (b"lapsing", 2),
        (b"2", 1),
    ]
    assert payloads(due) == [b"urgent"]


def test_a_lean_reserve_that_finds_nothing_ready_maintains_and_says_when_next(
    clocked: tuple[RedisBroker, redis.Redis, _Clock],
) -> None:
    """Inside MAINTAIN_EVERY with the ready lists empty, a reserve still promotes
    a task that fell due, and, with none, reports when the next one will be."""
    broker, raw, clock = clocked
    broker._nodes[0].monotonic = lambda: 50.0  # never past MAINTAIN_EVERY
    node = broker._nodes[0]
    broker.push("q", [b"a"])
    broker.push("q", [b"soon"], eta=clock.now + 1.0)
    broker.push("q", [b"later"], eta=clock.now + 7.0)
    first = broker.reserve("q", owner="w")  # maintains
    clock.now += 2.0
    raw.config_resetstat()

    due = broker.reserve("q", owner="w", ack=first)
    broker.ack("q", due)
    args = _node.reserve_args(clock.now, 1, 60.0, "b:w", woken=False)
    entries, nxt, _ = node.reserve("q", args)

    assert payloads(due) == [b"soon"]
    assert entries == []
    assert float(nxt) == pytest.approx(clock.now + 5.0)
    assert _calls(raw, "zrangebyscore") == 4  # two lean reserves, each maintained
    assert broker.lengths("q") == QueueLengths(delayed=1)


@pytest.mark.parametrize("count", [1, 2])
def test_a_lean_reserve_hands_out_a_high_task_fallen_due_before_ready_ones(
    clocked: tuple[RedisBroker, redis.Redis, _Clock], count: int
) -> None:
    """Inside MAINTAIN_EVERY, with NORMAL tasks ready, a HIGH task that fell due
    since the last upkeep still comes first (the contract's HIGH before NORMAL):
    the lean script sees the due head of the delayed set and promotes it."""
    broker, _, clock = clocked
    broker._nodes[0].monotonic = lambda: 50.0  # never past MAINTAIN_EVERY
    broker.push("q", [b"n1", b"n2", b"n3", b"n4"])
    broker.push("q", [b"h"], priority=Priority.HIGH, eta=clock.now + 0.01)
    first = broker.reserve("q", owner="w", count=count)  # maintains: none due
    clock.now += 0.02

    second = broker.reserve("q", owner="w", count=count, ack=first)

    assert payloads(first) == [b"n1", b"n2"][:count]
    assert payloads(second) == [b"h", b"n3"][:count]


def test_a_lean_reserve_whose_reply_was_lost_hands_out_the_same_task(
    clocked: tuple[RedisBroker, redis.Redis, _Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lean script ran, its reply was lost: the retry (flagged as one, so it
    looks for a batch leased under the call's id) leases nothing more."""
    broker, _, _ = clocked
    node = broker._nodes[0]
    node.monotonic = lambda: 50.0
    broker.push("q", [b"a", b"b", b"c"])
    first = broker.reserve("q", owner="w")  # maintains
    real_call = node._call
    lost: list[bool] = []

    def call_losing_the_lean_reply(commands: Any) -> list[Any]:
        replies = real_call(commands)
        if not lost and node.reserve_few_script.sha in commands[0]:
            lost.append(True)
            raise redis.ConnectionError("reply lost")
        return replies

    monkeypatch.setattr(node, "_call", call_losing_the_lean_reply)
    second = broker.reserve("q", owner="w", ack=first)

    assert lost
    assert payloads(first + second) == [b"a", b"b"]
    assert broker.lengths("q") == QueueLengths(ready=1, in_flight=1)


@pytest.mark.parametrize("prefetched", [False, True], ids=["reserve", "prefetch"])
def test_a_lean_reserve_survives_a_script_flush(
    clocked: tuple[RedisBroker, redis.Redis, _Clock], prefetched: bool
) -> None:
    """NOSCRIPT for the lean script: loaded, sent again, nothing lost or doubled."""
    broker, raw, _ = clocked
    broker._nodes[0].monotonic = lambda: 50.0
    broker.push("q", [b"a", b"b", b"c"])
    first = broker.reserve("q", owner="w")  # maintains
    raw.script_flush()

    if prefetched:
        second = broker.begin_reserve("q", owner="w", ack=first)()
    else:
        second = broker.reserve("q", owner="w", ack=first)
    third = broker.reserve("q", owner="w", ack=second)

    assert payloads(first + second + third) == [b"a", b"b", b"c"]
    assert broker.lengths("q") == QueueLengths(in_flight=1)


# Reserves of fewer than LISTED_FROM tasks get their entries from the script, the
# others from an LRANGE in the same MULTI: four replies to read instead of one.
SIZES = pytest.mark.parametrize("size", [2, LISTED_FROM], ids=["script", "listed"])


@SIZES
def test_a_prefetch_whose_reply_was_lost_hands_out_the_same_batch(
    single: tuple[RedisBroker, redis.Redis, str], size: int
) -> None:
    """The server ran the request, the connection died: the retry leases no more."""
    broker, raw, _ = single
    broker.push("q", [b"%d" % i for i in range(size + 1)])
    pending = broker.begin_reserve("q", owner="w", count=size, lease=60)
    time.sleep(0.1)  # the server has run it; the reply waits unread

    raw.client_kill_filter(_type="normal", skipme=True)
    got = pending()

    assert payloads(got) == [b"%d" % i for i in range(size)]
    assert broker.lengths("q") == QueueLengths(ready=1, in_flight=size)


@SIZES
def test_a_prefetch_survives_a_script_flush(
    single: tuple[RedisBroker, redis.Redis, str], size: int
) -> None:
    """A request that meets NOSCRIPT is run again once the script is loaded."""
    broker, raw, _ = single
    broker.push("q", [b"a"])
    broker.reserve("q", owner="w", count=1, lease=None)  # scripts loaded, then lost
    broker.push("q", [b"b"])
    raw.script_flush()

    got = broker.begin_reserve("q", owner="w", count=size, lease=60)()

    assert payloads(got) == [b"b"]
    assert broker.lengths("q") == QueueLengths(in_flight=1)


def test_two_prefetches_in_flight_get_distinct_batches(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """The second request, with the connection taken, runs at once, in step."""
    broker, _, _ = single
    broker.push("q", [b"a", b"b", b"c", b"d"])

    first = broker.begin_reserve("q", owner="w", count=2, lease=60)
    second = broker.begin_reserve("q", owner="w", count=2, lease=60)
    got = second() + first()

    assert sorted(payloads(got)) == [b"a", b"b", b"c", b"d"]
    assert broker.lengths("q") == QueueLengths(in_flight=4)


def test_a_prefetching_worker_runs_every_task_once(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Batches of 1,000 with the next one always in flight: 2,500 tasks, each once."""
    broker, _, _ = single
    ran: list[int] = []

    class Counting(Worker):
        def work(self, task: Task) -> None:
            ran.append(task.kwargs["n"])

    Producer(broker=broker, codec=PickleCodec(), queue="jobs").push_tasks(
        [{"n": n} for n in range(2500)]
    )
    config = WorkerConfig(
        name="jobs", tasks_per_transaction=1000, max_tasks_per_run=2500, prefetch=1
    )
    worker = Counting(
        broker=broker,
        codec=PickleCodec(),
        executor=SerialExecutor(),
        watchdog=NullWatchdog(),
        config=config,
    )

    worker.run()

    assert ran == list(range(2500))
    assert broker.lengths("jobs") == QueueLengths()


def test_requests_sent_behind_one_another_are_read_in_order(
    single: tuple[RedisBroker, redis.Redis, str],
) -> None:
    """Three prefetches in flight on one connection, one of them a MULTI (four
    replies), collected out of order."""
    broker, _, _ = single
    n = LISTED_FROM
    broker.push("q", [b"%d" % i for i in range(n + 4)])

    first = broker.begin_reserve("q", owner="w", count=1, lease=60)
    second = broker.begin_reserve("q", owner="w", count=n, lease=60)
    third = broker.begin_reserve("q", owner="w", count=2, lease=60)
    broker.push("q", [b"e"])  # a pooled connection, meanwhile
    got = [payloads(third()), payloads(first()), payloads(second())]

    numbers = [b"%d" % i for i in range(n + 3)]
    assert got == [numbers[n + 1 : n + 3], numbers[:1], numbers[1 : n + 1]]
    assert broker.lengths("q") == QueueLengths(ready=2, in_flight=n + 3)


@pytest.mark.parametrize(("one", "two"), [(1, 1), (LISTED_FROM, 1), (1, LISTED_FROM)])
def test_a_lost_connection_fails_every_request_in_flight_over_to_a_retry(
    single: tuple[RedisBroker, redis.Redis, str], one: int, two: int
) -> None:
    """Two requests ran, both replies were lost: each retry finds its own batch."""
    broker, raw, _ = single
    broker.push("q", [b"%d" % i for i in range(one + two + 1)])
    first = broker.begin_reserve("q", owner="w", count=one, lease=60)
    second = broker.begin_reserve("q", owner="w", count=two, lease=60)
    time.sleep(0.1)

    raw.client_kill_filter(_type="normal", skipme=True)
    got = payloads(first()) + payloads(second())

    assert got == [b"%d" % i for i in range(one + two)]
    assert broker.lengths("q") == QueueLengths(ready=1, in_flight=one + two)


@pytest.mark.parametrize("by_the_sender", [True, False], ids=["sender", "other"])
def test_closing_with_a_request_in_flight_does_not_hang(
    redis_server: RedisServer, by_the_sender: bool
) -> None:
    """A begun, never collected reserve: close returns at once, from the thread
    that began it or from another (the sender still alive, holding the
    connection), and the task is either still ready (the server dropped the
    request with the connection) or leased (it ran, and comes back when the lease
    lapses), never lost."""
    namespace = new_namespace()
    broker = RedisBroker(redis_server.client(), namespace=namespace, retry=TEST_RETRY)
    began, done = threading.Event(), threading.Event()
    closed: list[bool] = []

    def close() -> None:
        broker.close()
        closed.append(True)

    def sender() -> None:
        broker.push("q", [b"a"])
        broker.begin_reserve("q", owner="w", count=1, lease=60)
        began.set()
        if by_the_sender:
            close()
        done.wait(timeout=20)  # alive meanwhile: its thread id stays taken

    try:
        thread = threading.Thread(target=sender, daemon=True)
        thread.start()
        began.wait(timeout=10)
        if not by_the_sender:
            closing = threading.Thread(target=close, daemon=True)
            closing.start()
            closing.join(timeout=10)
        else:
            deadline = time.monotonic() + 10
            while not closed and time.monotonic() < deadline:
                time.sleep(0.01)
        done.set()
        thread.join(timeout=10)
        probe = RedisBroker(redis_server.client(), namespace=namespace)
        lengths = probe.lengths("q")
        probe.close()
    finally:
        done.set()
        delete_namespace([redis_server], namespace)

    assert closed == [True]
    assert lengths.ready + lengths.in_flight == 1
    assert (lengths.delayed, lengths.dead) == (0, 0)


@pytest.mark.parametrize("packer", ["hiredis", "redis-py"])
def test_a_ready_push_stores_entries_that_reserve_hands_back(
    single: tuple[RedisBroker, redis.Redis, str],
    monkeypatch: pytest.MonkeyPatch,
    packer: str,
) -> None:
    """The RPUSH of a ready push goes out pre-formatted (``packed_rpush``), with
    and without hiredis' packer for the commands around it: the stored entries
    read back as the payloads pushed, HIGH and NORMAL, with a fresh rid each."""
    broker, _, _ = single
    if packer == "redis-py":
        monkeypatch.setattr(_node, "_pack_command", None)
    sent = [b"", b"\x00\r\n$5\r\n", b"x" * 70_000, *(b"%d" % i for i in range(5))]

    broker.push("q", sent)
    broker.push("q", [b"high"], priority=Priority.HIGH)
    got = broker.reserve("q", owner="w", count=20)

    assert [d.payload for d in got] == [b"high", *sent]
    assert len({d.receipt[: _node.RID_LEN] for d in got}) == len(got)
    assert {d.deliveries for d in got} == {1}
