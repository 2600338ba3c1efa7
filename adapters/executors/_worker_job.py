"""What the process and asyncio executors need to know about a worker's job.

The worker hands every executor ``worker.run_one`` as the job. ``run_one`` honours a
stop request (it returns ``NotStarted`` once the worker is stopping) and turns a
``StopRequested``/``RespawnRequested`` returned by ``work`` into a stop request, all
on the worker object it runs on. In a child process that object is a *copy*, so the
process executor repeats those two steps on the real worker in the parent; the
asyncio executor runs an async ``work`` itself and does the same. Both use only the
worker's public API (``stopping``, ``request_stop``).
"""

from __future__ import annotations

from typing import Any

from sergeant.outcome import Outcome, RespawnRequested, StopRequested
from sergeant.supervision import StopReason
from sergeant.worker import Worker


def worker_of(job: Any) -> Worker | None:
    """The worker whose ``run_one`` ``job`` is, else None."""
    owner = getattr(job, "__self__", None)
    if isinstance(owner, Worker) and getattr(job, "__name__", None) == "run_one":
        return owner
    return None


def relay_stop(worker: Worker | None, outcome: Outcome) -> None:
    """Turn a stop or respawn returned by ``work`` into the worker's stop request."""
    if worker is None:
        return
    if isinstance(outcome, RespawnRequested):
        worker.request_stop(StopReason.RESPAWN)
    elif isinstance(outcome, StopRequested):
        worker.request_stop(StopReason.STOPPED)
