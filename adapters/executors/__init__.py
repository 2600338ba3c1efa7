"""Executors: where the worker's jobs run (inline, or on a pool of threads)."""

from __future__ import annotations

from .serial import SerialExecutor
from .threads import ThreadExecutor

__all__ = ["SerialExecutor", "ThreadExecutor"]
