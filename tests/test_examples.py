"""Every example runs as a real program, in a fresh directory, and says what it did."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

#: example -> regular expressions its output (stdout + stderr) must match.
EXPECTED: dict[str, list[str]] = {
    "single_producer_consumer": [
        r"queued: 3\nhello, ada\nhello, grace\nhello, linus\n"
        r"worker stopped: max_tasks\nqueued: 0\n",
    ],
    "one_producer_many_consumers": [
        r"left in the queue: 0\n",
        r"(?s)(spawned worker \d \(pid \d+.*){3}",
        r"every worker of numbers retired",
    ],
    "mixed_producer_consumer": [
        r"charged ada 12.50\ncharged bob 3.00\nemails waiting: 2\n"
        r"emailed a receipt to ada\nemailed a receipt to bob\nemails waiting: 0\n",
    ],
    "max_retries": [
        r"flaky: fetched\n",
        r"broken: giving up after 3 retries\n",
        r"dead letter: max retries \(3\) exhausted\n",
    ],
    "delayed_task": [
        r"ready 1, delayed 1\n'right away' ran after 0\.\d s\n"
        r"'in two seconds' ran after (2\.\d|3\.\d) s\n",
    ],
    "multithreaded_worker": [
        r"40 downloads of 0\.2 s took (\d\.\d) s on 8 threads\n",
    ],
    "stopping_many_workers": [
        r"stopping 4 workers",
        r"stopped 4 workers \d+\.\d s after SIGTERM\n",
        r"(?s)(worker pid \d+ encoded \d+ videos.*){4}",
        r"still queued \d+, in flight 0\n",
    ],
}


def test_every_example_is_covered() -> None:
    """Each file in examples/ has expectations here, and nothing else does."""
    names = {path.stem for path in EXAMPLES.glob("*.py")}

    assert names == set(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_prints_what_it_did(name: str, tmp_path: Path) -> None:
    """The example exits 0 within a minute and prints its scenario's results."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    for pattern in EXPECTED[name]:
        assert re.search(pattern, output), f"{pattern!r} not in:\n{output}"


def test_stopping_many_workers_leaves_every_unrun_task_queued(tmp_path: Path) -> None:
    """Done plus still-queued is every task: a graceful stop loses nothing."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "stopping_many_workers.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip

    match = re.search(r"still queued (\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    queued = int(match.group(1))
    done = sum(map(int, re.findall(r"encoded (\d+) videos", result.stdout)))
    assert done + queued == 500
    assert 0 < done < 500
    assert result.stderr.count("exited: stopped") == 4


def test_multithreaded_worker_is_faster_than_one_thread(tmp_path: Path) -> None:
    """40 tasks of 0.2 s on 8 threads take well under the 8 s one thread would."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "multithreaded_worker.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip

    match = re.search(r"took (\d+\.\d) s", result.stdout)
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) < 5.0
