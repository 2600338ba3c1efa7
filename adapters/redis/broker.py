"""The Redis broker: one server, several independent servers, or a Redis Cluster.

Every queue operation is one round trip per node it touches. An at-least-once
reserve is one Lua script call (see ``scripts.py``): it acks the previous batch,
reclaims lapsed leases, promotes due delayed tasks, pops up to N (HIGH first) and
leases them, atomically. On plain connections a push and an at-most-once reserve
keep payloads out of Lua, which costs more than the list operations themselves
(``Node.push_ready``, ``Node.pop``). Times are the client's wall clock
(``time.time``), the same clock a task's eta is written in; hosts sharing a queue
need synchronised clocks.

With several independent nodes, pushes go round robin (one node per push call),
reserve visits the nodes in turn from a rotating start, counts and purges sum over
all of them, and receipts end with the node that holds the task (``@index``).
Locks, keys and the wake-up list of a queue live on the node their name hashes to
(crc32): tasks made ready on any node wake workers there, and only there (see
``_wake`` and ``_reserve_once``). A Redis Cluster is one client: hash tags keep
each queue in one slot.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote_plus, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.retry import Retry

from sergeant.errors import BrokerError, BrokerUnavailable, ConfigError
from sergeant.protocols.broker import (
    DeadLetter,
    Delivery,
    PendingReserve,
    QueueLengths,
    check_eta,
    check_limit,
    check_reserve,
    check_seconds,
)
from sergeant.protocols.lock import check_ttl
from sergeant.task import Priority

from . import keys
from ._fork_safe import ForkSafeLock
from ._node import (
    DEAD,
    FLAGS_AT,
    MORE,
    Node,
    Reserved,
    fresh_prefix,
    new_batch_id,
    new_entries,
    reserve_args,
)
from ._receipts import batch_groups, by_node, deliveries, members
from .faults import ConnectionGuard, RetryPolicy
from .lock import RedisLock

# Below this, a wait is not worth another round trip (Redis blocks in whole ms).
_MIN_BLOCK = 0.002
# A node's "more ready" as its reply carries it: bytes from a script, str from a pop.
_MORE = (MORE, MORE.encode())

_log = logging.getLogger("sergeant.adapters.redis")

T = TypeVar("T")


class RedisBroker:
    """Broker on Redis (at least once by default; ``lease=None`` pops at most once).

    Args:
        client: a ``redis.Redis`` (one server) or ``redis.cluster.RedisCluster``.
        clients: instead of ``client``, several independent servers to spread
            queues over.
        namespace: prefix of every key, so several applications share a server;
            printable, without ``:``, ``{`` or ``}`` (see ``check_namespace``).
        retry: how long a call retries while Redis is unreachable before it raises
            ``BrokerUnavailable``.
        clock: wall clock for etas and lease deadlines (tests pass a fake one).

    The broker owns its clients: ``close()`` closes them. Clients must not decode
    responses, and should not retry by themselves (see ``faults.py``).
    """

    def __init__(
        self,
        client: Any = None,
        *,
        clients: Sequence[Any] | None = None,
        namespace: str = "sergeant",
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (client is None) == (clients is None):
            raise ConfigError("RedisBroker takes either client or clients")
        chosen = [client] if client is not None else list(clients or ())
        if not chosen:
            raise ConfigError("RedisBroker.clients is empty")
        policy = retry if retry is not None else RetryPolicy()
        self.namespace = check_namespace(namespace)
        self._nodes = [Node(c, namespace=namespace, policy=policy) for c in chosen]
        self._single = len(self._nodes) == 1
        self._tags = [""] if self._single else [f"@{i}" for i in range(len(chosen))]
        self._clock = clock
        self._push_turn = itertools.count()
        # Over several nodes: acks a reserve could not deliver while it held
        # tasks, per (queue, node), sent with that queue's next reserve.
        self._late_acks: dict[tuple[str, int], list[str]] = {}
        self._late_lock = ForkSafeLock()
        self._reserve_turn = itertools.count()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        namespace: str | None = None,
        cluster: bool = False,
        retry: RetryPolicy | None = None,
        **client_options: Any,
    ) -> RedisBroker:
        """A broker from ``redis://`` / ``rediss://`` (TLS) URLs.

        A comma-separated list makes a broker over independent nodes; with
        ``cluster=True`` the (first) URL names any node of a Redis Cluster, which
        the client discovers from there. Clients are made without redis-py's own
        retries (the broker's ``retry`` governs) and connect lazily, on first use,
        except a cluster client, which reads the slot map as it is made (retried
        like any call while the cluster cannot be reached).
        The namespace is ``namespace``, else the URLs' ``?namespace=`` option (so
        that a URL alone, as the command line takes, can name one), else
        ``"sergeant"``.

        Raises:
            ConfigError: no URL, URLs naming different namespaces, or a namespace
                argument that the URLs contradict.
            BrokerUnavailable: ``cluster=True`` and no node of the cluster could
                be reached within the retry budget.
            BrokerError: ``cluster=True`` and the node is not in cluster mode.
        """
        urls, named = _split_namespace(url)
        if namespace is None:
            namespace = named if named is not None else "sergeant"
        elif named is not None and named != namespace:
            raise ConfigError(
                f"RedisBroker.from_url: namespace={namespace!r} but the URL says "
                f"namespace={named!r}"
            )
        check_namespace(namespace)  # before a cluster client connects
        options: dict[str, Any] = {"retry": Retry(NoBackoff(), 0)}
        options.update(client_options)
        if cluster:
            # A cluster client connects as it is made (it reads the slot map):
            # a cluster briefly down is ridden out as any call's outage is.
            seed_node = urlsplit(urls[0])  # no password in logs or errors
            guard = ConnectionGuard(
                retry if retry is not None else RetryPolicy(),
                name=f"cluster {seed_node.hostname}:{seed_node.port or 6379}",
            )
            seed = guard.call(RedisCluster.from_url, urls[0], **options)
            return cls(seed, namespace=namespace, retry=retry)
        made = [redis.Redis.from_url(u, **options) for u in urls]
        for client in made:
            # Clients connect lazily: build one connection object (unconnected)
            # now, so that an unknown URL option fails here, not on first use.
            pool = client.connection_pool
            pool.connection_class(**pool.connection_kwargs)
        if len(made) == 1:
            return cls(made[0], namespace=namespace, retry=retry)
        return cls(clients=made, namespace=namespace, retry=retry)

    @classmethod
    def from_cluster_url(cls, url: str, **options: Any) -> RedisBroker:
        """A broker on a Redis Cluster from ``redis+cluster://host:port`` (or
        ``rediss+cluster://``, TLS): any node, from which the client discovers
        the others. The scheme lets a URL alone (``$SERGEANT_BROKER``, the
        command line) say "cluster"; ``options`` as for ``from_url``.
        """
        scheme, cluster, rest = url.partition("+cluster://")
        if not cluster or scheme not in ("redis", "rediss"):
            raise ConfigError("not a redis+cluster:// or rediss+cluster:// URL")
        return cls.from_url(f"{scheme}://{rest}", cluster=True, **options)

    # -- routing -------------------------------------------------------------------

    def _home(self, name: str) -> int:
        """The node a queue's wake-ups, a lock or a key live on (stable hash)."""
        if self._single:
            return 0
        # surrogatepass: a name the client cannot send (a lone surrogate) still
        # hashes; the command itself then fails as a BrokerError (see faults).
        return zlib.crc32(name.encode("utf-8", "surrogatepass")) % len(self._nodes)

    def _groups(
        self, deliveries: Sequence[Delivery], *, acks: bool = False
    ) -> dict[int, list[str]]:
        """Per node, the ``member, rids`` script arguments (``acks``: batches whole)."""
        groups: dict[int, list[str]] = {}
        for index, receipts in by_node(deliveries, len(self._nodes)).items():
            held = self._nodes[index].held if acks else None
            args = batch_groups(receipts, held)
            if args:
                groups[index] = args
        return groups

    def _wakes(self, queue: str, index: int) -> bool:
        """Whether node ``index`` is where ``queue``'s idle workers wait, so that a
        script making tasks ready there leaves its wake-up token (see
        ``Node.run``); elsewhere it leaves none, and ``_wake`` wakes the home."""
        return self._single or self._home(queue) == index

    def _wake(self, queue: str, index: int) -> None:
        """Wake a worker blocked on ``queue`` after node ``index`` got ready tasks.

        Best effort: the tasks are stored already, and a call that did its work
        must not fail (a producer would push again) nor wait out a retry budget
        for a token; a worker left asleep finds them when its wait runs out.
        """
        home = self._home(queue)
        if home != index:
            self._notify(home, queue)

    def _notify(self, index: int, queue: str) -> None:
        """Leave a wake-up token on node ``index``, best effort (see ``_wake``).

        Unreachable or refusing for now: nothing is said (the worker's wait runs
        out). Any other failure is a misconfiguration (an ACL that denies a
        command of the script, say): logged, since it would otherwise cost every
        idle worker its whole wait, silently, on every push.
        """
        node = self._nodes[index]
        if not node.guard.probe_due():
            # Down: workers cannot be waiting there. Tried now and then all the
            # same, so that a producer learns the node is back.
            return
        try:
            node.notify(queue)
        except BrokerUnavailable:
            pass
        except BrokerError as error:
            _log.warning("could not wake the workers of %r: %s", queue, error)

    # -- Broker --------------------------------------------------------------------

    def push(
        self,
        queue: str,
        payloads: Sequence[bytes],
        *,
        priority: Priority = Priority.NORMAL,
        eta: float | None = None,
    ) -> None:
        """Store ``payloads`` in order on one node, in one round trip; wake a
        waiting worker if the list they join was empty (see ``Node.push_ready``).

        Over several nodes, a node that does not answer is tried briefly (see
        ``ConnectionGuard.briefly``) and the tasks go to the next one: any node
        can hold any of a queue's tasks, and a producer waiting out one node's
        retry budget, or failing, while others are up would make one node's
        outage everyone's. A node known to be down is tried last, except for a
        probe now and then (``ConnectionGuard.probe_due``). Only the last node
        tried gets the whole retry budget; ``BrokerUnavailable`` means that none
        took the tasks. HIGH tasks go to the queue's home node while it is up
        (see ``_visits``); during its outage they go elsewhere, and are taken
        before the NORMAL tasks of the node that holds them only.
        """
        check_eta(eta)
        priority = Priority(priority)  # ValueError for anything else
        if not payloads:
            return
        if self._single:
            self._push_on(0, queue, payloads, priority, eta, brief=False)
            return
        order = self._push_order(queue, priority)
        for index in order[:-1]:
            try:
                self._push_on(index, queue, payloads, priority, eta, brief=True)
            except BrokerUnavailable:
                continue
            return
        self._push_on(order[-1], queue, payloads, priority, eta, brief=False)

    def _push_order(self, queue: str, priority: Priority) -> list[int]:
        """The nodes a push tries, in order (see ``push``): its turn's node (the
        home node for HIGH), then the next ones, those known down last."""
        size = len(self._nodes)
        first = (
            self._home(queue)
            if priority == Priority.HIGH
            else next(self._push_turn) % size
        )
        order = [(first + step) % size for step in range(size)]
        up = [i for i in order if not self._nodes[i].guard.in_outage]
        if len(up) == size:
            return order
        down = [i for i in order if i not in up]
        if down[0] == first and self._nodes[first].guard.probe_due():
            return [first, *up, *down[1:]]
        return up + down

    def _push_on(
        self,
        index: int,
        queue: str,
        payloads: Sequence[bytes],
        priority: Priority,
        eta: float | None,
        *,
        brief: bool,
    ) -> None:
        """``push`` on node ``index`` (``brief``: see ``ConnectionGuard.briefly``)."""
        node = self._nodes[index]
        wake = self._wakes(queue, index)
        if eta is None or eta <= self._clock():
            # Owed: the list was empty, and no token was left there (another
            # node, or the token was refused or not sent; see ``push_ready``).
            owed = node.push_ready(
                queue, int(priority), payloads, wake=wake, brief=brief
            )
        else:
            entries = new_entries(payloads, int(priority))
            args = [int(priority), repr(float(eta)), *entries]
            node.run(node.push_script, queue, args, wake=wake, brief=brief)
            owed = not wake
        # Stored all the same if this fails: the name is recorded by a later
        # push. Raising would have the tasks pushed again (elsewhere, or by the
        # caller).
        with contextlib.suppress(BrokerUnavailable):
            node.register(queue)
        if owed:
            self._notify(self._home(queue), queue)

    def reserve(
        self,
        queue: str,
        *,
        owner: str,
        count: int = 1,
        lease: float | None = 60.0,
        wait: float = 0.0,
        ack: Sequence[Delivery] = (),
    ) -> list[Delivery]:
        """Hand out up to ``count`` tasks, HIGH first, leased to ``owner``.

        When nothing is ready, blocks on the queue's wake-up list (no polling) until
        a push, the next delayed eta or lease deadline, or ``wait`` runs out. A
        worker so woken passes the wake-up on if its batch leaves more ready (see
        ``_reserve_once``), so that each idle worker wakes in turn.
        """
        check_reserve(count, lease, wait)
        acks = self._groups(ack, acks=True) if ack else {}
        member = "" if lease is None else f"{new_batch_id()}:{owner}"
        give_up = time.monotonic() + wait
        woken = False
        once = self._reserve_on_one if self._single else self._reserve_once
        while True:
            got, due = once(queue, member, count, lease, acks, woken)
            acks = {}
            left = give_up - time.monotonic()
            if got or left < _MIN_BLOCK:
                return got
            until_due = False
            if due is not None:
                to_due = due - self._clock()
                if to_due <= 0:
                    continue
                if to_due < left:
                    left, until_due = to_due, True
            home = self._nodes[self._home(queue)]
            token = home.block(queue, left, elsewhere=not self._single)
            if not (token or until_due) and give_up - time.monotonic() < _MIN_BLOCK:
                # The wait ran out and nobody left a token: nothing was pushed
                # to the empty queue, released or (over several nodes) made
                # ready elsewhere, so another pass would find nothing. Skipping
                # it halves what an idle worker costs the server.
                return []
            # Whoever took the wake-up token passes it on if it leaves more ready;
            # so does a worker whose wait ended when a delayed task fell due or a
            # lease lapsed (their promotion leaves no token).
            woken = True

    def begin_reserve(
        self,
        queue: str,
        *,
        owner: str,
        count: int = 1,
        lease: float = 60.0,
        ack: Sequence[Delivery] = (),
    ) -> PendingReserve:
        """Send the reserve script now; the returned function collects the batch.

        On one server over a plain connection the request stays in flight while
        the caller works, so the server leases the next batch while the worker
        runs the current one. Over several nodes or a cluster (a reserve may visit
        several endpoints) this reserves at once and hands the batch over later.
        """
        check_reserve(count, lease, 0.0)
        node = self._nodes[0]
        if not (self._single and node.direct):
            got = self.reserve(queue, owner=owner, count=count, lease=lease, ack=ack)
            return lambda: got
        member = f"{new_batch_id()}:{owner}"
        args = reserve_args(self._clock(), count, lease, member, woken=False)
        if ack:
            args += self._groups(ack, acks=True).get(0, ())
        finish = node.begin_reserve(queue, args)

        def collect() -> list[Delivery]:
            entries, _, again = finish()
            return self._hand_out(0, entries, again, member)

        return collect

    def _visits(self, queue: str) -> list[tuple[int, str]]:
        """Which nodes a reserve asks, in order, and for which priorities.

        HIGH tasks of a queue all live on its home node, so asking the home node
        for HIGH tasks first keeps HIGH before NORMAL across nodes; NORMAL tasks
        are then gathered from a rotating start, spreading the load.
        """
        if self._single:
            return [(0, "2")]
        size = len(self._nodes)
        start = next(self._reserve_turn) % size
        visits = [((start + step) % size, "2") for step in range(size)]
        home = self._home(queue)
        return visits if start == home else [(home, "1"), *visits]

    def _reserve_once(  # noqa: PLR0917 - one call of reserve's loop
        self,
        queue: str,
        member: str,
        count: int,
        lease: float | None,
        acks: dict[int, list[str]],
        woken: bool,
    ) -> tuple[list[Delivery], float | None]:
        """One pass over the nodes (see ``_visits``): the tasks gathered, and when
        the next one falls due if there were none.

        Each visit that leases takes a batch member of its own: the queue's home
        node is visited twice (HIGH first, NORMAL in turn), and a second lease under
        the first one's member would overwrite the batch list the first filled.

        A node failing once tasks are in hand does not cost them: popped tasks
        exist nowhere else, leased ones would wait for their lease to lapse. They
        are handed out and the failure recurs on the next call. The acks for the
        nodes not visited are still sent; those for the failing node, which may
        or may not have been applied, are kept and sent again with this queue's
        next reserve or ack (an ack applied twice changes nothing), so that a node's
        outage does not make tasks already done run again once their lease
        lapses. Kept acks live in this broker object: a process that ends
        before the node is back leaves those tasks to come back, as at least
        once allows.

        A ``woken`` caller (it took the wake-up token) passes the wake-up on when
        its batch leaves more ready, so the next idle worker wakes too. On one
        node the script does that itself (flag 'c'). Over several, workers wait
        on the queue's home node whichever node holds the tasks, so each script
        only says whether it left more ready (flag 'm') and the pass-on goes to
        the home node: when the node that filled the batch has more, or when
        nodes were left unvisited, which may hold some (at worst a spare wake-up:
        the next worker finds nothing and waits again, ending the chain).

        Over several nodes, while another node is up, a visit is brief (one
        attempt, one more at once on a new connection, see
        ``ConnectionGuard.briefly``) and the node is passed over if it fails
        (which starts its outage): waiting out its retry budget would stall
        every reserve that visits it first (about one in N), and passing it
        over loses nothing, since its acks are kept as above. A reserve that
        gets nothing from the nodes up raises that failure: the node passed
        over may hold tasks, so the queue is not known to be empty, and the
        caller keeps its acks and backs off as for any failed reserve (the acks
        kept from earlier reserves stay kept).
        """
        with self._late_acks_into(queue, acks) as settled:
            now = self._clock()
            args = reserve_args(now, count, lease, member, woken=woken)
            chain = ("c" if self._single else "m") if woken else ""
            args[FLAGS_AT] = chain or "-"
            owner = member.partition(":")[2]
            out: list[Delivery] = []
            due: float | None = None
            leased: set[int] = set()
            pass_on = False
            up = {i for i, node in enumerate(self._nodes) if not node.guard.in_outage}
            passed_over: BrokerUnavailable | None = None
            carrying: tuple[int, list[str]] | None = None
            try:
                visits = self._visits(queue)
                for step, (index, levels) in enumerate(visits):
                    node = self._nodes[index]
                    if lease is not None:
                        _lease_on(index, leased, args, owner)
                    args[1], args[4] = count - len(out), levels
                    pending = acks.pop(index, [])
                    # Brief while another node is up: a node passed over loses
                    # nothing (its acks are kept, see _ack_unvisited).
                    quick = bool(up - {index})
                    # What the except below keeps if this visit fails for good.
                    carrying = (index, pending) if pending else None
                    try:
                        entries, nxt, again = self._visit(
                            node, queue, now, args, pending, brief=quick
                        )
                    except BrokerUnavailable as error:
                        if not quick:
                            raise
                        passed_over = error
                        if pending:  # perhaps not applied: see _ack_unvisited
                            acks[index] = pending
                        continue
                    if pending:
                        settled.add(index)
                    if entries:
                        out += self._hand_out(index, entries, again, args[3])
                        if len(out) >= count:
                            pass_on = chain == "m" and (
                                nxt in _MORE or step < len(visits) - 1
                            )
                            break
                    else:
                        due = _earlier(due, nxt)
            except BrokerError:
                if not out:
                    raise
                # Tasks in hand: the failed visit's acks are kept for the next reserve.
                settled.update(self._defer_carried(queue, carrying))
            self._end_visits(queue, acks, settled, holding=out, passed_over=passed_over)
            if pass_on:
                self._pass_on(queue)
            return out, due

    def _end_visits(
        self,
        queue: str,
        acks: dict[int, list[str]],
        settled: set[int],
        *,
        holding: list[Delivery],
        passed_over: BrokerUnavailable | None,
    ) -> None:
        """After a reserve's visits: raise ``passed_over`` if nothing is
        ``holding`` (a node was not asked: not an empty queue), else send the
        acks left (see ``_ack_unvisited``), adding to ``settled``."""
        if passed_over is not None and not holding:
            raise passed_over
        brief = self._down_among_up()  # including nodes found down just now
        settled |= self._ack_unvisited(
            queue, acks, holding=bool(holding), brief=brief, defer=True
        )

    def _defer_carried(
        self, queue: str, carrying: tuple[int, list[str]] | None
    ) -> set[int]:
        """``_defer_acks`` of a failed visit's ``(node, acks)``, if any; the
        node whose acks are now deferred."""
        if carrying is None:
            return set()
        self._defer_acks(queue, *carrying)
        return {carrying[0]}

    @contextlib.contextmanager
    def _late_acks_into(
        self, queue: str, acks: dict[int, list[str]]
    ) -> Iterator[set[int]]:
        """Add the acks kept for ``queue`` (see ``_reserve_once``) to ``acks``;
        yield the set in which the caller records the nodes whose acks it sent
        (or kept again); on the way out, keep again the kept acks of the nodes
        not recorded (the caller's own are the caller's to resend)."""
        late = self._take_late_acks(queue)
        for index, groups in late.items():
            acks[index] = [*groups, *acks.get(index, [])]
        settled: set[int] = set()
        try:
            yield settled
        finally:
            for index, groups in late.items():
                if index not in settled:
                    self._defer_acks(queue, index, groups)

    def _take_late_acks(self, queue: str) -> dict[int, list[str]]:
        """The acks deferred for ``queue`` (see ``_ack_unvisited``), per node,
        taken out of the record."""
        if not self._late_acks:
            return {}
        with self._late_lock:
            taken = {i: g for (q, i), g in self._late_acks.items() if q == queue}
            for index in taken:
                del self._late_acks[queue, index]
        return taken

    def _defer_acks(self, queue: str, index: int, groups: list[str]) -> None:
        """Keep acks for node ``index`` to send with ``queue``'s next reserve."""
        with self._late_lock:
            self._late_acks.setdefault((queue, index), []).extend(groups)

    def _reserve_on_one(  # noqa: PLR0917 - one call of reserve's loop
        self,
        queue: str,
        member: str,
        count: int,
        lease: float | None,
        acks: dict[int, list[str]],
        woken: bool,
    ) -> tuple[list[Delivery], float | None]:
        """``_reserve_once`` on one node: the same calls, without the bookkeeping
        of several (which nodes, which member per visit, which are down). Every
        reserve of a worker on one node runs this."""
        node = self._nodes[0]
        now = self._clock()
        args = reserve_args(now, count, lease, member, woken=woken)
        pending = acks.get(0, [])
        entries, nxt, again = self._visit(node, queue, now, args, pending, brief=False)
        if entries:
            return self._hand_out(0, entries, again, member), None
        return [], _earlier(None, nxt)

    def _visit(
        self,
        node: Node,
        queue: str,
        now: float,
        args: list[Any],
        acks: list[str],
        *,
        brief: bool,
    ) -> Reserved:
        """Reserve (or pop, ``args`` without lease) on one node for
        ``_reserve_once``; the entries, the next due time and the positions of
        entries delivered before (None: read them from the entries)."""
        if args[2] == "" and node.direct:  # no lease deadline: a plain pop
            if acks:
                # A pop is no script to carry acks: they go first, on their
                # own, as the pop's upkeep would take back a lapsed lease they
                # settle (and hand its tasks out again). A failure raises with
                # nothing popped.
                node.run(node.ack_script, queue, acks, brief=brief)
            chain = args[FLAGS_AT].strip("-")
            entries, nxt = node.pop(queue, now, args[1], args[4], chain, brief=brief)
            return entries, nxt, None
        return node.reserve(queue, [*args, *acks], brief=brief)

    def _down_among_up(self) -> set[int]:
        """The nodes known to be down, when at least one other is not (see
        ``_reserve_once``); none on one node."""
        if self._single:
            return set()
        down = {i for i, node in enumerate(self._nodes) if node.guard.in_outage}
        return down if len(down) < len(self._nodes) else set()

    def _ack_unvisited(
        self,
        queue: str,
        acks: dict[int, list[str]],
        *,
        holding: bool,
        brief: set[int],
        defer: bool = False,
    ) -> set[int]:
        """Send a reserve's acks for the nodes it did not visit (or passed over);
        return the nodes whose acks were sent or deferred.

        A failure raises only when the reserve is not ``holding`` tasks (the
        caller keeps every ack and sends them again). Tasks in hand are handed
        out; with ``defer`` (several nodes) the failing node's acks are kept and
        sent with the queue's next reserve, else they are dropped and their
        tasks come back when their lease lapses. The nodes in ``brief`` (down,
        see ``_reserve_once``) get one brief try.
        """
        settled: set[int] = set()
        for index, groups in acks.items():
            node = self._nodes[index]
            try:
                node.run(node.ack_script, queue, groups, brief=index in brief)
            except BrokerError:
                if not holding:
                    raise
                if defer:
                    self._defer_acks(queue, index, groups)
            settled.add(index)
        return settled

    def _pass_on(self, queue: str) -> None:
        """Leave a wake-up token on ``queue``'s home node, for the next idle worker.

        The caller holds tasks already: a failure here must not cost them (the
        next push wakes the other workers, or their wait runs out).
        """
        self._notify(self._home(queue), queue)

    def _hand_out(
        self, index: int, entries: list[bytes], again: list[int] | None, member: str
    ) -> list[Delivery]:
        """Deliveries of the entries node ``index`` handed out under ``member``
        (remembered, so that an ack of the whole batch is recognised)."""
        if not entries:
            return []
        got, bodies = deliveries(entries, again, member, self._tags[index])
        if member:
            self._nodes[index].hold(member, bodies)
        return got

    def _per_node(
        self, shares: dict[int, T], call: Callable[[int, T, bool], None]
    ) -> None:
        """``call(index, share, brief)`` per node; a node that fails does not stop
        the others, nor hold them up.

        A worker's batch may span nodes: one node down must not keep the live
        ones from renewing their leases (another worker would take tasks still
        running), nor from taking their acks and releases. Over several nodes,
        every node gets a ``brief`` call first (no retry budget, see
        ``_reserve_once``), nodes known to be in an outage last. Only then does a
        node that failed there, and was not known down before, get the whole
        retry budget (it may be a blip): waiting it out first would delay the
        live nodes by the budget, longer than a short lease. A node known down
        gets no more than the brief call while another node is up. The first
        failure is raised once every node had its turn (acks, releases and
        renewals are safe to send again in full).
        """
        failure: BrokerError | None = None
        known_down = self._down_among_up()
        order = sorted(shares, key=lambda index: self._nodes[index].guard.in_outage)
        again: list[int] = []
        brief = not self._single
        for index in order:
            try:
                call(index, shares[index], brief)
            except BrokerUnavailable as error:
                if brief and index not in known_down:
                    again.append(index)
                else:
                    failure = failure or error
            except BrokerError as error:
                failure = failure or error
        for index in again:
            try:
                call(index, shares[index], False)
            except BrokerError as error:
                failure = failure or error
        if failure is not None:
            raise failure

    def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Remove settled tasks, one script call per node holding any of them.

        Over several nodes the acks kept from earlier reserves of ``queue`` (see
        ``_reserve_once``) go along, so a worker's last acks, sent as it stops,
        take them too; a node that fails keeps its kept ones.
        """
        shares = self._groups(deliveries, acks=True)
        with self._late_acks_into(queue, shares) as settled:

            def ack_on(index: int, groups: list[str], brief: bool) -> None:
                node = self._nodes[index]
                node.run(node.ack_script, queue, groups, brief=brief)
                settled.add(index)

            self._per_node(shares, ack_on)

    def release(
        self, queue: str, deliveries: Sequence[Delivery], *, delay: float = 0.0
    ) -> None:
        """Give leased tasks back unchanged: to the head of the queue, or delayed."""
        check_seconds("delay", delay, zero=True)
        at = "" if delay <= 0 else repr(self._clock() + delay)

        def release_on(index: int, groups: list[str], brief: bool) -> None:
            node = self._nodes[index]
            wake = self._wakes(queue, index)
            args = [at, *groups]
            if node.run(node.release_script, queue, args, wake=wake, brief=brief):
                self._wake(queue, index)

        self._per_node(self._groups(deliveries), release_on)

    def extend(
        self, queue: str, deliveries: Sequence[Delivery], *, lease: float
    ) -> None:
        """Renew the leases still held, per batch (a lapsed, reclaimed one is not).

        A lease covers a reserved batch, so renewing one of its tasks renews the
        batch; the worker renews everything it holds anyway.
        """
        check_seconds("lease", lease)
        deadline = repr(self._clock() + lease)

        def extend_on(index: int, held: list[str], brief: bool) -> None:
            node = self._nodes[index]
            node.run(node.extend_script, queue, [deadline, *held], brief=brief)

        shares = by_node(deliveries, len(self._nodes)).items()
        held = {index: batches for index, r in shares if (batches := members(r))}
        self._per_node(held, extend_on)

    def release_owner(self, queue: str, owner: str) -> int:
        """Make every task leased to ``owner`` ready again; their counts stand."""
        counts: list[int] = []

        def release_on(index: int, _: None, brief: bool) -> None:
            node = self._nodes[index]
            wake = self._wakes(queue, index)
            script = node.release_owner_script
            released = int(node.run(script, queue, [owner], wake=wake, brief=brief))
            if released:
                self._wake(queue, index)
            counts.append(released)

        self._per_node(dict.fromkeys(range(len(self._nodes))), release_on)
        return sum(counts)

    def dead_letter(self, queue: str, delivery: Delivery, reason: str) -> None:
        """Move a delivered task to the dead-letter list, with ``reason``.

        A popped (lease-less) task is always recorded, once however often the
        call is retried; a leased one only while its lease is still held, so a
        retried call, or a holder whose lease lapsed (the task is back in the
        queue), adds no second record. A lone surrogate in ``reason`` (a file
        name decoded with ``surrogateescape``) is stored as its ``\\udcxx``
        escape: UTF-8 cannot carry it, and the task must still be recorded.
        """
        text = reason.encode("utf-8", "backslashreplace")
        record = b"%s\n%d\n%s%s" % (
            repr(self._clock()).encode(),
            len(text),
            text,
            delivery.payload,
        )
        index, receipts = next(
            iter(by_node([delivery], len(self._nodes)).items()), (0, [])
        )
        node = self._nodes[index]
        # A popped task has no lease to check: a token fresh per call (repeated by
        # its retries) keeps a retried call from recording it twice.
        held = batch_groups(receipts) or [fresh_prefix()]
        node.run(node.dead_letter_script, queue, [record, *held])
        # Recorded all the same if this fails (as in push): raising would have
        # the caller dead-letter the task again, a second record of a popped one.
        with contextlib.suppress(BrokerUnavailable):
            node.register(queue)

    def lengths(self, queue: str) -> QueueLengths:
        """Count the queue's tasks per place, summed over nodes."""
        now = repr(self._clock())
        totals = [0, 0, 0, 0]
        for node in self._nodes:
            for place, n in enumerate(node.run(node.lengths_script, queue, [now])):
                totals[place] += n
        ready, delayed, in_flight, dead = totals
        return QueueLengths(
            ready=ready, delayed=delayed, in_flight=in_flight, dead=dead
        )

    def purge(self, queue: str) -> int:
        """Drop ready, delayed and in-flight tasks on every node; dead letters stay.

        Over several nodes, one that is down does not keep the others from being
        purged: it is tried last (see ``_per_node``), and its failure raised then.
        """
        return self._sum_per_node(queue, lambda node: node.purge_script)

    def _sum_per_node(self, queue: str, script: Callable[[Node], Script]) -> int:
        """The sum of the counts that ``script`` (of a node) returns on every
        node, each reached even if another is down (see ``_per_node``)."""
        counts: list[int] = []

        def run_on(index: int, _: None, brief: bool) -> None:
            node = self._nodes[index]
            counts.append(int(node.run(script(node), queue, (), brief=brief)))

        self._per_node(dict.fromkeys(range(len(self._nodes))), run_on)
        return sum(counts)

    def close(self) -> None:
        """Close every client's connections."""
        for node in self._nodes:
            node.close()

    # -- SupportsInspection --------------------------------------------------------

    def queues(self) -> list[str]:
        """Names of the queues holding any task or dead letter, sorted."""
        names: set[str] = set()
        for node in self._nodes:
            names |= node.queue_names()
        return sorted(q for q in names if self.lengths(q) != QueueLengths())

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of ``queue`` (over all nodes)."""
        check_limit(limit)
        return [letter for _, letter in self._oldest_dead(queue, limit)]

    def _oldest_dead(self, queue: str, limit: int) -> list[tuple[int, DeadLetter]]:
        if limit <= 0:
            return []
        found: list[tuple[int, DeadLetter]] = []
        for index, node in enumerate(self._nodes):
            key = node.keys(queue)[DEAD]
            records = node.guard.call(node.client.lrange, key, 0, limit - 1)
            found += [(index, _parse_dead(r)) for r in records]
        found.sort(key=lambda pair: pair[1].dead_at)
        return found[:limit]

    def replay_dead(self, queue: str, *, limit: int | None = None) -> int:
        """Push dead letters back as fresh ready NORMAL tasks, oldest first."""
        check_limit(limit)
        if limit is not None:
            # The script reads it as a Lua number (a double), which from 1e17 on
            # reaches LPOP as '1e+17' and is refused; no list holds that many.
            limit = min(limit, _LIMIT_CAP)
        if limit is None or self._single:
            counts = dict.fromkeys(
                range(len(self._nodes)), -1 if limit is None else limit
            )
        else:
            counts = {}
            for index, _ in self._oldest_dead(queue, limit):
                counts[index] = counts.get(index, 0) + 1
        total = 0
        for index, n in counts.items():
            node = self._nodes[index]
            args = [n, fresh_prefix()]
            wake = self._wakes(queue, index)
            replayed = int(node.run(node.replay_script, queue, args, wake=wake))
            if replayed:
                self._wake(queue, index)
            total += replayed
        return total

    def purge_dead(self, queue: str) -> int:
        """Drop the queue's dead letters on every node; return how many (each
        node reached even if one is down, as ``purge``)."""
        return self._sum_per_node(queue, lambda node: node.purge_dead_script)

    # -- SupportsLocks and SupportsKeys --------------------------------------------

    def lock(self, name: str) -> RedisLock:
        """A new handle, with its own token, on the lock called ``name``."""
        return RedisLock(self._nodes[self._home(name)], name)

    def get_key(self, key: str) -> bytes | None:
        """The value stored under ``key``, or None (missing or expired)."""
        return keys.get_key(self._nodes[self._home(key)], key)

    def set_key(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any; it lapses after ``ttl`` s."""
        check_ttl(ttl)
        keys.set_key(self._nodes[self._home(key)], key, value, ttl)

    def delete_key(self, key: str) -> bool:
        """Remove ``key``; True when it existed."""
        return keys.delete_key(self._nodes[self._home(key)], key)


def _parse_dead(record: bytes) -> DeadLetter:
    stamp, size, rest = record.split(b"\n", 2)
    n = int(size)
    return DeadLetter(payload=rest[n:], reason=rest[:n].decode(), dead_at=float(stamp))


# The largest limit a script is given (see ``replay_dead``).
_LIMIT_CAP = 2**53


def _earlier(due: float | None, nxt: Any) -> float | None:
    """The earlier of ``due`` and a node's next due time ('' or None: none)."""
    if nxt and (due is None or float(nxt) < due):
        return float(nxt)
    return due


def _lease_on(index: int, leased: set[int], args: list[Any], owner: str) -> None:
    """Note a leasing visit of node ``index``; a second visit of a node takes a
    batch member of its own (see ``RedisBroker._reserve_once``)."""
    if index in leased:
        args[3] = f"{new_batch_id()}:{owner}"
    leased.add(index)


#: What a namespace may not hold: ":" ends it inside a queue's hash tag
#: ``{ns:q}`` (namespace "a" with queue "b:c" and namespace "a:b" with queue "c"
#: would share every key), and braces would move or end the hash tag.
_NOT_IN_NAMESPACE = frozenset(":{}")


def check_namespace(namespace: object) -> str:
    """``namespace`` if it can prefix keys unambiguously.

    Raises:
        ConfigError: not a non-empty printable string, or it holds ``:``, ``{``
            or ``}``; the message names ``RedisBroker.namespace``.
    """
    if (
        not isinstance(namespace, str)
        or not namespace
        or not namespace.isprintable()
        or not _NOT_IN_NAMESPACE.isdisjoint(namespace)
    ):
        raise ConfigError(
            "RedisBroker.namespace must be a non-empty printable string without "
            f"':', '{{' or '}}', got {namespace!r}"
        )
    return namespace


def _split_namespace(url: str) -> tuple[list[str], str | None]:
    """The comma-separated URLs without their ``namespace`` query option, and the
    namespace they name (None: none does).

    The option is cut from the query text as written, so every other option
    reaches redis-py exactly as given (percent-escapes included).

    Raises:
        ConfigError: no URL, or two URLs (or options) naming different namespaces.
    """
    urls: list[str] = []
    named: set[str] = set()
    for part in (u.strip() for u in url.split(",")):
        if not part:
            continue
        head, mark, query = part.partition("?")
        query, hash_mark, fragment = query.partition("#")
        kept = []
        for item in query.split("&") if mark else ():
            key, _, value = item.partition("=")
            if unquote_plus(key) == "namespace":
                named.add(unquote_plus(value))
            elif item:
                kept.append(item)
        rest = "&".join(kept)
        urls.append(head + ("?" + rest if rest else "") + hash_mark + fragment)
    if not urls:
        raise ConfigError(f"no Redis URL in {url!r}")
    if len(named) > 1:
        raise ConfigError(
            f"the Redis URLs name different namespaces: {', '.join(sorted(named))}"
        )
    return urls, (named.pop() if named else None)
