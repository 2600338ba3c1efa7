"""SerialExecutor: runs a batch inline, one task after another, in the caller's thread.

The default in tests and the right choice for a worker whose tasks are CPU-bound
Python (threads would only take turns on the GIL): no threads, no hand-off, and the
outcomes come back in a deterministic order because the jobs *run* in that order.
"""

from __future__ import annotations

from collections.abc import Sequence

from sergeant.errors import TaskTimedOut
from sergeant.outcome import Outcome, Raised
from sergeant.protocols.executor import Job
from sergeant.task import Task


class SerialExecutor:
    """Runs each job inline in the calling thread; concurrency 1.

    An ``Exception`` (or a ``TaskTimedOut``) escaping a job becomes ``Raised`` for
    that task and the next task runs. Any other ``BaseException``
    (``KeyboardInterrupt``, ``SystemExit``) propagates at once: it asks the process
    to stop, and the tasks not yet run stay leased and come back through the broker.
    """

    @property
    def concurrency(self) -> int:
        """Always 1: jobs run one after another."""
        return 1

    def run(self, job: Job, tasks: Sequence[Task]) -> list[Outcome]:
        """Run ``job(task)`` for every task in order; return the outcomes in order."""
        outcomes: list[Outcome] = []
        append = outcomes.append
        for task in tasks:
            try:
                append(job(task))
            except (Exception, TaskTimedOut) as exc:
                append(Raised(exc))
        return outcomes

    def shutdown(self) -> None:
        """Nothing to free: there are no threads."""
