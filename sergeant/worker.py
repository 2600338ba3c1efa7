"""The Worker: the user's class, and the loop that drives tasks through their lifecycle.

Users subclass ``Worker`` and write ``work(task)``; everything else is optional:
hooks (``initialize``, ``finalize``, ``pre_work``, ``post_work``), handlers
(``on_success`` ... ``on_stop``) and control flow returned from ``work``
(``return self.retry(task)``, ``self.requeue``, ``self.stop``, ``self.respawn``).

The loop is ``run()``, one ``step()`` at a time: reserve a batch, decode it (poison goes
to the dead-letter store), run it through the executor under the watchdog, then settle
every task: ask ``lifecycle.advance`` for each transition, publish the event, and turn
the resulting state into broker actions (ack, re-push, dead-letter, release). Acks of
successes ride on the next reserve, so a one-at-a-time worker pays one round trip per
task. With ``WorkerConfig.prefetch`` the next batches are requested before this one
is decoded, so the broker works while the worker does (``_prefetch.Prefetcher``).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

from sergeant import clock as _clock
from sergeant._gc_pause import FREEZE_AT, GcPause
from sergeant._lease_keeper import LeaseKeeper
from sergeant._numbers import finite_number
from sergeant._prefetch import Prefetcher
from sergeant._settlement import Settlement
from sergeant.config import DeliveryMode, WorkerConfig
from sergeant.errors import (
    BrokerError,
    BrokerUnavailable,
    ConfigError,
    SergeantError,
    TaskTimedOut,
    WatchdogError,
)
from sergeant.lifecycle import Event
from sergeant.outcome import (
    CONTROL,
    RETURNED_NONE,
    Expired,
    NotStarted,
    Outcome,
    Raised,
    RejectRequested,
    RequeueRequested,
    RespawnRequested,
    RetryRequested,
    Returned,
    StopRequested,
)
from sergeant.producer import Producer, oversized
from sergeant.protocols import (
    Broker,
    Codec,
    Delivery,
    Executor,
    SupportsPrefetch,
    Watchdog,
    decode_all,
)
from sergeant.supervision import StopReason
from sergeant.task import Task

Listener = Callable[[Event], None]
# Bytes a stored payload may exceed ``max_payload_bytes`` by and still run: what a
# retry or requeue adds to a task the producer accepted (its attempt, an eta).
REPUSH_SLACK = 64

_T = TypeVar("_T")

#: How long ``run()`` pauses after finding nothing when ``WorkerConfig.wait`` is 0.
IDLE_PAUSE = 0.01


class Worker(Producer):
    """Base class of user workers: subclass it and implement ``work``.

    Args:
        config: how to consume the queue (``config.name`` is the queue).
        broker: where tasks are stored.
        codec: how tasks are encoded.
        executor: where ``work`` runs (inline, threads, processes).
        watchdog: what enforces timeouts.
        owner: the name leases are held under; the supervisor passes one per child so
            it can release a dead child's tasks. Defaults to a unique name.
        clock: wall clock (etas); ``monotonic``: for starvation and back-off.
        rng: randomness for retry jitter (seed it in tests).
    """

    #: Subclasses may set a default configuration here instead of passing one.
    config: WorkerConfig

    _HANDLERS: ClassVar[tuple[str, ...]] = (
        "on_success",
        "on_failure",
        "on_timeout",
        "on_retry",
        "on_max_retries",
        "on_requeue",
        "on_starvation",
        "on_stop",
    )

    def __init__(
        self,
        *,
        broker: Broker,
        codec: Codec,
        executor: Executor,
        watchdog: Watchdog,
        config: WorkerConfig | None = None,
        owner: str | None = None,
        clock: _clock.Clock = _clock.wall,
        monotonic: _clock.Clock = _clock.monotonic,
        rng: random.Random | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if config is None:
            config = getattr(type(self), "config", None)
        if not isinstance(config, WorkerConfig):
            raise SergeantError(
                "Worker needs a WorkerConfig: pass config=... or set it on the class"
            )
        super().__init__(
            broker=broker,
            codec=codec,
            queue=config.name,
            clock=clock,
            max_payload_bytes=config.max_payload_bytes,
        )
        self.config = config
        self.executor = executor
        self.watchdog = watchdog
        self.owner = owner or self.owner
        self.monotonic = monotonic
        self.rng = rng or random.Random()
        self.logger = logger or logging.getLogger(f"sergeant.worker.{config.name}")
        self._listeners: list[Listener] = []
        # A plain flag, not a threading.Event: request_stop runs in signal handlers,
        # and Event.set takes a lock the interrupted thread may be holding.
        self._stop_requested = False
        self._stop_reason: StopReason | None = None
        self._pending_acks: list[Delivery] = []
        self._asked = 0  # how many tasks the last reserve asked for
        self._gc_pause = GcPause(may_freeze=True)
        self._prefetcher: Prefetcher | None = None
        if config.prefetch and isinstance(broker, SupportsPrefetch):
            self._prefetcher = Prefetcher(
                broker,
                queue=config.name,
                lease=config.lease,
                depth=config.prefetch,
                monotonic=monotonic,
                logger=self.logger,
            )
        elif config.prefetch:
            raise ConfigError(
                f"WorkerConfig.prefetch needs a broker that can reserve ahead "
                f"(SupportsPrefetch); {type(broker).__name__} cannot"
            )
        self._fatal: WatchdogError | None = None  # see _cannot_arm
        self._settlement = Settlement(self)
        self.tasks_done = 0
        self._last_task_at = monotonic()
        cls = type(self)
        self._overrides_batch = cls.work_batch is not Worker.work_batch
        # Hooks left as the no-op defaults are skipped on the per-task hot path.
        self.handles_success = cls.on_success is not Worker.on_success
        self._pre_work = cls.pre_work is not Worker.pre_work
        self._post_work = cls.post_work is not Worker.post_work

    # -- what users implement ------------------------------------------------------

    def work(self, task: Task) -> Any:
        """Do the task's work. Return a value, or a control value from ``retry()``,
        ``requeue()``, ``stop()`` or ``respawn()``; raising counts as a failure."""
        raise NotImplementedError(f"{type(self).__name__} must implement work(task)")

    def work_batch(self, tasks: Sequence[Task]) -> Sequence[Any]:
        """Optionally do a whole batch at once; return one result per task, in order.

        Each result is a value (success), an exception instance (failure) or a
        control value (``self.retry(task)`` ...). Raising fails the whole batch.
        """
        raise NotImplementedError  # pragma: no cover - replaced by subclasses

    def initialize(self) -> None:
        """Runs once in ``run()`` before the first task (open connections here)."""

    def finalize(self) -> None:
        """Runs once when ``run()`` ends, whatever the reason."""

    def pre_work(self, task: Task) -> None:
        """Runs before each task, in the thread that runs it."""

    def post_work(self, task: Task, outcome: Outcome) -> None:
        """Runs after each task, in the thread that ran it."""

    # -- handlers (exceptions in them are logged and never stop the loop) -----------

    def on_success(self, task: Task, returned_value: Any) -> None:
        """The task's work returned normally."""

    def on_failure(self, task: Task, exception: BaseException) -> Outcome | None:
        """The work raised. Return ``self.retry(task)`` or ``self.requeue(task)`` to
        run it again; return None to drop it."""
        return None

    def on_timeout(self, task: Task) -> Outcome | None:
        """The watchdog stopped the work at its deadline; may return a retry."""
        return None

    def on_retry(self, task: Task, delay: float) -> None:
        """``task`` was scheduled to run again after ``delay`` seconds."""

    def on_max_retries(self, task: Task) -> None:
        """A retry was asked for but max_retries is spent: the task is dead-lettered."""

    def on_requeue(self, task: Task) -> None:
        """``task`` was put back at the tail of its queue."""

    def on_starvation(self, time_with_no_tasks: float) -> None:
        """No task arrived for ``config.starvation.time_with_no_tasks`` seconds."""

    def on_stop(self) -> None:
        """The worker is stopping (asked by a task, a signal or ``request_stop``)."""

    # -- control flow, returned from work ------------------------------------------

    def retry(self, task: Task, *, delay: float | None = None) -> RetryRequested:
        """Ask to run ``task`` again (``return self.retry(task)``), after ``delay``
        seconds or the retry policy's back-off.

        Raises:
            ConfigError: ``delay`` is not a finite number >= 0 (raised here, in
                the task's code, rather than later where the batch is settled).
        """
        if delay is not None and (not finite_number(delay) or delay < 0):
            raise ConfigError(
                f"retry delay must be a finite number >= 0 seconds, got {delay!r}"
            )
        return RetryRequested(None if delay is None else float(delay))

    def requeue(self, task: Task) -> RequeueRequested:
        """Ask to put ``task`` back at the tail of its queue (not a retry)."""
        return RequeueRequested()

    def reject(self, task: Task, reason: str) -> RejectRequested:
        """Refuse an invalid task (``return self.reject(task, "no such user")``): it
        goes to the dead-letter store with ``reason`` and is never retried."""
        return RejectRequested(reason)

    def stop(self) -> StopRequested:
        """The current task is done; stop the worker after it."""
        return StopRequested()

    def respawn(self) -> RespawnRequested:
        """The current task is done; end this process so a fresh one replaces it."""
        return RespawnRequested()

    # -- events ---------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(event)`` on every lifecycle transition (metrics, logs)."""
        self._listeners.append(listener)

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every listener; a failing listener is logged, not fatal."""
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                self.logger.exception("event listener %r failed", listener)

    def call_handler(self, name: str, *args: Any) -> Any:
        """Run handler ``name``; log and swallow its exception so the loop goes on."""
        try:
            return getattr(self, name)(*args)
        except Exception:
            self.logger.exception("handler %s raised; the worker carries on", name)
            return None

    # -- the loop --------------------------------------------------------------------

    def request_stop(
        self,
        reason: StopReason = StopReason.STOPPED,
        *,
        error: WatchdogError | None = None,
    ) -> None:
        """Ask the loop to stop after the running tasks (thread- and signal-safe).

        Tasks of the current batch that have not started are released, not run.
        ``reason`` is what ``run()`` returns (the supervisor asks for ``RECYCLE``
        when the worker is over its soft memory limit). ``error``: the watchdog
        cannot watch tasks, and ``run()`` raises it once stopped (see
        ``_cannot_arm``); the first one given counts.
        """
        if error is not None and self._fatal is None:
            self._fatal = error
        if self._stop_reason is None:
            self._stop_reason = reason
        self._stop_requested = True

    @property
    def stopping(self) -> bool:
        """Whether the loop will stop after the current step."""
        return self._stop_requested

    @property
    def stop_request(self) -> tuple[StopReason, WatchdogError | None] | None:
        """The stop asked for so far, and the watchdog error behind it (None: no
        stop asked). The process executor's children run ``run_one`` on a copy of
        the worker: what the copy was asked (a ``request_stop()`` in ``work``, a
        watchdog that cannot arm there) is passed on to the worker with this."""
        if not self._stop_requested:
            return None
        return self._stop_reason or StopReason.STOPPED, self._fatal

    def run(self) -> StopReason:
        """Consume the queue until stopped; return why the loop ended."""
        keeper = None
        try:
            # ``finalize`` runs even when ``initialize`` raises; the keeper's
            # thread starts after it, so a failing ``initialize`` leaves none.
            self.initialize()
            # A watchdog with helpers to start (the process watchdog's killer)
            # starts them now: one that cannot start fails here, before any task
            # is taken, and the first task does not wait for it.
            start = getattr(self.watchdog, "start", None)
            if callable(start):
                start()
            if self.config.delivery is DeliveryMode.AT_LEAST_ONCE:
                keeper = LeaseKeeper(
                    self.broker,
                    self.config.name,
                    lease=self.config.lease,
                    logger=self.logger,
                )
            self._settlement.keeper = keeper
            # Starvation counts from the loop's start, not from construction
            # (``initialize`` may take long).
            self._last_task_at = self.monotonic()
            while not self._stop_requested:
                if not self.step() and not self.config.wait:
                    # wait=0: a reserve never blocks, so an idle loop would spin
                    # (a core, and on SQLite a write transaction per pass).
                    time.sleep(IDLE_PAUSE)
                if self._budget_spent():
                    self._stop_reason = self._stop_reason or StopReason.MAX_TASKS
                    break
            if self._fatal is not None:
                raise self._fatal
        finally:
            if self._prefetcher is not None:
                self._pending_acks += self._prefetcher.release_all()
            if self._prefetcher is not None and self._prefetcher.unavailable:
                # Unreachable already at this stop: another call would only wait
                # out the broker's retry budget again (see release_all).
                self._abandon_acks()
            else:
                self._flush_acks()
            if keeper is not None:
                keeper.close()
            if self._stop_requested:
                self.call_handler("on_stop")
            self.call_handler("finalize")
        return self._stop_reason or StopReason.STOPPED

    def step(self) -> int:
        """Reserve one batch, run it and settle it; return how many tasks it held.

        The loop's building block, for tests and embedding. Lease renewal (the
        lease keeper's thread) and the release of prefetched batches at a stop
        belong to ``run()``: a task driven by ``step()`` alone that runs longer
        than ``config.lease`` may be handed to another worker meanwhile.
        """
        queue = self.config.name
        try:
            deliveries = self._reserve(queue)
        except BrokerUnavailable as error:
            self._settlement.outage(error)
            return 0
        self._settlement.recovered()
        if not deliveries:
            self._check_starvation()
            return 0
        self._last_task_at = self.monotonic()
        if self._prefetcher is not None:
            if len(deliveries) >= self._asked:
                self._prefetch(len(deliveries))
            if self._pending_acks:
                # No request carried them (a short batch, or no budget left to
                # prefetch): waiting for the next reserve would keep them unacked
                # and unrenewed while this batch runs, long enough to lapse.
                self._send_acks()
        try:
            held, tasks = self._decode_all(queue, deliveries)
            if tasks:
                self._run_and_settle(held, tasks)
                # Idle time starts when the batch is done, not when it came in.
                self._last_task_at = self.monotonic()
        finally:
            self._gc_pause.thaw()  # the batch is settled: see _decode_all
        return len(deliveries)

    def _reserve(self, queue: str) -> list[Delivery]:
        if self._prefetcher is not None:
            try:
                got, self._asked = self._prefetcher.take()
            except BrokerError:
                # Perhaps not acked: keep them for the next reserve (see below).
                self._pending_acks = self._prefetcher.returned_acks + self._pending_acks
                raise
            if got:
                return got
        count = self.config.tasks_per_transaction
        if self.config.max_tasks_per_run:
            count = max(1, min(count, self.config.max_tasks_per_run - self.tasks_done))
        self._asked = count
        at_least_once = self.config.delivery is DeliveryMode.AT_LEAST_ONCE
        acks, self._pending_acks = self._pending_acks, []
        try:
            return self.broker.reserve(
                queue,
                owner=self.owner,
                count=count,
                lease=self.config.lease if at_least_once else None,
                wait=self.config.wait,
                ack=acks,
            )
        except BrokerError:
            # Not acked after all: keep them, so they are acked next time (or are
            # redelivered if this worker dies first, which at-least-once allows).
            self._pending_acks = acks + self._pending_acks
            raise

    def _prefetch(self, in_hand: int) -> None:
        """Top the prefetch up to its depth; the acks settled last ride along.

        Not when the worker is stopping, nor past its task budget (the batch in
        hand and the requests in flight count as done).
        """
        prefetcher = self._prefetcher
        if prefetcher is None or self._stop_requested:
            return
        budget = None
        if self.config.max_tasks_per_run:
            left = self.config.max_tasks_per_run - self.tasks_done - in_hand
            budget = left - prefetcher.tasks_ahead
        acks, self._pending_acks = self._pending_acks, []
        unsent = prefetcher.top_up(
            self.config.tasks_per_transaction, self.owner, acks, budget=budget
        )
        self._pending_acks = unsent + self._pending_acks

    def _decode_all(
        self, queue: str, deliveries: Sequence[Delivery]
    ) -> tuple[list[Delivery], list[Task]]:
        """The decoded tasks and, at the same positions, their deliveries.

        Two parallel lists rather than one list of pairs: a batch keeps every one
        of its objects alive until it is settled, and a thousand pair tuples more
        would be more for the garbage collector to scan. The collector is paused
        meanwhile, and a large batch is then frozen until ``step`` has settled it
        (see ``GcPause``).
        """
        if len(deliveries) > 1:
            self._gc_pause.start()
        try:
            return self._decode_each(queue, deliveries)
        finally:
            if len(deliveries) >= FREEZE_AT:
                self._gc_pause.freeze()
            self._gc_pause.end()  # the tasks' own code runs with it, always

    def _decode_each(
        self, queue: str, deliveries: Sequence[Delivery]
    ) -> tuple[list[Delivery], list[Task]]:
        limit = self.max_payload_bytes
        if limit is not None:
            # Dead-lettered undecoded: decoding them is what the limit spares. A
            # retry or requeue of a task the producer accepted at the limit comes
            # back a few bytes longer (its attempt, an eta): the slack lets it run.
            fitting = []
            for delivery in deliveries:
                if len(delivery.payload) > limit + REPUSH_SLACK:
                    self._settlement.poison(queue, delivery, oversized(delivery, limit))
                else:
                    fitting.append(delivery)
            deliveries = fitting
        most = self.config.max_deliveries
        if any(delivery.deliveries > most for delivery in deliveries):
            # The crash cap, before decoding (see reject_crash_loops).
            deliveries = self._settlement.reject_crash_loops(queue, deliveries)
        # The whole batch in one call: the codec's per-call work is paid once.
        decoded = decode_all(self.codec, [delivery.payload for delivery in deliveries])
        held: list[Delivery] = []
        tasks: list[Task] = []
        for delivery, task in zip(deliveries, decoded, strict=True):
            if isinstance(task, Task):
                held.append(delivery)
                tasks.append(task)
            else:
                self._settlement.poison(queue, delivery, task)
        return held, tasks

    def _run_and_settle(self, held: list[Delivery], tasks: list[Task]) -> None:
        # The leases are renewed until the batch is settled, not just run: the
        # handlers, retry pushes and dead letters of a big batch take time too,
        # and a lease lapsing meanwhile would hand its task to a second worker.
        # So are those of finished tasks whose acks ride on a prefetch request
        # not collected yet: if that request is lost (its connection had died),
        # they are acked only once it is collected, after this batch. And those
        # whose ack could not be sent (see step): they wait for the next one.
        prefetcher = self._prefetcher
        unconfirmed = prefetcher.acks_in_flight if prefetcher is not None else ()
        unsent = self._pending_acks
        if unconfirmed or unsent:
            self._settlement.hold([*held, *unconfirmed, *unsent])
        else:
            self._settlement.hold(held)
        try:
            self._run_then_settle(held, tasks)
        finally:
            self._settlement.unhold()

    def _run_then_settle(self, held: list[Delivery], tasks: list[Task]) -> None:
        if self._overrides_batch:
            outcomes = self._run_batch(tasks)
        else:
            outcomes = self.executor.run(self.run_one, tasks)
        if self._stop_requested and self._prefetcher is not None:
            # Before this batch's unstarted tasks are released (settle, below): a
            # release puts tasks at the head of the queue, so the batch taken
            # first must go back last to stay first in line.
            self._pending_acks += self._prefetcher.release_all()
        done = len(outcomes)
        for outcome in outcomes:
            if type(outcome) is not Returned:
                # A job that ran in another process asked *its* copy of the worker
                # to stop; honour that here too.
                self._honour_stop(outcome)
                if type(outcome) is NotStarted:
                    done -= 1
        self.tasks_done += done
        self._pending_acks.extend(self._settlement.settle(held, tasks, outcomes))

    def run_one(self, task: Task) -> Outcome:
        """Run ``work`` for one task under the watchdog; never raises.

        This is the job the executor runs, in whatever thread it chooses.
        """
        if self._stop_requested:
            return NotStarted()
        timeout = task.timeout or self.config.timeouts.timeout
        outcome: Outcome
        if timeout:
            outcome = self._guarded(timeout, lambda: self._work_one(task))
        else:  # no deadline to enforce: the short way
            try:
                outcome = self._work_one(task)
            except TaskTimedOut:  # raised by the work itself, or a stray one
                outcome = Expired()
            except Exception as error:
                outcome = Raised(error)
        if type(outcome) is not Returned:
            if type(outcome) is NotStarted:
                return outcome  # the watchdog could not arm: see _cannot_arm
            self._honour_stop(outcome)
        if self._post_work:
            try:
                self.post_work(task, outcome)
            except Exception:
                self.logger.exception("post_work raised; the worker carries on")
        return outcome

    def _work_one(self, task: Task) -> Outcome:
        if self._pre_work:
            self.pre_work(task)
        value = self.work(task)
        if value is None:
            return RETURNED_NONE  # most work returns nothing: share one outcome
        return value if isinstance(value, CONTROL) else Returned(value)

    def _guarded(self, timeout: float, call: Callable[[], _T]) -> _T | Outcome:
        """``call()`` under the watchdog; a timeout or an exception is an outcome."""
        handle = None
        in_time = True
        try:
            try:
                if timeout:
                    try:
                        handle = self.watchdog.arm(
                            timeout, grace=self.config.timeouts.grace_period
                        )
                    except WatchdogError as error:
                        return self._cannot_arm(error)
                result = call()
            finally:
                in_time = handle is None or self.watchdog.disarm(handle)
            if in_time:
                return result
            # The deadline fired, and the task swallowed its TaskTimedOut: it ran
            # over all the same (the asyncio executor reports that case so too).
            # A stop or respawn it returned is about the worker: still honoured
            # (``work`` returns one; ``work_batch`` a list with one per task).
            for returned in result if isinstance(result, list) else (result,):
                if isinstance(returned, StopRequested | RespawnRequested):
                    self._honour_stop(returned)
            return Expired()
        except TaskTimedOut:
            if handle is not None:
                # The timeout may have surfaced inside disarm, before it took
                # effect; disarm is idempotent, so make sure the deadline is gone.
                self.watchdog.disarm(handle)
            return Expired()
        except Exception as error:
            # Raised after the deadline fired (the task's cleanup failed while it
            # was being stopped): the watchdog stopped it, so it timed out.
            return Raised(error) if in_time else Expired()

    def _cannot_arm(self, error: WatchdogError) -> Outcome:
        """The watchdog cannot watch a task (say, its killer process cannot start).

        Run unwatched, the task would escape its time limit; failed, it would be
        lost for a fault of the worker's, not its own. So it is released, and the
        worker stops: ``run()`` then raises ``error`` (a supervised child exits as
        crashed and is respawned after a back-off).
        """
        if self._fatal is None:
            self.logger.error(
                "the watchdog cannot watch tasks (%s): releasing them and stopping",
                error,
            )
        self.request_stop(StopReason.STOPPED, error=error)
        return NotStarted()

    def _run_batch(self, tasks: list[Task]) -> list[Outcome]:
        """``work_batch`` for the batch, with what ``run_one`` gives each task.

        A stop requested before the batch starts releases it whole, and one
        requested by a ``pre_work`` releases the tasks not prepared yet (as the
        tasks after the one that asked are released under ``work``). ``pre_work``
        runs for each task first, under the watchdog with that task's time limit
        (one that raises or runs out fails that task, which the batch then leaves
        out); ``post_work`` for each task that ran, after; the batch runs under one
        arm of the watchdog, with the smallest time limit among its tasks (their
        own ``timeout``, else the config's).
        """
        if self._stop_requested:
            return [NotStarted() for _ in tasks]
        outcomes: list[Outcome | None] = [None] * len(tasks)
        runnable, places = tasks, list(range(len(tasks)))
        if self._pre_work:
            runnable, places = [], []
            default = self.config.timeouts.timeout
            for place, task in enumerate(tasks):
                if self._stop_requested:
                    break  # the rest stay None: not started, released
                failed = self._guarded(
                    task.timeout or default, functools.partial(self.pre_work, task)
                )
                if isinstance(failed, Outcome):
                    outcomes[place] = failed
                else:
                    runnable.append(task)
                    places.append(place)
        if runnable:
            for place, outcome in zip(
                places, self._run_work_batch(runnable), strict=True
            ):
                outcomes[place] = outcome
        done = [NotStarted() if outcome is None else outcome for outcome in outcomes]
        if self._post_work:
            for task, outcome in zip(tasks, done, strict=True):
                if type(outcome) is NotStarted:
                    continue
                try:
                    self.post_work(task, outcome)
                except Exception:
                    self.logger.exception("post_work raised; the worker carries on")
        return done

    def _run_work_batch(self, tasks: list[Task]) -> list[Outcome]:
        default = self.config.timeouts.timeout
        limits = [limit for limit in (t.timeout or default for t in tasks) if limit]
        results = self._guarded(
            min(limits, default=0.0), lambda: list(self.work_batch(tasks))
        )
        if isinstance(results, Outcome):
            return [results for _ in tasks]
        if len(results) != len(tasks):
            mismatch = ValueError(
                f"work_batch returned {len(results)} results for {len(tasks)} tasks"
            )
            return [Raised(mismatch) for _ in tasks]
        return [self._as_outcome(result) for result in results]

    def _as_outcome(self, result: Any) -> Outcome:
        if isinstance(result, CONTROL):
            self._honour_stop(result)
            return result
        if isinstance(result, BaseException):
            return Raised(result)
        return Returned(result)

    def _honour_stop(self, outcome: Outcome) -> None:
        if isinstance(outcome, RespawnRequested):
            self.request_stop(StopReason.RESPAWN)
        elif isinstance(outcome, StopRequested):
            self.request_stop(StopReason.STOPPED)

    def _check_starvation(self) -> None:
        starvation = self.config.starvation
        if starvation is None:
            return
        idle = self.monotonic() - self._last_task_at
        if idle >= starvation.time_with_no_tasks:
            self._last_task_at = self.monotonic()
            self.call_handler("on_starvation", idle)

    def _budget_spent(self) -> bool:
        limit = self.config.max_tasks_per_run
        return bool(limit) and self.tasks_done >= limit

    def _send_acks(self) -> None:
        """Ack the settled tasks now; on failure keep them for the next reserve."""
        acks, self._pending_acks = self._pending_acks, []
        try:
            self.broker.ack(self.config.name, acks)
        except BrokerError:
            self._pending_acks = acks + self._pending_acks

    def _abandon_acks(self) -> None:
        """Drop the acks not sent, saying so: their tasks are redelivered."""
        acks, self._pending_acks = self._pending_acks, []
        if acks:
            self.logger.warning(
                "not acking %d settled tasks, the broker is unreachable (they "
                "will be redelivered)",
                len(acks),
            )

    def _flush_acks(self) -> None:
        acks, self._pending_acks = self._pending_acks, []
        if not acks:
            return
        try:
            self.broker.ack(self.config.name, acks)
        except BrokerError as error:
            self.logger.warning(
                "could not ack %d settled tasks (they will be redelivered): %s",
                len(acks),
                error,
            )
