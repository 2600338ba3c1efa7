"""The Producer: pushes tasks to a queue and inspects it, with no worker loop.

A producer is what an application process embeds to enqueue work; ``Worker`` extends
it so that a task can push follow-up tasks (``self.push_task``) as sergeant users
expect. It composes a broker and a codec, nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sergeant import clock as _clock
from sergeant._gc_pause import FREEZE_AT, GcPause
from sergeant._numbers import finite_number
from sergeant.config import MAX_SECONDS
from sergeant.errors import (
    BrokerError,
    ConfigError,
    DecodeError,
    PayloadTooLarge,
)
from sergeant.protocols import (
    Broker,
    Codec,
    Delivery,
    Lock,
    QueueLengths,
    SupportsLocks,
    encode_all,
)
from sergeant.task import (
    Priority,
    Task,
    assemble_new_tasks,
    assemble_task,
    new_task_id,
)


class Producer:
    """Pushes tasks to ``queue`` (the default for every method) through ``broker``.

    Args:
        broker: where tasks are stored.
        codec: how tasks are encoded; workers must use a compatible codec.
        queue: the default queue name.
        clock: wall clock, for etas and ``created_at``.
        max_payload_bytes: refuse to push an encoded task larger than this.
    """

    def __init__(
        self,
        *,
        broker: Broker,
        codec: Codec,
        queue: str,
        clock: _clock.Clock = _clock.wall,
        logger: logging.Logger | None = None,
        max_payload_bytes: int | None = None,
    ) -> None:
        if not queue:
            raise ConfigError("Producer.queue must be a non-empty string")
        self.broker = broker
        self.codec = codec
        self.queue = queue
        self.clock = clock
        if max_payload_bytes is not None and (
            isinstance(max_payload_bytes, bool)
            or not isinstance(max_payload_bytes, int)
            or max_payload_bytes < 1
        ):
            raise ConfigError(
                f"Producer.max_payload_bytes must be an int >= 1 or None, got "
                f"{max_payload_bytes!r}"
            )
        self.max_payload_bytes = max_payload_bytes
        self.owner = f"{queue}:{new_task_id()}"
        # Until a push finds objects frozen by someone else (see GcPause).
        self._may_freeze = True
        self.logger = logger or logging.getLogger(f"sergeant.producer.{queue}")

    def push_task(
        self,
        kwargs: dict[str, Any],
        *,
        queue: str | None = None,
        priority: Priority = Priority.NORMAL,
        eta: float | None = None,
        delay: float | None = None,
        timeout: float | None = None,
    ) -> Task:
        """Push one task; return it (its ``id`` lets callers deduplicate).

        ``push_tasks`` of one, without its batch machinery: a lone push is a
        round trip plus a few microseconds of this code, which show when tasks
        are pushed one by one (``python -m benchmark.one_at_a_time``).
        """
        queue, priority, eta, timeout, now = self._options(
            queue, priority, eta, delay, timeout
        )
        id_ = new_task_id()
        task = assemble_task(kwargs, queue, id_, id_, now, 0, priority, eta, timeout)
        payload = self.codec.encode(task)
        if self.max_payload_bytes is not None:
            _refuse_oversized([task], [payload], self.max_payload_bytes)
        self.broker.push(queue, [payload], priority=priority, eta=eta)
        return task

    def push_tasks(
        self,
        kwargs_list: Sequence[dict[str, Any]],
        *,
        queue: str | None = None,
        priority: Priority = Priority.NORMAL,
        eta: float | None = None,
        delay: float | None = None,
        timeout: float | None = None,
    ) -> list[Task]:
        """Push many tasks in one broker round trip; return them.

        ``delay`` (seconds from now) and ``eta`` (wall-clock seconds) both postpone
        the tasks; ``timeout`` overrides the worker's for these tasks.
        """
        queue, priority, eta, timeout, now = self._options(
            queue, priority, eta, delay, timeout
        )
        # A large batch of tasks lives until it is pushed (and after, if the
        # caller keeps the list): it is built with the collector paused, and kept
        # out of its scans until pushed (see GcPause).
        pause = None
        if len(kwargs_list) >= FREEZE_AT:
            pause = GcPause(may_freeze=self._may_freeze)
            pause.start()
        try:
            ids = new_task_id.many(len(kwargs_list))
            tasks = assemble_new_tasks(
                kwargs_list, ids, queue, now, priority, eta, timeout
            )
            payloads = encode_all(self.codec, tasks)
            if pause is not None:
                pause.freeze()
                pause.end()
            if self.max_payload_bytes is not None:
                _refuse_oversized(tasks, payloads, self.max_payload_bytes)
            self.broker.push(queue, payloads, priority=priority, eta=eta)
        finally:
            if pause is not None:
                pause.end()
                pause.thaw()
                self._may_freeze = pause.may_freeze
        return tasks

    def _options(
        self,
        queue: str | None,
        priority: Priority,
        eta: float | None,
        delay: float | None,
        timeout: float | None,
    ) -> tuple[str, Priority, float | None, float | None, float]:
        """A push's checked options: (queue, priority, eta, timeout, now).

        Raises ConfigError naming the bad one. Plain floats come out: a numpy or
        other float subclass would be pickled as such, and decoders take exactly
        int or float (the task would be dead-lettered).
        """
        if type(priority) is not Priority:
            try:
                priority = Priority(priority)
            except ValueError:
                raise ConfigError(
                    f"priority must be a Priority, got {priority!r}"
                ) from None
        now = self.clock()
        if timeout is not None or eta is not None or delay is not None:
            for name, value in (("timeout", timeout), ("eta", eta), ("delay", delay)):
                if value is not None and not finite_number(value):
                    # A task pushed with it would only be dead-lettered by the worker.
                    raise ConfigError(f"{name} must be a finite number, got {value!r}")
            if timeout is not None:
                if not 0 < timeout <= MAX_SECONDS:
                    raise ConfigError(
                        f"timeout must be > 0 seconds and at most ten years, got "
                        f"{timeout!r}"
                    )
                timeout = float(timeout)
            if delay is not None:
                eta = now + float(delay)
            elif eta is not None:
                eta = float(eta)
        return queue or self.queue, priority, eta, timeout, now

    def get_next_tasks(self, count: int = 1, *, queue: str | None = None) -> list[Task]:
        """Pop up to ``count`` ready tasks without running them.

        At-most-once: they leave the broker now. Undecodable ones go to the
        dead-letter store with the reason.
        """
        queue = queue or self.queue
        deliveries = self.broker.reserve(
            queue, owner=self.owner, count=count, lease=None
        )
        tasks = []
        for delivery in deliveries:
            try:
                tasks.append(self.codec.decode(delivery.payload))
            except DecodeError as error:
                self.broker.dead_letter(
                    queue, delivery, f"undecodable payload: {error}"
                )
        return tasks

    def number_of_enqueued_tasks(self, queue: str | None = None) -> int:
        """Tasks waiting in the queue: ready plus delayed."""
        lengths = self.queue_lengths(queue)
        return lengths.ready + lengths.delayed

    def queue_lengths(self, queue: str | None = None) -> QueueLengths:
        """Tasks of the queue per place: ready, delayed, in flight, dead."""
        return self.broker.lengths(queue or self.queue)

    def purge_tasks(self, queue: str | None = None) -> int:
        """Drop the queue's pending tasks (not its dead letters); return how many."""
        return self.broker.purge(queue or self.queue)

    def lock(self, name: str) -> Lock:
        """A distributed lock named ``name`` on this producer's broker."""
        if not isinstance(self.broker, SupportsLocks):
            raise BrokerError(f"{type(self.broker).__name__} does not provide locks")
        return self.broker.lock(name)


def _refuse_oversized(tasks: list[Task], payloads: list[bytes], limit: int) -> None:
    """Raise PayloadTooLarge for the first payload over ``limit`` bytes."""
    for task, payload in zip(tasks, payloads, strict=True):
        if len(payload) > limit:
            raise PayloadTooLarge(
                f"task {task.id} encodes to {len(payload)} bytes, over "
                f"max_payload_bytes ({limit}); nothing was pushed"
            )


def oversized(delivery: Delivery, limit: int) -> DecodeError:
    """The error recorded for a stored payload over ``max_payload_bytes``."""
    return DecodeError(
        f"payload of {len(delivery.payload)} bytes exceeds max_payload_bytes ({limit})"
    )
