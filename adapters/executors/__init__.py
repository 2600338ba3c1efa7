"""Executors: where the worker's jobs run (inline, threads, processes, event loop)."""

from __future__ import annotations

from .asyncio import AsyncioExecutor
from .processes import ProcessDiedError, ProcessExecutor
from .serial import SerialExecutor
from .threads import ThreadExecutor

__all__ = [
    "AsyncioExecutor",
    "ProcessDiedError",
    "ProcessExecutor",
    "SerialExecutor",
    "ThreadExecutor",
]
