"""One place where pymongo's exceptions become sergeant's, with retry and back-off.

Every driver call of the mongo adapter goes through ``Guard.run``. A network failure
(``ConnectionFailure`` and its subclasses: ``AutoReconnect``, ``NotPrimaryError``,
``ServerSelectionTimeoutError``, ``NetworkTimeout``) is retried with a capped
exponential back-off until a time budget is spent, then raised as
``BrokerUnavailable``. The first failure of an outage is logged once at WARNING and
the recovery once at INFO, so a flapping link does not flood the log. Any other
driver error is a ``BrokerError`` at once: retrying a bad query cannot help. That
includes what pymongo raises outside ``PyMongoError``: ``bson.errors.BSONError``
(``DocumentTooLarge`` for a payload past the server's maximum document size is
an ``InvalidDocument``) and the ``ValueError``, ``UnicodeError`` or
``OverflowError`` of encoding a value BSON cannot hold (a str with a lone
surrogate, an int past 64 bits), as the port promises that no driver exception
escapes.

Retrying is safe because every operation the adapter retries is idempotent by its
filter (see ``broker.py``): inserts carry client-made ``_id``s, claims and settles
match on a lease token.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from bson.errors import BSONError
from pymongo.errors import ConnectionFailure, PyMongoError

from sergeant.errors import BrokerError, BrokerUnavailable

__all__ = ["Guard", "serialize_for"]

T = TypeVar("T")

log = logging.getLogger("sergeant.adapters.mongo")

# mongomock has no per-document atomicity: its find_one_and_update finds a document
# and then updates it by _id alone, and update_many tests the filter and writes
# later, both without a lock, so two threads can claim the same task. A real server
# re-checks the filter under the document's lock. One process-wide lock around each
# call restores that guarantee for mongomock (it runs in-process, so nothing outside
# this process can see its data). It is never used with a real client.
_MONGOMOCK_LOCK = threading.RLock()


def serialize_for(client: object) -> contextlib.AbstractContextManager[Any]:
    """The lock each call must hold for ``client``: mongomock's, or none at all."""
    if type(client).__module__.split(".")[0] == "mongomock":
        return _MONGOMOCK_LOCK
    return contextlib.nullcontext()


class Guard:
    """Runs driver calls, retrying network failures and translating every error.

    Args:
        retry_budget: seconds of retrying a network failure before giving up with
            ``BrokerUnavailable``; 0 gives up at the first failure.
        serial: a context manager held around each call (see ``serialize_for``).
        sleep: the back-off sleep, injected so tests need not wait.
    """

    first_delay = 0.05
    max_delay = 2.0

    def __init__(
        self,
        *,
        retry_budget: float = 10.0,
        serial: contextlib.AbstractContextManager[Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._budget = retry_budget
        self._serial = serial if serial is not None else contextlib.nullcontext()
        self._sleep = sleep
        self._outage_since: float | None = None
        self._state = threading.Lock()

    def run(self, what: str, call: Callable[[], T]) -> T:
        """Return ``call()``; retry network failures, translate every driver error.

        Raises:
            BrokerUnavailable: the server stayed unreachable for the whole budget.
            BrokerError: the driver failed for another reason.
        """
        started = time.monotonic()
        delay = self.first_delay
        while True:
            try:
                with self._serial:
                    result = call()
            except ConnectionFailure as error:
                self._outage(what, error)
                if time.monotonic() - started + delay > self._budget:
                    raise BrokerUnavailable(
                        f"MongoDB unreachable during {what}: {error}"
                    ) from error
                self._sleep(delay)
                delay = min(delay * 2, self.max_delay)
            except PyMongoError as error:
                raise BrokerError(f"MongoDB {what} failed: {error}") from error
            except (BSONError, ValueError, OverflowError) as error:
                # Raised by the client while encoding a command (see the module
                # docstring); UnicodeError is a ValueError.
                raise BrokerError(
                    f"MongoDB {what} failed: {type(error).__name__}: {error}"
                ) from error
            else:
                if self._outage_since is not None:
                    self._recovered()
                return result

    def _outage(self, what: str, error: Exception) -> None:
        with self._state:
            if self._outage_since is not None:
                return
            self._outage_since = time.monotonic()
        log.warning(
            "MongoDB unreachable during %s (%s); retrying with back-off", what, error
        )

    def _recovered(self) -> None:
        with self._state:
            since, self._outage_since = self._outage_since, None
        if since is not None:
            log.info("MongoDB reachable again after %.1f s", time.monotonic() - since)
