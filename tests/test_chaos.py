"""The chaos run, short: real kills, a Redis crash and a supervisor restart lose none.

Runs ``benchmark.chaos`` in-process (it starts the ``sergeant supervise`` command,
the worker processes and, for Redis, its own ``redis-server``) with 20,000 tasks
and three SIGKILLs of workers, and asserts that every pushed task ran or was
dead-lettered with a reason.
"""

from __future__ import annotations

import io

import pytest

from benchmark.chaos import Options, Result, run

KILLS = 3


def chaos(broker: str) -> tuple[Result, str]:
    """The short chaos run on ``broker``, and what it printed."""
    out = io.StringIO()
    options = Options(broker=broker, tasks=20_000, kills=KILLS, interval=1.5,
                      time_limit=120.0, seed=8)  # fmt: skip
    result = run(options, out)
    print(out.getvalue())
    return result, out.getvalue()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_chaos_on_sqlite_loses_no_task() -> None:
    """Worker SIGKILLs and a supervisor SIGTERM on SQLite: lost is 0, all ran."""
    result, printed = chaos("sqlite")

    assert printed.count("SIGKILL worker pid") == KILLS
    assert "SIGTERM the supervisor, started again" in printed
    assert result.drained
    assert result.pushed == 20_000
    assert result.lost == 0
    assert result.ran + sum(result.dead.values()) >= result.pushed


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.timeout(240)
def test_chaos_on_redis_loses_no_task() -> None:
    """Worker SIGKILLs, a redis-server SIGKILL (appendfsync always) and a supervisor
    SIGTERM on Redis: lost is 0, all ran."""
    result, printed = chaos("redis")

    assert printed.count("SIGKILL worker pid") == KILLS
    assert "SIGKILL redis-server, started again" in printed
    assert "SIGTERM the supervisor, started again" in printed
    assert result.drained
    assert result.pushed == 20_000
    assert result.lost == 0
    assert result.ran + sum(result.dead.values()) >= result.pushed
