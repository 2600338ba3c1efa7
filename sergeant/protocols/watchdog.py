"""The Watchdog port: enforces a task's deadline.

The worker arms the watchdog from the thread that runs a task, just before ``work``,
and disarms it right after. If the deadline passes first, the watchdog interrupts
that thread by raising ``TaskTimedOut`` inside it; if the task is still running
``grace`` seconds later, the watchdog escalates (a process watchdog kills the worker
process; its supervisor respawns it and the task returns through its lease).

A watchdog may also have a ``start()`` method (not part of the protocol, which
needs only the three below): ``Worker.run()`` calls it once, before it takes any
task, so that helpers that take time to start (the process watchdog's killer) are
ready for the first task, and one that cannot start fails ``run()`` there, with
nothing taken from the queue.

Every implementation passes ``contract_tests/test_watchdog.py``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Watchdog(Protocol):
    """**Port**: raises ``TaskTimedOut`` in a task that outlives its deadline."""

    def arm(self, timeout: float, *, grace: float) -> object:
        """Start watching the calling thread; return a handle for ``disarm``."""
        ...

    def disarm(self, handle: object) -> bool:
        """Stop watching; True when the deadline had not fired.

        After ``disarm`` returns, no ``TaskTimedOut`` from this arm is delivered.
        """
        ...

    def close(self) -> None:
        """Stop the watchdog's own threads or processes."""
        ...
