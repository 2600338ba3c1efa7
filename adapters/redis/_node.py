"""One Redis endpoint (a server, or a whole cluster): key layout, entries, scripts.

Key layout of a queue ``q`` in namespace ``ns`` (the hash tag ``{ns:q}`` puts every
key of a queue in one cluster slot, so each script touches one slot):

- ``{ns:q}:ready:0`` / ``{ns:q}:ready:1``: lists of ready HIGH / NORMAL entries;
- ``{ns:q}:delayed``: sorted set of entries by eta;
- ``{ns:q}:leases``: sorted set of leased batches ``<bid>:<owner>`` by deadline;
- ``{ns:q}:leases:<bid>``: one leased batch's unsettled entries (a list, or a
  hash rid -> entry once part of the batch was settled);
- ``{ns:q}:notify``: a list holding at most one wake-up token for blocked workers;
- ``{ns:q}:dead``: list of dead-letter records, oldest first.

Beside the queues: ``{ns}:queues`` (set of queue names ever pushed to),
``ns:lock:<name>`` and ``ns:key:<name>``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError

try:  # hiredis comes with sergeant[redis]; redis-py works without it, slower
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover - the test environment has hiredis
    _pack_command = None  # type: ignore[assignment]

from sergeant.errors import BrokerError, BrokerUnavailable, ConfigError

from . import scripts
from .faults import ConnectionGuard, RetryPolicy

RID_LEN = 20
HEADER_LEN = RID_LEN + 1 + 8  # rid, priority digit, delivery count (8 hex digits)
_COUNTER_LIMIT = 16**10
_HELD_LIMIT = 64  # batches a worker holds at once: one or two
# How long (monotonic seconds) a busy at-most-once reserve may skip promoting due
# delayed tasks and reclaiming lapsed leases (see ``Node.pop``).
MAINTAIN_EVERY = 0.05
NOTIFY, DEAD = scripts.QUEUE_KEYS.index("notify"), scripts.QUEUE_KEYS.index("dead")
LEASES = scripts.QUEUE_KEYS.index("leases")
# A command for ``Node._call``: its words, or (bytes) its wire form already.
Command = tuple[Any, ...] | bytes


class _RidSource:
    """Receipt ids: a random per-process prefix plus a counter (10 + 10 hex digits).

    Generated client-side, so a push costs no extra round trip; the prefix is
    renewed in a forked child and when the counter runs out, so two processes
    never hand out the same rid.
    """

    def __init__(self) -> None:
        self._forked()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        # A fresh lock too: another thread may have held the parent's at the fork.
        self._lock = threading.Lock()
        self._renew()

    def _renew(self) -> None:
        self._prefix = os.urandom(5).hex().encode()
        self._next = 0

    def block(self, n: int) -> tuple[bytes, int]:
        """Reserve ``n`` consecutive ids; returns the prefix and the first counter."""
        with self._lock:
            if self._next + n > _COUNTER_LIMIT:
                self._renew()
            start = self._next
            self._next += n
            return self._prefix, start


_RIDS = _RidSource()


def _entry_head(prefix: bytes, priority: int) -> bytes:
    """The format of an entry's header: rid prefix, ``%010x`` for the rid's
    counter, the priority, a delivery count of 0 (the fixed parts baked in)."""
    return prefix + b"%010x" + b"%d00000000" % priority


def new_entries(payloads: Sequence[bytes], priority: int) -> list[bytes]:
    """Stored entries for ``payloads``: a fresh rid, the priority, no deliveries."""
    prefix, start = _RIDS.block(len(payloads))
    head = _entry_head(prefix, priority)
    return [head % i + p for i, p in enumerate(payloads, start)]


def packed_rpush(key: str, payloads: Sequence[bytes], priority: int) -> bytes:
    """The wire bytes of ``RPUSH key`` with ``new_entries(payloads, priority)``.

    Each entry is formatted straight into its wire form (length, rid, header,
    payload) in one step: building the entries and then packing them copies every
    payload once more (``python -m benchmark.redis_costs``, client table: 229
    against 266 µs for 1,000 payloads on 2026-12-06, a few percent of a bulk push).
    """
    prefix, start = _RIDS.block(len(payloads))
    entry = b"$%d\r\n" + _entry_head(prefix, priority) + b"%b\r\n"
    name = key.encode()
    parts = [
        b"*%d\r\n$5\r\nRPUSH\r\n$%d\r\n%b\r\n" % (len(payloads) + 2, len(name), name)
    ]
    parts += [
        entry % (HEADER_LEN + len(p), i, p) for i, p in enumerate(payloads, start)
    ]
    return b"".join(parts)


def new_batch_id() -> str:
    """A unique id for one leased batch (the process prefix and a counter)."""
    prefix, n = _RIDS.block(1)
    return f"{prefix.decode()}{n:x}"


def fresh_prefix() -> str:
    """A random 10-hex-digit rid prefix for entries a script creates (replays)."""
    return os.urandom(5).hex()


def describe(client: Any) -> str:
    """A short name of the endpoint for logs and error messages."""
    kwargs = client.get_connection_kwargs()
    if "host" in kwargs:
        return f"{kwargs['host']}:{kwargs.get('port', 6379)}"
    if "path" in kwargs:
        return str(kwargs["path"])
    nodes = getattr(client, "startup_nodes", None) or []
    return "cluster " + ",".join(f"{n.host}:{n.port}" for n in nodes)


# What a woken caller's reserve or pop says in place of the next due time when it
# left more tasks ready on a node (flag 'm', see scripts.RESERVE).
MORE = "+"

# The reserve script's ARGV: now, count, lease deadline ('' = pop), batch member,
# levels, flags (ARGV[FLAGS_AT + 1]), then ack groups; see scripts.RESERVE.
FLAGS_AT = 5


def reserve_args(
    now: float, count: int, lease: float | None, member: str, *, woken: bool
) -> list[Any]:
    """The reserve script's arguments before its ack groups (levels: HIGH, NORMAL)."""
    deadline = "" if lease is None else now + lease
    return [repr(now), count, deadline, member, "2", "c" if woken else "-"]


# A leased batch at least this big is moved by SORT ... STORE and read by LRANGE,
# not returned through Lua (see ``scripts.SORT_FROM``): the LRANGE costs the
# client three more replies to read, which pays off only for bigger batches.
LISTED_FROM = scripts.SORT_FROM

# A reserve's reply: its entries, the next due time ('' or bytes; only when
# nothing was ready; with entries, ``MORE`` or ''), and the positions of entries
# delivered before (None: the client reads the counts).
Reserved = tuple[list[bytes], Any, list[int] | None]

_UNREAD: Any = object()  # a sent request's replies, not read yet
_FAILED: Any = object()  # ... cannot be read (lost connection): retry


class _Slot:
    """Where ``Node.begin_reserve``'s reader puts one request's replies."""

    __slots__ = ("replies", "size")

    def __init__(self, size: int) -> None:
        self.replies: Any = _UNREAD
        self.size = size


class Node:
    """A client with its scripts, its guard and the key names of each queue.

    Args:
        client: a ``redis.Redis`` or ``redis.cluster.RedisCluster`` that returns
            bytes (``decode_responses=False``): payloads are bytes.
        namespace: prefix of every key.
        policy: how calls are retried while the endpoint is unreachable.
    """

    def __init__(self, client: Any, *, namespace: str, policy: RetryPolicy) -> None:
        if client.get_encoder().decode_responses:
            raise ConfigError(
                "RedisBroker needs a client with decode_responses=False: "
                "payloads are bytes"
            )
        self.client = client
        self.namespace = namespace
        self.guard = ConnectionGuard(
            policy,
            name=describe(client),
            on_readonly=self._reconnect,
            # A cluster is one endpoint of several masters: see ``settle``.
            settle=policy.cap if isinstance(client, RedisCluster) else 0.0,
        )
        self.queues_key = f"{{{namespace}}}:queues"
        self._keys: dict[str, list[str]] = {}
        self._registered: dict[str, float] = {}
        self.block_cap = _block_cap(client)
        register = client.register_script
        self.push_script = register(scripts.PUSH)
        self.notify_script = register(scripts.NOTIFY)
        self.reserve_script = register(scripts.RESERVE)
        self.reserve_few_script = register(scripts.RESERVE_FEW)
        self.maintain_script = register(scripts.MAINTAIN)
        self.ack_script = register(scripts.ACK)
        self.release_script = register(scripts.RELEASE)
        self.release_owner_script = register(scripts.RELEASE_OWNER)
        self.extend_script = register(scripts.EXTEND)
        self.dead_letter_script = register(scripts.DEAD_LETTER)
        self.lengths_script = register(scripts.LENGTHS)
        self.purge_script = register(scripts.PURGE)
        self.replay_script = register(scripts.REPLAY_DEAD)
        self.purge_dead_script = register(scripts.PURGE_DEAD)
        # The scripts that leave a wake-up token, by sha: their variants that
        # leave none, for a node other than the queue's home (see ``run``).
        self._quiet = {
            script.sha: register(scripts.quiet(source))
            for script, source in (
                (self.push_script, scripts.PUSH),
                (self.release_script, scripts.RELEASE),
                (self.release_owner_script, scripts.RELEASE_OWNER),
                (self.replay_script, scripts.REPLAY_DEAD),
            )
        }
        self.held: dict[str, list[str]] = {}
        # Ready lists that held tasks at this client's last push to them: its next
        # push sends no wake-up token along (see ``push_ready``).
        self._backlogged: set[str] = set()
        # When ``pop`` last ran the maintenance script, per queue, on ``monotonic``
        # (tests replace it): an interval, which the wall clock cannot measure (a
        # step back would stop maintenance for as long as the step).
        self._maintained: dict[str, float] = {}
        self.monotonic: Callable[[], float] = time.monotonic
        self.direct = _direct_capable(client)
        self._conn: Any = None
        self._pid = os.getpid()
        self._conn_lock = threading.Lock()
        # Requests ``begin`` sent on the dedicated connection, replies not yet read.
        self._sent: deque[_Slot] = deque()
        self._sending_thread = 0

    def keys(self, queue: str) -> list[str]:
        """The queue's keys, in the order every script takes them."""
        keys = self._keys.get(queue)
        if keys is None:
            tag = f"{{{self.namespace}:{queue}}}"
            keys = self._keys[queue] = [f"{tag}:{k}" for k in scripts.QUEUE_KEYS]
        return keys

    def run(
        self,
        script: Script,
        queue: str,
        args: Sequence[Any],
        *,
        wake: bool = True,
        brief: bool = False,
    ) -> Any:
        """Run a queue script on this endpoint, under the guard.

        ``wake=False`` runs the script's variant that leaves no wake-up token:
        over several nodes workers wait on the queue's home node only, and a token
        left on another would lie there untaken (the broker wakes the home node).
        ``brief``: one attempt and one at once, no back-off (see
        ``ConnectionGuard.briefly``).
        """
        if not wake:
            script = self._quiet[script.sha]
        keys = self.keys(queue)
        return self.guard.call_or_briefly(brief, self._evalsha, script, keys, args)

    def notify(self, queue: str) -> None:
        """Leave a wake-up token for ``queue``'s blocked workers, best effort.

        Not retried for the guard's budget (see ``ConnectionGuard.briefly``): a
        token that cannot be left costs a blocked worker the rest of its wait,
        while a long retry would hold up a caller that has done its work (a push
        already stored, a reserve holding tasks).
        """
        self.guard.briefly(self._evalsha, self.notify_script, self.keys(queue), ())

    def reserve(
        self, queue: str, args: list[Any], *, retried: bool = False, brief: bool = False
    ) -> Reserved:
        """Run the reserve script (``reserve_args`` + ack groups), under the guard.

        A retried attempt gets ``r`` appended to its flags: it may follow a first
        attempt that ran on the server but whose reply was lost, and the flag lets
        the script look for that (an extra command that a first attempt need not
        pay for). ``retried``: a first attempt was already sent (see
        ``begin_reserve``). Through ``execute_command`` (not ``direct``) every
        attempt is flagged: redis-py may send the script again by itself (its own
        retries, on a client that keeps them), unseen by the guard, and a second
        run without the flag would lease more tasks into the first run's batch
        (the whole-batch ack would then drop tasks never handed out) or, by
        ``SORT ... STORE``, overwrite it (its tasks lost).

        A leased reserve on a plain connection is ``MULTI``, the script, ``LRANGE``
        of the new batch's list, ``EXEC``: the entries reach the client straight
        from the list the script filled, never through Lua (see ``scripts``). A
        small one sent less than ``MAINTAIN_EVERY`` after the last upkeep is the
        lean ``scripts.RESERVE_FEW`` instead, on any client (see
        ``_may_skip_upkeep``): most reserves of a worker taking one task at a time.
        ``brief``: one attempt and one at once, no back-off (see
        ``ConnectionGuard.briefly``).
        """
        keys = self.keys(queue)
        if not self.direct:
            args[FLAGS_AT] += "r"
            lean = self._may_skip_upkeep(queue, args)
            script = self.reserve_few_script if lean else self.reserve_script
            reply = self.guard.call_or_briefly(brief, self._evalsha, script, keys, args)
            if not lean:
                self._maintained[queue] = self.monotonic()
            entries, nxt, again = reply
            return entries, nxt, again
        attempts = 1 if retried else 0

        def attempt() -> Reserved:
            nonlocal attempts
            if attempts:
                args[FLAGS_AT] += "r"
            attempts += 1
            commands, lean = self._reserve_request(queue, keys, args)
            try:
                got = self._reserve_sent(commands)
            except OutOfMemoryError:
                if len(commands) == 1:
                    raise
                # Over maxmemory Redis refuses every command a MULTI block
                # queues (so nothing ran), but runs the script alone, which
                # may go on writing (``scripts._MAY_GO_ON``): take the batch
                # through Lua then, so workers drain the queue filling memory.
                alone = self._reserve_commands(keys, args, listed=False)
                got = self._reserve_sent(alone)
            if not lean:
                self._maintained[queue] = self.monotonic()
            return got

        return self.guard.call_or_briefly(brief, attempt)

    def _may_skip_upkeep(self, queue: str, args: list[Any]) -> bool:
        """Whether this reserve may be ``RESERVE_FEW``: a lease of fewer than
        ``scripts.SORT_FROM`` tasks, by a caller not woken (flags ``-``, or
        ``-r`` for a retry), acking whole batches only, while the reserve script
        (or the maintenance script of ``pop``) ran on this queue less than
        ``MAINTAIN_EVERY`` ago."""
        if args[2] == "" or args[1] >= scripts.SORT_FROM:
            return False
        if args[FLAGS_AT] not in ("-", "-r"):
            return False
        if any(rids != "*" for rids in args[FLAGS_AT + 2 :: 2]):
            return False
        last = self._maintained.get(queue)
        return last is not None and self.monotonic() - last < MAINTAIN_EVERY

    def _reserve_request(
        self, queue: str, keys: list[str], args: list[Any]
    ) -> tuple[tuple[tuple[Any, ...], ...], bool]:
        """A reserve as sent on a plain connection, and whether it is the lean
        script (the script alone) rather than ``_reserve_commands``."""
        if self._may_skip_upkeep(queue, args):
            sha = self.reserve_few_script.sha
            return (("EVALSHA", sha, len(keys), *keys, *args),), True
        return self._reserve_commands(keys, args), False

    def _reserve_sent(self, commands: tuple[tuple[Any, ...], ...]) -> Reserved:
        try:
            return _reserve_reply(self._call(commands))
        except NoScriptError:
            # The server lost its scripts (restart, SCRIPT FLUSH): nothing ran
            # (an LRANGE found no batch), so load them and do it again.
            self._load_reserve_scripts()
            return _reserve_reply(self._call(commands))

    def _load_reserve_scripts(self) -> None:
        for source in (scripts.RESERVE, scripts.RESERVE_FEW):
            self.client.script_load(source)

    def _reserve_commands(
        self, keys: list[str], args: list[Any], *, listed: bool = True
    ) -> tuple[tuple[Any, ...], ...]:
        """A reserve as sent on a plain connection.

        A leased batch of ``LISTED_FROM`` tasks or more is MULTI / the script
        (flag ``l``) / LRANGE of the batch's list / EXEC. A smaller one, or a
        pop, is the script alone, returning its entries through Lua: for a few
        entries that costs less than the three more replies cost the client to
        read. ``listed=False``: the script alone in any case.
        """
        script = ("EVALSHA", self.reserve_script.sha, len(keys), *keys)
        if not listed or args[2] == "" or args[1] < LISTED_FROM:
            return ((*script, *args),)
        flags = args[FLAGS_AT] + "l"
        batch = f"{keys[LEASES]}:{args[3].partition(':')[0]}"
        return (
            ("MULTI",),
            (*script, *args[:FLAGS_AT], flags, *args[FLAGS_AT + 1 :]),
            ("LRANGE", batch, 0, -1),
            ("EXEC",),
        )

    def begin_reserve(self, queue: str, args: list[Any]) -> Callable[[], Reserved]:
        """Send a leased ``reserve`` now; the returned function reads its reply.

        The request goes out on the dedicated connection, which stays taken (its
        lock held) until every request sent this way has had its reply read, so
        calls in between, from any thread, use pooled connections and never read
        these replies. The thread that holds it may send more requests behind the
        first (a deeper prefetch); replies are read in order, whichever function
        is called first. Where a request cannot be left in flight (no dedicated
        connection, or another thread holds it) the call runs at once and the
        function returns its reply. A failed send or read, or an error reply, is
        retried like any call, flagged as a retry: the first attempt may have run.
        """
        if self._pid != os.getpid():
            self._forked()
        me = threading.get_ident()
        mine = bool(self._sent) and self._sending_thread == me
        if not self.direct or not (mine or self._conn_lock.acquire(blocking=False)):
            reply = self.reserve(queue, args)
            return lambda: reply
        self._sending_thread = me
        commands, lean = self._reserve_request(queue, self.keys(queue), args)
        slot = _Slot(len(commands))
        try:
            if self._conn is None:
                self._conn = self.client.connection_pool.get_connection()
            self._conn.send_packed_command(_pack(self._conn, commands))
        except BaseException as error:
            slot.replies = _FAILED
            self._fail_sent()  # earlier requests cannot be read either
            if not isinstance(error, Exception):
                raise
        else:
            self._sent.append(slot)

        def finish() -> Reserved:
            if slot.replies is _UNREAD:
                self._read_until(slot)
            if slot.replies is not _FAILED:
                try:
                    got = _reserve_reply(slot.replies)
                except NoScriptError:  # nothing ran: the retry loads the scripts
                    pass  # (under the guard: a failure then is a BrokerError)
                except ResponseError:  # an error the retry raises
                    pass
                else:
                    if not lean:
                        self._maintained[queue] = self.monotonic()
                    return got
            return self.reserve(queue, args, retried=True)

        return finish

    def _read_until(self, slot: _Slot) -> None:
        """Read replies of requests sent by ``begin_reserve``, in order, up to
        ``slot``'s."""
        conn = self._conn
        while slot.replies is _UNREAD:
            if not self._sent or self._pid != os.getpid():
                slot.replies = _FAILED  # sent by the parent process: not ours to read
                return
            head = self._sent[0]
            try:
                head.replies = _read_replies(conn, head.size)
            except BaseException as error:
                self._fail_sent()
                if not isinstance(error, Exception):
                    raise
                return
            self._sent.popleft()
            if not self._sent:
                self._conn_lock.release()

    def _fail_sent(self) -> None:
        """The dedicated connection broke (caller holds its lock): no reply of a
        request sent by ``begin_reserve`` can be read any more; they will be
        retried."""
        for pending in self._sent:
            pending.replies = _FAILED
        self._sent.clear()
        self._drop(self._conn)
        self._conn_lock.release()

    def _reconnect(self) -> None:
        """Drop this endpoint's idle connections, the dedicated one included.

        Called before a call refused with READONLY is retried: the server at the
        other end is a replica now. Behind a name that a failover points at the new
        primary (a managed Redis, a DNS or proxy address), only a new connection
        reaches it. Connections in use by other threads are left to find out on
        their own. A cluster client follows the cluster's redirects by itself.
        """
        pool = getattr(self.client, "connection_pool", None)
        if pool is None:
            return
        if self._pid == os.getpid() and self._conn_lock.acquire(blocking=False):
            try:
                self._drop(self._conn)
            finally:
                self._conn_lock.release()
        pool.disconnect(inuse_connections=False)

    def _drop(self, conn: Any) -> None:
        """Forget the dedicated connection (caller holds its lock): it is unusable."""
        self._conn = None
        if conn is not None:
            conn.disconnect()
            self.client.connection_pool.release(conn)

    def push_ready(
        self,
        queue: str,
        priority: int,
        payloads: Sequence[bytes],
        *,
        wake: bool = True,
        brief: bool = False,
    ) -> bool:
        """Append new entries of ``payloads`` to a ready list, leaving a wake-up
        token (``wake=False``: none, see ``run``) if the list was empty; return
        whether a wake-up is still owed (the list was empty and no token was
        left here: the caller leaves one on the home node, see
        ``RedisBroker._notify``).

        Only a push to an empty list wakes anyone: a worker waits on the token
        only after its reserve found nothing ready, so behind tasks already
        waiting it is awake already, or was woken by the push that found the list
        empty (a woken reserve that leaves tasks ready passes the wake-up on, see
        ``scripts.RESERVE``). A token lost by a worker that died holding it costs
        the others at most their wait (``WorkerConfig.wait``): the next reserve
        after it passes the wake-up on again.

        On a plain connection this is an RPUSH, and when the list was empty last
        time, LPUSH and LTRIM of the token in the same write: the push script's
        effect without copying every payload into Lua and out again, which costs
        the server about twice the RPUSH itself (``python -m
        benchmark.redis_costs``), and without the token's two commands while a
        backlog lasts: leaving them out took a lone ``RedisBroker.push`` from
        173.8 to 138.6 µs and its server CPU from 50.5 to 40.8 µs (``python -m
        benchmark.one_at_a_time``, docs/performance.md). When the RPUSH's reply
        says the list was empty after all, the wake-up is owed. Not a MULTI
        block: the server runs the three in order, so a worker woken by the token
        finds the tasks. Only the RPUSH's error is raised (and retried by the
        guard): the token's own (``OOM`` reached by the RPUSH itself, say) must
        not be, or the retry would store the tasks twice. ``brief``: as
        ``run``'s.
        """
        if not self.direct:
            entries = new_entries(payloads, priority)
            args = [priority, "", *entries]
            was_empty = self.run(self.push_script, queue, args, wake=wake, brief=brief)
            return bool(was_empty) and not wake
        keys = self.keys(queue)
        key = keys[priority]
        token = (
            (("LPUSH", keys[NOTIFY], "1"), ("LTRIM", keys[NOTIFY], 0, 0))
            if wake and key not in self._backlogged
            else ()
        )
        length, woke = self.guard.call_or_briefly(
            brief, self._push_then_wake, key, payloads, priority, token
        )
        if length > len(payloads):
            self._backlogged.add(key)
            return False
        self._backlogged.discard(key)
        return not woke

    def _push_then_wake(
        self,
        key: str,
        payloads: Sequence[bytes],
        priority: int,
        token: tuple[Command, ...],
    ) -> tuple[int, bool]:
        """``_call`` the RPUSH of ``payloads`` (``packed_rpush``, so a name the
        client cannot encode fails here, under the guard) and the token's
        commands behind it; raise the RPUSH's error reply; return the list's new
        length and whether a token was left (commands given, all succeeded)."""
        first, *rest = self._call((packed_rpush(key, payloads, priority), *token))
        if isinstance(first, ResponseError):
            raise first
        woke = bool(rest) and not any(isinstance(r, ResponseError) for r in rest)
        return first, woke

    def pop(
        self,
        queue: str,
        now: float,
        count: int,
        levels: str,
        chain: str,
        *,
        brief: bool = False,
    ) -> tuple[list[bytes], str]:
        """Pop up to ``count`` ready entries without a lease; if none, when next.

        ``chain`` is for a woken caller, '' otherwise: 'c' passes a wake-up on
        when more are ready, 'm' says so instead (``MORE`` in place of the next
        due time), for the caller to pass it on where workers wait (several
        nodes); see the reserve script's flags.

        For plain connections only (see ``direct``). Payloads never pass through
        Lua: a plain LMPOP takes them, and the maintenance script (reclaim lapsed
        leases, promote due delayed tasks, pass a wake-up on) runs in the same
        write only when needed: when this client has not run it for
        ``MAINTAIN_EVERY`` seconds (of ``monotonic``: ``now``, the wall clock,
        only says what is due), when the pop comes up short, or when the
        caller was woken. A script call costs more than a plain command, and
        while the ready lists are full a task falling due would only join their
        tail anyway. Returns the entries and, when there are none, the next due
        time ('' for none). ``brief``: one attempt and one at once, no back-off
        (see ``ConnectionGuard.briefly``).
        """
        keys = self.keys(queue)
        guarded = self.guard.call_or_briefly
        entries: list[bytes] = []
        ticks = self.monotonic()
        last = self._maintained.get(queue)
        if not chain and last is not None and ticks - last < MAINTAIN_EVERY:
            entries, _, _ = guarded(brief, self._pop, keys, None, count, levels)
            if len(entries) == count:
                return entries, ""
        maintain = (repr(now), count - len(entries), levels, chain or "-")
        try:
            want = count - len(entries)
            more, nxt, high = guarded(brief, self._pop, keys, maintain, want, levels)
        except BrokerError:
            if entries:  # popped already: they exist nowhere else, hand them out
                return entries, ""
            raise
        self._maintained[queue] = ticks
        entries += more
        if high and len(more) < want and levels == "2":
            # LMPOP takes from one list: it emptied HIGH's, and NORMAL's may
            # hold the rest. Topped up, as the pop before the upkeep is.
            try:
                rest, _, _ = guarded(
                    brief, self._pop, keys, None, count - len(entries), "2"
                )
            except BrokerError:
                return entries, ""  # popped already: hand them out
            entries += rest
        return entries, nxt

    def _pop(
        self,
        keys: list[str],
        maintain: tuple[Any, ...] | None,
        count: int,
        levels: str,
    ) -> tuple[list[bytes], str, bool]:
        """LMPOP (after the maintenance script when ``maintain``): the entries,
        what the script said ('' without it), and whether they came from HIGH's
        list (LMPOP takes from one list only: NORMAL's may hold more)."""
        lists = keys[:1] if levels == "1" else keys[:2]
        high = keys[0].encode()
        pop = ("LMPOP", len(lists), *lists, "LEFT", "COUNT", count)
        if maintain is None:
            (popped,) = self._call((pop,))
            if isinstance(popped, ResponseError):
                raise popped
            return (popped[1], "", popped[0] == high) if popped else ([], "", False)
        script = ("EVALSHA", self.maintain_script.sha, len(keys), *keys, *maintain)
        done, popped = self._call((script, pop))
        if isinstance(popped, ResponseError):
            raise popped
        entries: list[bytes] = popped[1] if popped else []
        if isinstance(done, NoScriptError):
            # The server lost its scripts (restart, SCRIPT FLUSH, first use): load
            # the script and run it. The pop stands; with entries popped, the
            # maintenance still runs now, or while a backlog lasts due tasks and
            # lapsed leases would wait for it to drain.
            if entries:
                try:
                    self.client.script_load(scripts.MAINTAIN)
                    (done,) = self._call((script,))
                except Exception:  # popped: never drop them; a failure recurs
                    return entries, "", popped[0] == high
            else:
                self.client.script_load(scripts.MAINTAIN)
                done, popped = self._call((script, pop))
                if isinstance(popped, ResponseError):
                    raise popped
                entries = popped[1] if popped else []
        from_high = bool(popped) and popped[0] == high
        if isinstance(done, ResponseError):
            if entries:
                return entries, "", from_high  # popped: never drop them
            raise done
        said = done.decode()
        if said == MORE:
            # More were ready than asked for, but another client's pop may have
            # come between the script and ours: with nothing popped, nothing is
            # said (MORE is no due time).
            return entries, MORE if entries else "", from_high
        return entries, "" if entries else said, from_high

    def _evalsha(self, script: Script, keys: list[str], args: Sequence[Any]) -> Any:
        # EVALSHA on the node's dedicated connection (the hot path), else through
        # the client; ``Script.__call__`` only when the server lacks the script
        # (first use, restart, SCRIPT FLUSH): it loads the source and calls again.
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            if self.direct:
                (reply,) = self._call((command,))
                if isinstance(reply, ResponseError):
                    raise reply
                return reply
            return self.client.execute_command(*command)
        except NoScriptError:
            return script(keys, args)

    def _call(self, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` in one write and read every reply, in order.

        An error reply comes back as a ``ResponseError`` value, so every reply is
        read and the connection stays in step. redis-py's ``execute_command``
        checks a connection out of the pool and back in, and wraps each call in
        its retry and metrics code: about half the cost of a small call. The guard
        already retries, so one connection kept per node and process does the same
        work for half the price (a pooled one while another thread holds it). Any
        failure but an error reply (a lost connection, a timeout, an exception
        raised into the thread mid-read) may leave a reply unread, so the
        connection is dropped and the guard's retry starts on a fresh one.
        """
        if self._pid != os.getpid():
            self._forked()
        pool = self.client.connection_pool
        lock = self._conn_lock
        if lock.acquire(blocking=False):
            try:
                conn = self._conn
                if conn is None:
                    conn = self._conn = pool.get_connection()
                try:
                    return _exchange(conn, commands)
                except BaseException:
                    self._drop(conn)
                    raise
            finally:
                lock.release()
        conn = pool.get_connection()
        try:
            return _exchange(conn, commands)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    def _forked(self) -> None:
        # The parent's socket is not ours to use (the pool resets itself in the
        # child likewise), and another thread may have held the lock at the fork.
        self._conn = None
        self._conn_lock = threading.Lock()
        self._sent = deque()
        self._pid = os.getpid()

    def hold(self, member: str, receipts: list[str]) -> None:
        """Remember what batch ``member`` handed out, to recognise a whole-batch ack.

        Only the latest ``_HELD_LIMIT`` batches are kept: one never acked whole
        (partly dead-lettered, released, lapsed) is forgotten in time, and its ack
        then simply names its tasks.
        """
        held = self.held
        held[member] = receipts
        while len(held) > _HELD_LIMIT:
            try:
                held.pop(next(iter(held)), None)
            except (RuntimeError, StopIteration):  # another thread changed it
                break

    def register(self, queue: str) -> None:
        """Record ``queue`` in the namespace's queue set (for ``queues()``).

        Names are never removed (``queues()`` filters out empty ones), so the
        client only re-adds a name once a minute, in case the server lost it.
        """
        now = time.monotonic()
        if now - self._registered.get(queue, -120.0) > 60.0:
            self.guard.call(self.client.sadd, self.queues_key, queue)
            self._registered[queue] = now

    def queue_names(self) -> set[str]:
        """Every queue name recorded on this endpoint."""
        names = self.guard.call(self.client.smembers, self.queues_key)
        return {n.decode() for n in names}

    def block(self, queue: str, seconds: float, *, elsewhere: bool = False) -> bool:
        """Wait up to ``seconds`` (server resolution: 1/hz) for a wake-up token;
        whether one was taken.

        A wait retried by the guard (the server restarted under it) waits only
        for what is left of ``seconds``, so the caller's ``wait`` still holds.
        ``elsewhere``: tasks may come on other nodes (several nodes), so this
        node being down must not hold the caller past ``seconds`` (the guard's
        budget): it is tried briefly (during an outage, only when a probe is
        due), and the rest of ``seconds`` is slept instead; no token then.
        """
        key = self.keys(queue)[NOTIFY]
        until = time.monotonic() + min(seconds, self.block_cap)

        def wait() -> Any:
            left = round(until - time.monotonic(), 3)
            return self.client.blpop([key], max(0.001, left))  # 0 waits forever

        if not elsewhere:
            return self.guard.call(wait) is not None
        token = None
        if not self.guard.in_outage or self.guard.probe_due():
            with contextlib.suppress(BrokerUnavailable):
                token = self.guard.briefly(wait)
        if token is None:
            time.sleep(max(0.0, until - time.monotonic()))
        return token is not None

    def close(self) -> None:
        """Drop the client's connections, the dedicated one included."""
        if self._pid != os.getpid():
            self._forked()
        if self._sent and self._sending_thread == threading.get_ident():
            self._fail_sent()  # requests begun and never collected: abandon them
        # Another thread may hold the dedicated connection (a call, or requests it
        # began and has not collected): do not wait for it; closing the client
        # disconnects that connection with the rest of the pool.
        if self._conn_lock.acquire(timeout=1.0):
            try:
                conn, self._conn = self._conn, None
                if conn is not None:
                    self.client.connection_pool.release(conn)
            finally:
                self._conn_lock.release()
        self.client.close()


def _exchange(conn: Any, commands: Sequence[Command]) -> list[Any]:
    """Write ``commands`` at once on ``conn``; their replies, errors as values."""
    conn.send_packed_command(_pack(conn, commands))
    return _read_replies(conn, len(commands))


def _read_replies(conn: Any, n: int) -> list[Any]:
    """The next ``n`` replies on ``conn``, an error reply as a value (read whole, so
    the connection stays in step)."""
    replies: list[Any] = []
    for _ in range(n):
        try:
            replies.append(conn.read_response())
        except ResponseError as error:
            replies.append(error)
    return replies


def _reserve_reply(replies: list[Any]) -> Reserved:
    """The reserve in the replies to ``Node._reserve_commands``; raises the first
    error reply."""
    if len(replies) == 1:
        (reply,) = replies
        if isinstance(reply, ResponseError):
            raise reply
        entries, nxt, again = reply
        return entries, nxt, again
    *queued, outcome = replies
    for reply in queued:
        if isinstance(reply, ResponseError):
            raise reply
    if isinstance(outcome, ResponseError):  # EXECABORT
        raise outcome
    result, entries = outcome
    if isinstance(result, ResponseError):
        raise result
    return entries, result[1], None


def _pack(conn: Any, commands: Sequence[Command]) -> Any:
    """The wire bytes of ``commands`` (single-word command names, plain arguments;
    a ``bytes`` command is in wire form already, see ``packed_rpush``).

    hiredis packs a whole command in C. redis-py's packer hands every argument to
    a Python encoder first, which for a 1,000-entry push costs about three times
    the packing itself (``python -m benchmark.redis_costs``). Our commands only
    carry bytes, str, int and float (hiredis writes floats with ``repr`` like
    redis-py); anything else falls back to redis-py, which names the bad value.
    """
    if _pack_command is not None:
        try:
            return [
                b"".join([
                    c if isinstance(c, bytes) else _pack_command(c) for c in commands
                ])
            ]  # fmt: skip
        except TypeError:
            pass
    chunks: list[bytes] = []
    for c in commands:
        chunks += [c] if isinstance(c, bytes) else conn.pack_commands([c])
    return chunks


def _direct_capable(client: Any) -> bool:
    """Whether script calls may bypass ``execute_command`` on a dedicated connection.

    Only a plain pooled ``redis.Redis``: a cluster client routes by slot, a
    single-connection client already holds its one connection, and a subclass that
    overrides ``execute_command`` (instrumentation, fault injection) must see
    every call.
    """
    return (
        isinstance(client, redis.Redis)
        and type(client).execute_command is redis.Redis.execute_command
        and getattr(client, "connection", None) is None
    )


def _block_cap(client: Any) -> float:
    # A blocking pop must return before the client's socket timeout fires, or the
    # wait would surface as a TimeoutError; longer waits are done in slices.
    timeout = client.get_connection_kwargs().get("socket_timeout")
    if timeout is None:
        return 3600.0
    return max(0.001, float(timeout) * 0.8)
