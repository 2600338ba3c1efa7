"""Batches a worker reserves ahead of the one it runs (``WorkerConfig.prefetch``).

While the worker decodes and runs batch N, the broker is already leasing batch
N+1 (and N+2 ... up to the prefetch depth), so the broker's work on a reserve
overlaps the worker's instead of adding to it. Three rules keep that safe:

- a batch is collected in the order it was asked for, and the batches ahead do
  not have their leases renewed (the running batch does), so a prefetched batch
  that waited past half its lease is released unrun (its lease might lapse
  before renewal reaches it);
- when the worker stops, every batch still ahead is released unrun (release is
  not a delivery, and puts the tasks back at the head of the queue);
- acks ride on the next request, as they do on a plain reserve; if collecting a
  request fails, its acks go back to the worker, to be sent again. Until a request
  is collected, the worker keeps renewing the leases of the tasks its acks
  settle (``acks_in_flight``): a request sent on a connection that had died
  meanwhile fails only when it is collected, after the running batch, and the
  finished tasks must not lapse to another worker before their acks are resent.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from sergeant.errors import BrokerError, BrokerUnavailable
from sergeant.protocols import Broker, Delivery, PendingReserve, SupportsPrefetch


class PrefetchingBroker(Broker, SupportsPrefetch, Protocol):
    """A broker that can reserve ahead."""


class _Ahead:
    """One request in flight: how to collect it and what it carried."""

    __slots__ = ("acks", "begun_at", "collect", "count")

    def __init__(
        self,
        collect: PendingReserve,
        acks: list[Delivery],
        begun_at: float,
        count: int,
    ) -> None:
        self.collect = collect
        self.acks = acks
        self.begun_at = begun_at
        self.count = count


class Prefetcher:
    """Keeps up to ``depth`` reserves in flight for one worker.

    Args:
        broker: the worker's broker (it must support ``SupportsPrefetch``).
        queue, lease: what every reserve asks for.
        depth: how many batches to keep reserved ahead.
        monotonic: the worker's monotonic clock (staleness of a waiting batch).
    """

    def __init__(
        self,
        broker: PrefetchingBroker,
        *,
        queue: str,
        lease: float,
        depth: int,
        monotonic: Callable[[], float],
        logger: logging.Logger,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._lease = lease
        self._depth = depth
        self._monotonic = monotonic
        self._logger = logger
        self._ahead: deque[_Ahead] = deque()
        # Set when ``release_all`` finds the broker unreachable (see there).
        self.unavailable = False
        self.returned_acks: list[Delivery] = []

    @property
    def tasks_ahead(self) -> int:
        """How many tasks the requests in flight may bring, at most."""
        return sum(ahead.count for ahead in self._ahead)

    @property
    def acks_in_flight(self) -> list[Delivery]:
        """The acks carried by requests not collected yet: not known applied."""
        return [delivery for ahead in self._ahead for delivery in ahead.acks]

    def top_up(
        self,
        count: int,
        owner: str,
        acks: list[Delivery],
        *,
        budget: int | None = None,
    ) -> list[Delivery]:
        """Send requests for ``count`` tasks each, leased to ``owner``, until
        ``depth`` are in flight; all of them together ask for ``budget`` tasks at
        most (None: no limit), so a task budget is never overrun.

        ``acks`` ride on the first request sent. Returns the acks not sent (no
        request was, or sending failed): the worker keeps them.
        """
        while len(self._ahead) < self._depth:
            asked = count if budget is None else min(count, budget)
            if asked < 1:
                break
            try:
                collect = self._broker.begin_reserve(
                    self._queue,
                    owner=owner,
                    count=asked,
                    lease=self._lease,
                    ack=acks,
                )
            except BrokerError:
                return acks  # the next reserve asks again, and meets the outage
            self._ahead.append(_Ahead(collect, acks, self._monotonic(), asked))
            if budget is not None:
                budget -= asked
            acks = []
        return acks

    def take(self) -> tuple[list[Delivery], int]:
        """The oldest prefetched batch holding tasks, and how many it asked for.

        Requests that come back empty are skipped; ``([], 0)`` when none is
        left. A batch that waited past half its lease is released unrun and
        skipped too.

        Raises:
            BrokerError: collecting failed; ``returned_acks`` holds the acks that
                request carried, which may not have been applied.
        """
        stale: list[Delivery] = []
        try:
            while self._ahead:
                ahead = self._ahead.popleft()
                try:
                    got = ahead.collect()
                except BrokerError:
                    self.returned_acks = ahead.acks
                    raise
                if not got:
                    continue
                if self._monotonic() - ahead.begun_at > self._lease / 2:
                    stale += got
                    continue
                return got, ahead.count
            return [], 0
        finally:
            # In one release, so they go back in the order they were taken.
            self._release(stale)

    def release_all(self) -> list[Delivery]:
        """Collect every request in flight and release its tasks unrun.

        Returns the acks of requests that could not be collected (to flush).

        The worker calls this when it stops, within a grace period (the
        supervisor's ``stop_grace``). Once the broker proves unreachable
        (``BrokerUnavailable``: its retry budget is spent), ``unavailable`` turns
        True and nothing more is asked of it: the requests left are not
        collected and nothing is released, since each call would wait out the
        budget again. Their tasks come back when their leases lapse.
        """
        unsent: list[Delivery] = []
        unrun: list[Delivery] = []
        while self._ahead:
            ahead = self._ahead.popleft()
            if self.unavailable:
                unsent += ahead.acks
                continue
            try:
                unrun += ahead.collect()
            except BrokerError as error:
                unsent += ahead.acks
                self.unavailable = isinstance(error, BrokerUnavailable)
                self._logger.warning(
                    "could not collect a prefetched batch (its leases lapse and "
                    "its tasks are redelivered): %s",
                    error,
                )
        if self.unavailable and unrun:
            self._logger.warning(
                "could not release %d prefetched tasks, the broker is unreachable "
                "(they are redelivered when their leases lapse)",
                len(unrun),
            )
        elif not self.unavailable:
            # One release for all, so they go back to the head of the queue in
            # the order taken (releasing batch by batch would reverse them).
            self.unavailable = not self._release(unrun)
        return unsent

    def _release(self, deliveries: list[Delivery]) -> bool:
        """Release ``deliveries``; False if the broker proved unreachable."""
        if not deliveries:
            return True
        try:
            self._broker.release(self._queue, deliveries)
        except BrokerError as error:
            self._logger.warning(
                "could not release %d prefetched tasks (they are redelivered when "
                "their leases lapse): %s",
                len(deliveries),
                error,
            )
            return not isinstance(error, BrokerUnavailable)
        return True
