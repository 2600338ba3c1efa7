"""ProcessWatchdog in supervised worker processes, over a real SQLite file.

One supervised ``watchdog_workers.GuardedWorker`` (timeout 0.3 s, grace 0.5 s,
``max_deliveries=1``) takes tasks that misbehave in every way a timeout has to
handle. Tasks that SIGINT stops time out in place (``on_timeout``, once each).
Tasks that SIGINT cannot stop are SIGKILLed after the grace period; the supervisor
respawns the worker and releases the killed task at once, which then counts one
delivery that was never settled, a crash. With ``max_deliveries=1`` the respawned
worker dead-letters it with the reason instead of running it again (with a larger
cap it would run again, and be killed again, up to the cap). Nothing is lost:
every task ends acked or dead-lettered.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.supervisor import Supervisor

from sergeant.producer import Producer
from sergeant.protocols import QueueLengths
from sergeant.supervision import SupervisionPolicy
from tests.adapters.watchdog_workers import GRACE, QUEUE, TIMEOUT, read_lines

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
TARGET = "tests.adapters.watchdog_workers:guarded_worker"
SOFT = ["spin", "regex", "sleep"]  # stopped by SIGINT
HARD = ["c_loop", "swallow"]  # only SIGKILL ends them


def _run_supervised(supervisor: Supervisor) -> dict[int, float]:
    """Run until every worker retired; return when each exit was first seen."""
    seen: dict[int, float] = {}
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    while thread.is_alive():
        for ended in list(supervisor.exits):
            seen.setdefault(ended.pid, time.monotonic())
        time.sleep(0.01)
    thread.join()
    return seen


def test_every_kind_of_overrun_is_stopped_and_no_task_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT stops what it can, SIGKILL+respawn the rest; all tasks accounted."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    monkeypatch.setenv("WD_BROKER", str(tmp_path / "broker.db"))
    monkeypatch.setenv("WD_LEDGER", str(ledger))
    broker = SqliteBroker(str(tmp_path / "broker.db"))
    kinds = [*SOFT, *HARD, None]
    Producer(broker=broker, codec=PickleCodec(), queue=QUEUE).push_tasks(
        [{"n": n, "do": kind} for n, kind in enumerate(kinds)]
    )
    supervisor = Supervisor(
        TARGET,
        SupervisionPolicy(workers=1, crash_backoff_base=0.1, stop_grace=5.0),
        cwd=REPO,
        tick=0.05,
        handle_signals=False,
        log_level="WARNING",
    )

    exit_seen = _run_supervised(supervisor)

    lines = read_lines(ledger)
    starts = {int(w[1]): (float(w[2]), int(w[3])) for w in lines if w[0] == "start"}
    timeouts = Counter(int(w[1]) for w in lines if w[0] == "timeout")
    done = [int(w[1]) for w in lines if w[0] == "done"]
    # Soft overruns: on_timeout exactly once each, within timeout + 0.5 s.
    assert timeouts == Counter({0: 1, 1: 1, 2: 1})
    for w in (w for w in lines if w[0] == "timeout"):
        assert TIMEOUT <= float(w[2]) - starts[int(w[1])][0] < TIMEOUT + 0.5
    # Hard overruns: the process was SIGKILLed within timeout + grace + 1 s.
    kills = [e for e in supervisor.exits if e.exit_code == -signal.SIGKILL]
    assert sorted(starts[n][1] for n in (3, 4)) == sorted(e.pid for e in kills)
    for n in (3, 4):
        start, pid = starts[n]
        assert TIMEOUT + GRACE <= exit_seen[pid] - start < TIMEOUT + GRACE + 1.0
    assert [int(w[1]) for w in lines if w[0] == "swallowed"] == [4]
    # ... and the worker was respawned: the last task ran in a third process.
    assert done == [5]
    assert len({pid for _, pid in starts.values()}) == 3
    assert [e.released for e in kills] == [1, 1]
    # No task lost: three dropped after on_timeout, one success, two dead letters.
    dead = broker.dead_letters(QUEUE)
    assert len(dead) == 2
    assert all("without being settled" in d.reason for d in dead)
    assert broker.lengths(QUEUE) == QueueLengths(dead=2)
    broker.close()
