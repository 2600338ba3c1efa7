"""Executor and watchdog fixtures: a fresh adapter per test, shut down after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sergeant.adapters.executors.asyncio import AsyncioExecutor
from sergeant.adapters.executors.processes import ProcessExecutor
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.executors.threads import ThreadExecutor
from sergeant.adapters.watchdogs.processes import ProcessWatchdog
from sergeant.adapters.watchdogs.threads import ThreadWatchdog


@pytest.fixture
def serial_executor() -> Iterator[SerialExecutor]:
    """A SerialExecutor (nothing to free, shut down anyway for symmetry)."""
    executor = SerialExecutor()
    yield executor
    executor.shutdown()


@pytest.fixture
def thread_executor() -> Iterator[ThreadExecutor]:
    """A ThreadExecutor with 4 threads, shut down after the test."""
    executor = ThreadExecutor(threads=4)
    yield executor
    executor.shutdown()


@pytest.fixture
def asyncio_executor() -> Iterator[AsyncioExecutor]:
    """An AsyncioExecutor with concurrency 4, shut down after the test."""
    executor = AsyncioExecutor(concurrency=4)
    yield executor
    executor.shutdown()


@pytest.fixture
def process_executor() -> Iterator[ProcessExecutor]:
    """A ProcessExecutor with 2 children (forked on first run), shut down after."""
    executor = ProcessExecutor(processes=2)
    yield executor
    executor.shutdown()


@pytest.fixture
def thread_watchdog() -> Iterator[ThreadWatchdog]:
    """A ThreadWatchdog with its default escalation, closed after the test."""
    watchdog = ThreadWatchdog()
    yield watchdog
    watchdog.close()


@pytest.fixture
def process_watchdog() -> Iterator[ProcessWatchdog]:
    """A ProcessWatchdog (its killer starts on the first arm), closed after the test.

    It signals this very process: arm it from pytest's main thread only.
    """
    watchdog = ProcessWatchdog()
    yield watchdog
    watchdog.close()
