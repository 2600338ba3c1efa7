"""Watchdogs: what enforces a task's deadline (see docs/timeouts.md)."""

from __future__ import annotations

from .null import NullWatchdog
from .processes import ProcessArm, ProcessWatchdog
from .threads import ThreadWatchdog, WatchdogHandle

__all__ = [
    "NullWatchdog",
    "ProcessArm",
    "ProcessWatchdog",
    "ThreadWatchdog",
    "WatchdogHandle",
]
