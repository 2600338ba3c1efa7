"""NullWatchdog: enforces nothing; for tests and for workers without time limits."""

from __future__ import annotations

_HANDLE = object()


class NullWatchdog:
    """A watchdog that never fires: ``arm`` returns a handle, ``disarm`` says True.

    Use it where a deadline would only add noise (unit tests of the worker loop) or
    when the worker has no timeout; arming it costs one attribute lookup.
    """

    def arm(self, timeout: float, *, grace: float) -> object:
        """Return a handle; nothing is watched."""
        return _HANDLE

    def disarm(self, handle: object) -> bool:
        """Always True: the deadline never fires."""
        return True

    def close(self) -> None:
        """Nothing to stop."""
