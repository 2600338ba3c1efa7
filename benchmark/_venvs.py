"""The libraries under test, and one venv per peer (created once, then reused).

Each peer is installed with pinned versions into ``benchmark/.venvs/<key>`` (git
ignores it) by the Python running the benchmark; a venv whose pins changed is
re-installed. Ours runs on the running interpreter: the project's own venv.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = HERE / ".venvs"
DRIVERS = HERE / "peers"
_STAMP = "benchmark-requirements.txt"


@dataclass(frozen=True)
class Lib:
    """A library under test.

    Attributes:
        key: short name (venv folder, command-line choice).
        label: name in tables.
        requirements: pinned pip requirements (empty: the running interpreter).
        settings: how it is driven, for the report.
        hints: rough tasks/s per row on a 2-core machine, to size slow rows.
        interpreter: a Python to run the driver with instead (its environment
            provides the library: another build of ours, for a before/after).
    """

    key: str
    label: str
    requirements: tuple[str, ...] = ()
    settings: str = ""
    hints: dict[str, float] = field(default_factory=dict)
    interpreter: str = ""

    @property
    def script(self) -> Path:
        """The driver script."""
        return DRIVERS / f"lib_{self.key}.py"

    @property
    def python(self) -> str:
        """The interpreter that runs the driver."""
        if self.interpreter:
            return self.interpreter
        if not self.requirements:
            return sys.executable
        return str(VENVS / self.key / "bin" / "python")


_REDIS = ("redis==8.1.0", "hiredis==3.5.0")

OURS = Lib(
    "ours",
    "sergeant (this)",
    settings="PickleCodec, SerialExecutor, NullWatchdog; at-least-once unless "
    "stated; batch = tasks_per_transaction",
)
SERGEANT027 = Lib(
    "sergeant027",
    "sergeant 0.27.0",
    ("sergeant==0.27.0", "redis==4.6.0", "hiredis==2.4.0"),
    settings="its Redis connector (RPUSH / LPOP count), serial executor, "
    "pickle; at most once",
)
PEERS = (
    Lib(
        "celery",
        "Celery",
        ("celery[redis]==5.7.0", "kombu==5.7.0", *_REDIS),
        settings="solo pool, results ignored, early ack, no gossip/mingle/"
        "heartbeat, prefetch multiplier = batch; bulk = group of 1,000",
        hints={"push_single": 1000, "push_bulk": 800, "drain_1": 1000,
               "drain_1000": 1500},
    ),
    Lib(
        "rq",
        "RQ",
        ("rq==3.0.0", *_REDIS),
        settings="SimpleWorker (no fork per job), burst mode, result_ttl=0; "
        "bulk = enqueue_many of 1,000",
        hints={"push_single": 2500, "push_bulk": 4000, "drain_1": 250},
    ),
    Lib(
        "dramatiq",
        "Dramatiq",
        ("dramatiq[redis]==2.2.1", *_REDIS),
        settings="one worker thread, default middleware, queue prefetch = "
        "batch (default 2 for one at a time)",
        hints={"push_single": 2200, "drain_1": 260, "drain_1000": 7000},
    ),
    Lib(
        "huey",
        "Huey",
        ("huey==3.5.4", *_REDIS),
        settings="RedisHuey, results off, blocking dequeue, one thread worker, "
        "no periodic tasks",
        hints={"push_single": 15000, "drain_1": 6000},
    ),
)  # fmt: skip
ALL = {lib.key: lib for lib in (OURS, SERGEANT027, *PEERS)}


def ensure(lib: Lib, log: Callable[[str], None] = print) -> None:
    """Create ``lib``'s venv and install its pins, unless already done."""
    if not lib.requirements:
        return
    folder = VENVS / lib.key
    stamp = folder / _STAMP
    wanted = "\n".join(lib.requirements) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    log(f"installing {lib.label} into {folder.relative_to(HERE.parent)} ...")
    if not Path(lib.python).exists():
        venv.EnvBuilder(with_pip=True).create(folder)
    subprocess.run(
        [lib.python, "-m", "pip", "install", "-q", *lib.requirements],
        check=True,
        timeout=900,
    )
    stamp.write_text(wanted)
