"""Connection faults: retry with capped exponential backoff, log once per outage.

A dropped connection, a restarting Redis or a failover is normal weather for a
long-running worker. Every broker call goes through a ``ConnectionGuard``, which
retries transient failures for a bounded time and then raises
``BrokerUnavailable``; the worker loop catches that and calls again later, so it
never crash-loops. The guard remembers that an outage is under way, so a worker
that keeps calling logs one WARNING when the outage starts and one when Redis
answers again, not one per attempt.

A single failure is not an outage yet: a connection that went stale (the server
restarted or closed it while it sat in a pool) fails once even though Redis
answers again, and a broker holds several connections (a blocked wait, the script
connection), each of which may find out on its own. So the first failure of a call
is retried at once, on a new connection, without a word; only when that fails too
does the guard log the outage and back off.

Retrying is safe because every operation is either idempotent (ack, extend,
lengths) or at-least-once by nature: a reserve whose reply was lost leaves leases
that lapse and come back; a push whose reply was lost may store its tasks twice.

Give the broker clients that do not retry by themselves (``retry=Retry(NoBackoff(),
0)``, as ``RedisBroker.from_url`` does): redis-py retries 10 times by default, and
two retry layers multiply each other's waits. redis-py's retries are also unseen
here: a blocking wait starts over, a lease-less pop loses what its first run took.
A reserve stays safe: where redis-py might resend it (``Node.direct`` is False)
every call is flagged as a possible retry (see ``Node.reserve``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import attrs
import redis.exceptions as rex

from sergeant.errors import BrokerError, BrokerUnavailable

from ._fork_safe import ForkSafeLock

_log = logging.getLogger("sergeant.adapters.redis")

P = ParamSpec("P")
T = TypeVar("T")

# Failures that go away by themselves: a lost connection, a server still loading its
# data after a restart (BusyLoadingError is a ConnectionError), a cluster resharding
# or electing. While a queue's slot migrates, its multi-key scripts get TRYAGAIN
# (they did not run) until redis-py's cluster client gives up with a bare
# ClusterError ("TTL exhausted"): that one passes too once the slot has moved.
# Wrong credentials are ConnectionErrors too, but retrying cannot help. The
# cluster client's own failures are not RedisErrors: RedisClusterUnreachableError
# (no node of the cluster answers, as while it restarts) and SlotNotCoveredError
# (no node serves the slot, as before a failover ends, or with
# cluster-require-full-coverage off) pass; any other RedisClusterException (a
# node not in cluster mode) is a BrokerError.
_TRANSIENT: tuple[type[Exception], ...] = (
    rex.ConnectionError,
    rex.TimeoutError,
    rex.ClusterError,
    rex.TryAgainError,
    rex.RedisClusterUnreachableError,
    rex.SlotNotCoveredError,
)
_PERMANENT: tuple[type[Exception], ...] = (
    rex.AuthenticationError,
    rex.AuthorizationError,
)
# Error replies that mean "not now" rather than "never": the server refused the
# command before running any of it, and takes the same command once it is past the
# state it is in. BUSY: a script runs past ``busy-reply-threshold`` (someone's
# slow script; it ends, or is killed). NOREPLICAS: fewer replicas in sync than
# ``min-replicas-to-write``. OOM: used memory is over ``maxmemory`` (with
# ``noeviction``); Redis refuses a command that adds data (in a script, only
# while the script has written nothing, so nothing ran; in MULTI, every command
# queued), and memory frees as consumers drain (reserves are made to go on, see
# ``scripts._MAY_GO_ON``), as an admin raises the limit or as keys expire.
# READONLY (redis-py's ReadOnlyError): the node is a replica now, a failover
# demoted it; the primary may be reachable under the same name, so the
# endpoint's connections are dropped first (``on_readonly``). UNBLOCKED: a
# blocking wait (an idle worker's BLPOP) was ended by the server unserved, by a
# failover demoting the node ("master -> replica?") or by CLIENT UNBLOCK ... ERROR;
# nothing was popped, and the wait is simply resumed (on a replica it then meets
# READONLY, above). MASTERDOWN is a ClusterDownError, a ClusterError above.
_BUSY_REPLIES = ("BUSY ", "NOREPLICAS ", "UNBLOCKED ")
# A script touching a key its slot no longer holds here: every key a script
# builds (a batch's ``leases:<bid>``, the no-op ``DEL`` of ``scripts._MAY_GO_ON``)
# carries the queue's hash tag, so this happens only while the slot migrates and
# that key is missing on the source (declared keys get TRYAGAIN instead). What the
# script did before it is idempotent (acks); it is retried until the slot moved.
_MIGRATING = "Script attempted to access a non local key in a cluster node"


# The same refusals, met by EXEC when the state began after the block's commands
# were queued: "EXECABORT Transaction discarded because of: OOM ..." (redis-py
# strips the first word). Nothing of the block ran. So are a replica's
# MASTERDOWN and a server's LOADING, retried above when they come alone.
_EXEC_CAUSE = "because of: "
_EXEC_REFUSALS = (*_BUSY_REPLIES, "OOM ", "READONLY ", "MASTERDOWN ", "LOADING ")


def _not_now(error: rex.RedisError) -> bool:
    """Whether an error reply is one of the refusals above."""
    if isinstance(error, (rex.ReadOnlyError, rex.OutOfMemoryError)):
        return True
    if isinstance(error, rex.ExecAbortError):
        return _exec_cause(error).startswith(_EXEC_REFUSALS)
    if not isinstance(error, rex.ResponseError):
        return False
    text = str(error)
    return text.startswith(_BUSY_REPLIES) or text.startswith(_MIGRATING)


def _exec_cause(error: rex.ExecAbortError) -> str:
    """The reply that made EXEC discard a block ('' when none is named)."""
    return str(error).partition(_EXEC_CAUSE)[2]


def _read_only(error: Exception) -> bool:
    """Whether the server refused because it is a replica now."""
    if isinstance(error, rex.ExecAbortError):
        return _exec_cause(error).startswith("READONLY ")
    return isinstance(error, rex.ReadOnlyError)


# Raised by the client before anything is sent: an argument that cannot be
# encoded (a str holding a lone surrogate, a name from ``os.fsdecode``). Retrying
# the same arguments cannot help, and the port lets no driver exception escape.
_CLIENT_SIDE: tuple[type[Exception], ...] = (UnicodeError,)


# What an attempt's ``except`` takes in; ``ConnectionGuard._fatal`` sorts it.
_CAUGHT: tuple[type[Exception], ...] = (
    rex.RedisError,
    rex.RedisClusterException,
    *_CLIENT_SIDE,
)


def _client_side(error: Exception) -> BrokerError:
    kind = type(error).__name__
    return BrokerError(f"redis: cannot send an argument: {kind}: {error}")


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How a call is retried while Redis cannot be reached; shareable between brokers.

    Attributes:
        budget: seconds one call may spend retrying before it raises
            ``BrokerUnavailable``; 0 fails at once.
        base: the first back-off delay, in seconds; each retry doubles it.
        cap: the longest single delay, in seconds.
    """

    budget: float = 10.0
    base: float = 0.05
    cap: float = 2.0

    def delay(self, attempt: int) -> float:
        """The pause before retry number ``attempt`` (0-based), with jitter.

        Jitter keeps a fleet of workers that lost Redis together from hammering it
        in lockstep when it comes back; half of the delay is kept so the back-off
        still grows.
        """
        full = min(self.cap, self.base * 2.0 ** min(attempt, 32))
        return full * random.uniform(0.5, 1.0)


class ConnectionGuard:
    """Runs driver calls under a ``RetryPolicy`` and translates driver exceptions.

    One guard per Redis endpoint: it holds the outage state that makes the log
    say "unreachable" once and "reachable again" once. Safe to share between
    threads.

    ``settle``: a success ends an outage only once that many seconds passed
    since its last failure. For a Redis Cluster, one endpoint of several
    masters: while one is down, calls to the others succeed between calls that
    fail, and each success would end the outage and each failure start a new
    one (a WARNING pair per flip).
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        name: str,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_readonly: Callable[[], None] | None = None,
        settle: float = 0.0,
    ) -> None:
        self.policy = policy
        self.name = name
        self._on_readonly = on_readonly
        self._sleep = sleep
        self._clock = clock
        self._settle = settle
        self._lock = ForkSafeLock()  # see _fork_safe
        self._down_since: float | None = None
        self._failed_at = 0.0  # the last failure seen during an outage
        # During an outage: when a caller that could go elsewhere last tried
        # this endpoint anyway (see ``probe_due``).
        self._probed_at = 0.0

    @property
    def in_outage(self) -> bool:
        """Whether the last call could not reach Redis (until one succeeds)."""
        return self._down_since is not None

    def probe_due(self) -> bool:
        """Whether a caller that has somewhere else to go should try this endpoint.

        Always, unless an outage is under way; during one, at most once per
        ``policy.cap`` seconds (the longest pause between retries of a call that
        has nowhere else to go). A producer over several nodes pushes elsewhere
        while one is down, and would otherwise never learn that it came back.
        """
        with self._lock:
            if self._down_since is None:
                return True
            now = self._clock()
            if now - self._probed_at < self.policy.cap:
                return False
            self._probed_at = now
            return True

    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn``, retrying transient failures until the policy's budget is spent.

        Raises:
            BrokerUnavailable: Redis could not be reached within the budget.
            BrokerError: any other driver failure (not retried).
        """
        # During an outage, when this call started is when Redis was seen to
        # answer again, should it succeed (see ``_recovered``).
        began = None if self._down_since is None else self._clock()
        try:
            result = fn(*args, **kwargs)
        except _CAUGHT as exc:
            fatal = self._fatal(exc)
            if fatal is not None:
                raise fatal from exc
            return self._retry(exc, fn, *args, **kwargs)
        if self._down_since is not None:
            self._recovered(began)
        return result

    def call_or_briefly(
        self, brief: bool, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``briefly(fn, ...)`` when ``brief``, else ``call(fn, ...)``."""
        if brief:
            return self.briefly(fn, *args, **kwargs)
        return self.call(fn, *args, **kwargs)

    def briefly(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn`` for a best-effort errand: once more at once if it fails
        for now (a stale connection), never with back-off, never as an outage.

        For calls whose failure costs only a delay, made while the caller holds
        something a long retry would keep waiting (a wake-up token passed on by
        a reserve holding tasks), or that another endpoint can take instead (a
        push over several nodes).

        A success ends an outage (the endpoint answered), as ``call``'s does.
        Two failures in a row start one (logged once, as ``call``'s are): the
        endpoint did not answer on a new connection either, and callers that can
        go elsewhere learn it from ``in_outage``.

        Raises:
            BrokerError: both attempts failed.
        """
        error: Exception | None = None
        began = None if self._down_since is None else self._clock()
        for _ in range(2):
            # As in ``_retry``: after READONLY, only a new connection may reach
            # the new primary.
            if error is not None and self._on_readonly and _read_only(error):
                self._on_readonly()
            try:
                result = fn(*args, **kwargs)
            except _CAUGHT as exc:
                fatal = self._fatal(exc)
                if fatal is not None:
                    raise fatal from exc
                error = exc
            else:
                if self._down_since is not None:
                    self._recovered(began)
                return result
        if error is not None:  # always: the loop ran twice and failed
            self._outage(error)
        raise BrokerUnavailable(f"redis {self.name}: {error}") from error

    def _retry(
        self, first: Exception, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Retry after ``first``: once at once, then with back-off as an outage.

        Not in an outage, the first retry runs at once and logs nothing: most
        likely the connection was stale (see the module's docstring) and the
        retry runs on a new one.
        """
        started = self._clock()
        error = first
        attempts = 1
        quiet = self._down_since is None
        backoff = 0
        while True:
            if self._on_readonly is not None and _read_only(error):
                self._on_readonly()
            if not quiet:
                self._outage(error)  # logs once per outage
                pause = self.policy.delay(backoff)
                backoff += 1
                elapsed = self._clock() - started
                if elapsed + pause > self.policy.budget:
                    raise BrokerUnavailable(
                        f"redis {self.name} unreachable ({attempts} attempts in "
                        f"{elapsed:.2f}s): {error}"
                    ) from error
                self._sleep(pause)
            quiet = False
            began = self._clock()
            attempts += 1
            try:
                result = fn(*args, **kwargs)
            except _CAUGHT as exc:
                fatal = self._fatal(exc)
                if fatal is not None:
                    raise fatal from exc
                error = exc
                continue
            if self._down_since is not None:  # ours, or another thread's outage
                self._recovered(began)
            return result

    def _fatal(self, error: Exception) -> BrokerError | None:
        """What to raise for a failed attempt; None: it may pass, retry it."""
        if isinstance(error, _PERMANENT):
            return BrokerError(f"redis {self.name}: {error}")
        if isinstance(error, _TRANSIENT):
            return None
        if isinstance(error, rex.RedisError):
            return None if _not_now(error) else self._failure(error)
        if isinstance(error, rex.RedisClusterException):
            return BrokerError(f"redis {self.name}: {error}")
        return _client_side(error)

    def _failure(self, error: rex.RedisError) -> BrokerError:
        """The BrokerError for a failure that retrying cannot fix.

        A server older than Redis 7.0 answers LMPOP (sent directly, or from a
        script) with "unknown command"; say which version is needed rather than
        leave users to work it out from the raw reply.
        """
        text = str(error).lower()
        if ("unknown command" in text and "lmpop" in text) or (
            "unknown redis command called from" in text  # from a script
        ):
            return BrokerError(
                f"redis {self.name}: the server does not know a command the broker "
                f"uses (LMPOP); sergeant's Redis broker needs Redis 7.0 or newer "
                f"({error})"
            )
        return BrokerError(f"redis {self.name}: {error}")

    def _outage(self, error: Exception) -> None:
        with self._lock:
            now = self._failed_at = self._clock()
            if self._down_since is not None:
                return
            self._down_since = self._probed_at = now
        _log.warning(
            "redis %s unreachable (%s: %s); retrying with backoff",
            self.name,
            type(error).__name__,
            error,
        )

    def _recovered(self, began: float | None) -> None:
        """End the outage: a call that ``began`` then (None: unknown) succeeded.

        The outage is reported to have lasted until that call began, not until
        it returned: a blocking wait retried during the outage may have waited
        out its whole timeout since, and that was Redis answering, not Redis down.
        """
        with self._lock:
            since = self._down_since
            if since is None:
                return
            if self._settle and self._clock() - self._failed_at < self._settle:
                return  # another part of the endpoint failed just now
            self._down_since = None
        end = self._clock() if began is None else max(began, since)
        _log.warning("redis %s reachable again after %.2fs", self.name, end - since)
