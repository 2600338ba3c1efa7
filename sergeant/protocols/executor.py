"""The Executor port: runs the work function over a batch of tasks.

The worker hands the executor a ``job`` (its own wrapper around ``work``, which
applies hooks and the watchdog and turns exceptions into outcomes) and a batch.
The executor decides where each job runs: inline, in N threads, in N processes.

Every implementation passes ``contract_tests/test_executor.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from sergeant.outcome import Outcome
from sergeant.task import Task

Job = Callable[[Task], Outcome]


@runtime_checkable
class Executor(Protocol):
    """**Port**: runs ``job`` for each task of a batch, with a concurrency level."""

    @property
    def concurrency(self) -> int:
        """How many jobs may run at the same time."""
        ...

    def run(self, job: Job, tasks: Sequence[Task]) -> list[Outcome]:
        """Run ``job(task)`` for every task; return the outcomes in input order.

        At most ``concurrency`` jobs run at once. An exception escaping ``job``
        becomes ``Raised(exception)`` for that task; the other tasks still run.
        """
        ...

    def shutdown(self) -> None:
        """Free threads or processes, waiting for running jobs to finish."""
        ...
