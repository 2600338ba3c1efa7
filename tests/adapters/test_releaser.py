"""The supervisor's releaser: a helper process that releases dead children's tasks.

Each test starts a real helper (``python -m sergeant.adapters.releaser``) over a
target module written into a temporary directory, on a SQLite file there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil
import pytest
from sergeant.adapters.releaser import Releaser
from sergeant.adapters.sqlite import SqliteBroker

from sergeant.errors import SergeantError
from sergeant.protocols import QueueLengths

pytestmark = pytest.mark.timeout(120)

QUEUE = "tâches"  # not ASCII: owners and queue names cross the pipe intact

TARGET = f"""
import os, subprocess
from sergeant.adapters.codecs.pickle import PickleCodec
from sergeant.adapters.executors.serial import SerialExecutor
from sergeant.adapters.sqlite import SqliteBroker
from sergeant.adapters.watchdogs.null import NullWatchdog
from sergeant.config import WorkerConfig
from sergeant.worker import Worker

# Noise on fd 1 at import, as a target's own subprocess or C library may make.
subprocess.run(["echo", "hello from the target"], check=True)

class Noisy(Worker):
    def work(self, task):
        return None

def make(*, owner):
    print("building a worker for", owner)
    os.write(1, b"{{not an answer\\n")
    return Noisy(
        config=WorkerConfig(name={QUEUE!r}),
        broker=SqliteBroker(os.environ["RELEASER_DB"]),
        codec=PickleCodec(),
        executor=SerialExecutor(),
        watchdog=NullWatchdog(),
        owner=owner,
    )

def broken(*, owner):
    raise RuntimeError("no database configured")
"""


@pytest.fixture
def place(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A folder holding the target module, and the environment a child gets."""
    (tmp_path / "noisy_target.py").write_text(TARGET)
    repo = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "RELEASER_DB": str(tmp_path / "tasks.db"),
        "PYTHONPATH": os.pathsep.join(
            filter(None, [repo, os.environ.get("PYTHONPATH")])
        ),
        # A locale that cannot encode the queue's name: the pipe must not care.
        "PYTHONIOENCODING": "latin-1",
    }
    return tmp_path, env


def test_releases_reach_the_childrens_broker_despite_noise_and_encodings(
    place: tuple[Path, dict[str, str]],
) -> None:
    """What the target prints on fd 1 is never taken for an answer, and an owner
    name that is not ASCII reaches the helper as it was sent."""
    folder, env = place
    broker = SqliteBroker(env["RELEASER_DB"])
    broker.push(QUEUE, [b"a", b"b"])
    broker.reserve(QUEUE, owner="wörker:1", count=2, lease=600)
    releaser = Releaser(
        "noisy_target:make", owner="releaser", python=sys.executable, cwd=folder,
        env=env,
    )  # fmt: skip
    try:
        assert releaser.queue == QUEUE
        assert releaser.release("wörker:1") == 2
        assert releaser.release("nobody") == 0
    finally:
        releaser.close()

    assert broker.lengths(QUEUE) == QueueLengths(ready=2)
    broker.close()


def test_a_target_that_cannot_build_fails_with_its_message_and_leaves_nothing(
    place: tuple[Path, dict[str, str]],
) -> None:
    """The helper's setup error is the constructor's SergeantError, one line."""
    folder, env = place

    with pytest.raises(SergeantError, match="no database configured"):
        Releaser(
            "noisy_target:broken", owner="releaser", python=sys.executable,
            cwd=folder, env=env,
        )  # fmt: skip

    assert _helpers() == []


def _helpers() -> list[psutil.Process]:
    """The live releaser helpers among this process's children (a zombie or a
    child that exits while listed is none: its command line cannot be read)."""
    found = []
    for child in psutil.Process().children():
        try:
            if "sergeant.adapters.releaser" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found
