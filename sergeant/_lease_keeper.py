"""Renews the leases of the batch a worker is running, from a background thread.

A lease only has to outlive the *worker*, not the task: while the worker is alive it
renews every lease it holds each ``lease / 3`` seconds, so a slow task is never handed
to a second worker, and a dead worker's tasks come back within one lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from sergeant.errors import BrokerError
from sergeant.protocols.broker import Broker, Delivery


class LeaseKeeper:
    """Holds the deliveries being worked on and extends their leases periodically."""

    def __init__(
        self, broker: Broker, queue: str, *, lease: float, logger: logging.Logger
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._lease = lease
        self._logger = logger
        self._held: Sequence[Delivery] = ()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"sergeant-lease-keeper-{queue}", daemon=True
        )
        self._thread.start()

    def hold(self, deliveries: Sequence[Delivery]) -> None:
        """Renew these deliveries' leases until ``drop`` (replaces the held batch)."""
        with self._lock:
            self._held = deliveries

    def drop(self) -> None:
        """Stop renewing: the batch is settled."""
        with self._lock:
            self._held = ()

    def close(self) -> None:
        """Stop the renewal thread."""
        self._closed.set()
        self._thread.join(timeout=5.0)

    def _loop(self) -> None:
        while not self._closed.wait(self._lease / 3.0):
            with self._lock:
                held = self._held
            if not held:
                continue
            try:
                self._broker.extend(self._queue, held, lease=self._lease)
            except BrokerError as error:
                # The next renewal tries again; if the broker stays away the lease
                # lapses and another worker runs the task: at-least-once holds.
                self._logger.warning("could not renew %d leases: %s", len(held), error)
            except Exception:
                # An adapter's bug (it should raise BrokerError) must not end the
                # thread silently: every later renewal would be lost with it.
                self._logger.exception(
                    "renewing %d leases raised; renewals go on", len(held)
                )
