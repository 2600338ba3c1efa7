"""Settlement: turns what happened to each task into lifecycle events and broker work.

The worker loop hands over a batch of ``(delivery, task)`` pairs and their outcomes.
For every task this module walks the lifecycle table (``lifecycle.advance``), publishes
each event, runs the matching handler, and performs what the state reached requires:
SUCCEEDED and DROPPED are acked (the acks are returned, to ride on the next reserve),
RETRYING and REQUEUED are pushed again *before* the old copy is acked, DEAD goes to the
dead-letter store, and a task the worker did not start goes back unchanged.
Any broker action that fails leaves the task unacked: it comes back when its lease
lapses, so a broker hiccup costs a duplicate, never a lost task (at least once; a
task popped at most once is gone, and the log says so).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sergeant import lifecycle as lc
from sergeant._lease_keeper import LeaseKeeper
from sergeant.config import DeliveryMode
from sergeant.errors import BrokerError, DecodeError, EncodeError
from sergeant.lifecycle import TaskState, next_state
from sergeant.outcome import (
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
from sergeant.protocols import Delivery, decode_all
from sergeant.task import Task

if TYPE_CHECKING:  # pragma: no cover
    from sergeant.worker import Worker


# settle() skips the per-task walk of a success when nobody listens: check once, at
# import, that the path it skips (QUEUED -> ... -> SUCCEEDED) is legal in the table.
_walked = TaskState.QUEUED
for _kind in (lc.Delivered, lc.Started, lc.Succeeded):
    _walked = next_state(_walked, _kind)  # raises IllegalTransition if not
if _walked is not TaskState.SUCCEEDED:  # pragma: no cover - a table edit broke it
    raise ImportError(f"a successful task ends in {_walked.name}, not SUCCEEDED")


class Settlement:
    """The worker's settling half; it holds no state of its own beyond back-off."""

    backoff_initial = 0.05
    backoff_max = 5.0

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.keeper: LeaseKeeper | None = None
        self._backoff = 0.0

    # -- leases and outages ------------------------------------------------------

    def hold(self, deliveries: Sequence[Delivery]) -> None:
        """Keep the running batch's leases alive until ``unhold``."""
        if self.keeper is not None:
            self.keeper.hold(deliveries)

    def unhold(self) -> None:
        """The batch has run; stop renewing its leases."""
        if self.keeper is not None:
            self.keeper.drop()

    def outage(self, error: BrokerError) -> None:
        """The broker is unreachable: log once per outage, back off, then return."""
        if not self._backoff:
            self.worker.logger.warning("broker unavailable, retrying: %s", error)
            self._backoff = self.backoff_initial
        else:
            self._backoff = min(self._backoff * 2, self.backoff_max)
        delay = self._backoff * (1.0 + self.worker.rng.uniform(0.0, 0.5))
        self._pause(delay)

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` in short slices, so that a stop request cuts it short."""
        end = time.monotonic() + seconds
        while not self.worker.stopping:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def recovered(self) -> None:
        """A broker call succeeded: end the outage, if there was one."""
        if self._backoff:
            self.worker.logger.warning("broker reachable again")
            self._backoff = 0.0

    # -- tasks that never run ------------------------------------------------------

    def poison(self, queue: str, delivery: Delivery, error: DecodeError) -> None:
        """An undecodable or forged payload: dead-letter it with the reason.

        There is no Task to publish a lifecycle event for, so it is logged instead:
        one WARNING per payload (rare, and worth an operator's eye: a producer with
        the wrong codec or key, or someone writing into the queue). The payload
        itself is never logged; it is kept byte for byte in the dead letter.
        """
        reason = f"undecodable payload: {error}"
        self.worker.logger.warning(
            "dead-lettered a payload of %d bytes from queue %s: %s",
            len(delivery.payload),
            queue,
            reason,
        )
        self._dead_letter(queue, delivery, reason)

    def reject_crash_loops(
        self, queue: str, deliveries: Sequence[Delivery]
    ) -> list[Delivery]:
        """Dead-letter the deliveries past ``max_deliveries`` (their workers died
        each time); return the others.

        Each is dead-lettered *before* it is decoded: decoding may be what kills
        the worker (a payload whose unpickling exits), and then the cap would
        never apply. Those that decode then get their ``Delivered`` and
        ``Rejected`` events; an exit raised by decoding one is dropped, so the
        rest of the batch runs.
        """
        limit = self.worker.config.max_deliveries
        kept: list[Delivery] = []
        for delivery in deliveries:
            if delivery.deliveries <= limit:
                kept.append(delivery)
                continue
            reason = (
                f"delivered {delivery.deliveries} times without being settled: its "
                "worker died each time (killed, out of memory, crashed or hard "
                "timeout)"
            )
            # The queue it was leased from, whatever queue its record names.
            self._dead_letter(self.worker.config.name, delivery, reason)
            try:
                (task,) = decode_all(self.worker.codec, [delivery.payload])
            except SystemExit:  # decoding it may be what killed those workers
                continue
            if isinstance(task, Task):
                state = self._step(TaskState.QUEUED, lc.Delivered, task)
                self._step(state, lc.Rejected, task, reason)
        return kept

    # -- the batch -----------------------------------------------------------------

    def settle(
        self,
        held: Sequence[Delivery],
        tasks: Sequence[Task],
        outcomes: Sequence[Outcome],
    ) -> list[Delivery]:
        """Settle every task of a batch; return the deliveries to ack.

        ``held[i]`` is the delivery of ``tasks[i]``, ``outcomes[i]`` how it ran.
        """
        worker = self.worker
        queue = worker.config.name
        acks: list[Delivery] = []
        releases: list[tuple[Delivery, Task]] = []
        step = self._step
        on_success = worker.call_handler if worker.handles_success else None
        listened = bool(worker._listeners)
        queued, delivered, started, succeeded = (
            TaskState.QUEUED, lc.Delivered, lc.Started, lc.Succeeded
        )  # fmt: skip
        for delivery, task, outcome in zip(held, tasks, outcomes, strict=True):
            if type(outcome) is Returned:  # the common case, kept short
                # With nobody listening there is nothing to publish, and the path
                # is fixed (checked against the table at import, above).
                if listened:
                    state = step(queued, delivered, task)
                    state = step(state, started, task)
                    step(state, succeeded, task, outcome.value)
                if on_success is not None:
                    on_success("on_success", task, outcome.value)
                acks.append(delivery)
                continue
            state = step(queued, delivered, task)
            if isinstance(outcome, NotStarted):
                step(state, lc.Released, task)
                releases.append((delivery, task))
                continue
            state = step(state, lc.Started, task)
            if self._settle_one(queue, delivery, task, outcome, state):
                acks.append(delivery)
        if releases:
            self._release(queue, releases)
        if worker.config.delivery is DeliveryMode.AT_MOST_ONCE:
            return []
        return acks

    def _settle_one(
        self,
        queue: str,
        delivery: Delivery,
        task: Task,
        outcome: Outcome,
        state: TaskState,
    ) -> bool:
        """Settle one task that ran; True when its delivery should be acked."""
        worker = self.worker
        decision: Any = outcome
        if isinstance(outcome, Raised):
            state = self._step(state, lc.Failed, task, outcome.exception)
            decision = worker.call_handler("on_failure", task, outcome.exception)
        elif isinstance(outcome, Expired):
            state = self._step(state, lc.TimedOut, task)
            decision = worker.call_handler("on_timeout", task)
        elif not isinstance(
            outcome, RetryRequested | RequeueRequested | RejectRequested
        ):
            value = getattr(outcome, "value", None)
            self._step(state, lc.Succeeded, task, value)
            worker.call_handler("on_success", task, value)
            return True
        if isinstance(decision, RetryRequested):
            return self._retry(queue, delivery, task, decision, state)
        if isinstance(decision, RequeueRequested):
            return self._push_again(queue, task, task.requeued(), state, lc.Requeued)
        if isinstance(decision, RejectRequested):
            reason = f"rejected: {decision.reason}"
            self._step(state, lc.Rejected, task, reason)
            self._dead_letter(queue, delivery, reason)
            return False
        if isinstance(decision, StopRequested | RespawnRequested):
            # ``return self.stop()`` from on_failure / on_timeout: the task is
            # done with (dropped), and the worker stops after this batch.
            worker._honour_stop(decision)
        self._step(state, lc.Dropped, task)
        return True

    def _retry(
        self,
        queue: str,
        delivery: Delivery,
        task: Task,
        request: RetryRequested,
        state: TaskState,
    ) -> bool:
        worker = self.worker
        max_retries = worker.config.max_retries
        if task.attempt >= max_retries:
            reason = f"max retries ({max_retries}) exhausted"
            self._step(state, lc.RetriesExhausted, task, reason)
            self._dead_letter(queue, delivery, reason)
            worker.call_handler("on_max_retries", task)
            return False  # dead_letter removed it already
        delay = request.delay
        if delay is None:
            delay = worker.config.retry.delay(task.attempt, worker.rng)
        again = task.next_attempt(eta=worker.clock() + delay if delay > 0 else None)
        pushed = self._push_again(queue, task, again, state, lc.RetryScheduled, delay)
        if not pushed:
            return False
        worker.call_handler("on_retry", task, delay)
        return True

    def _push_again(
        self,
        queue: str,
        task: Task,
        again: Task,
        state: TaskState,
        kind: type[lc.Event],
        *details: Any,
    ) -> bool:
        """Push ``again`` (the retried or requeued ``task``), then take the step."""
        worker = self.worker
        try:
            payload = worker.codec.encode(again)
            worker.broker.push(
                again.queue or queue, [payload], priority=again.priority, eta=again.eta
            )
        except (BrokerError, EncodeError) as error:
            worker.logger.warning(
                "could not push task %s again (%s): %s",
                again.id,
                self._what_becomes_of_it(),
                error,
            )
            return False
        self._step(state, kind, task, *details)
        if kind is lc.Requeued:
            worker.call_handler("on_requeue", again)
        return True

    # -- helpers -------------------------------------------------------------------

    def _step(
        self, state: TaskState, kind: type[lc.Event], task: Task, *details: Any
    ) -> TaskState:
        """Advance ``task`` by one event of type ``kind`` and publish the event.

        The event object is built only when someone listens: with no listener the
        transition still goes through the table, without an allocation per step.
        """
        state = next_state(state, kind)
        if self.worker._listeners:
            self.worker.publish(kind(task, *details))
        return state

    def _dead_letter(self, queue: str, delivery: Delivery, reason: str) -> None:
        try:
            self.worker.broker.dead_letter(queue, delivery, reason)
        except BrokerError as error:
            self.worker.logger.warning(
                "could not dead-letter a task (%s): %s",
                self._what_becomes_of_it(),
                error,
            )

    def _what_becomes_of_it(self) -> str:
        """What a failed re-push or dead letter leaves of a task, for the log."""
        if self.worker.config.delivery is DeliveryMode.AT_LEAST_ONCE:
            return "it stays leased and comes back when its lease lapses"
        return "it was popped at most once: it is lost"

    def _release(self, queue: str, releases: list[tuple[Delivery, Task]]) -> None:
        worker = self.worker
        try:
            if worker.config.delivery is DeliveryMode.AT_LEAST_ONCE:
                worker.broker.release(queue, [delivery for delivery, _ in releases])
                return
            # Popped tasks have no lease to give back: push them again, as they were.
            for delivery, task in releases:
                worker.broker.push(
                    queue, [delivery.payload], priority=task.priority, eta=task.eta
                )
        except BrokerError as error:
            worker.logger.error(
                "could not give back %d unstarted tasks: %s", len(releases), error
            )
