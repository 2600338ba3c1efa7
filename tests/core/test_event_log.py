"""EventLogger: one line per chosen lifecycle event, quiet at INFO on the hot path."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest

from sergeant import lifecycle as lc
from sergeant.errors import ConfigError
from sergeant.event_log import DEFAULT_LEVELS, EventLogger
from sergeant.task import Task
from sergeant.worker import Worker
from tests.conftest import WorkerFactory

LOGGER = "sergeant.worker.jobs"


class Flaky(Worker):
    """Succeeds on even numbers; odd ones fail and are retried (max_retries applies)."""

    def work(self, task: Task) -> Any:
        if task.kwargs["n"] % 2:
            raise ValueError(f"odd number {task.kwargs['n']}")
        return task.kwargs["n"]

    def on_failure(self, task: Task, exception: BaseException) -> Any:
        return self.retry(task, delay=0)


def _run(worker: Worker, count: int) -> None:
    worker.push_tasks([{"n": n} for n in range(count)])
    while worker.step():
        pass


def _lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_at_info_only_failures_and_dead_tasks_are_logged(
    make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Successes, deliveries and retries stay silent at INFO; failures do not."""
    worker = make_worker(Flaky, max_retries=1)
    EventLogger(worker)
    caplog.set_level(logging.INFO, logger=LOGGER)

    _run(worker, 4)

    lines = _lines(caplog)
    failed = [text for level, text in lines if level == logging.WARNING]
    dead = [text for level, text in lines if level == logging.ERROR]
    assert len(failed) == 4  # n=1 and n=3, each on attempt 0 and 1
    assert len(dead) == 2
    assert len(lines) == 6
    assert all(text.startswith("Failed task=") for text in failed)
    assert all(
        "RetriesExhausted" in text and "max retries (1)" in text for text in dead
    )


def test_a_line_names_event_task_queue_attempt_worker_and_pid(
    make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The failure line carries every field and the exception, on one line."""
    worker = make_worker(Flaky)
    EventLogger(worker, events={lc.Failed})
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    [task] = worker.push_tasks([{"n": 1}])

    worker.step()

    [(level, text)] = _lines(caplog)
    assert level == logging.WARNING
    assert text == (
        f"Failed task={task.id} queue=jobs attempt=0 worker=jobs pid={os.getpid()}"
        ": ValueError: odd number 1"
    )


def test_successes_are_logged_only_at_debug(
    make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Turning the logger down to DEBUG shows every routine event of a success."""
    worker = make_worker(Flaky)
    EventLogger(worker)
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    _run(worker, 1)

    texts = [text.split()[0] for level, text in _lines(caplog)]
    assert texts == ["Delivered", "Started", "Succeeded"]
    assert {level for level, _ in _lines(caplog)} == {logging.DEBUG}


def test_events_chooses_which_events_are_logged(
    make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Event types left out of ``events`` are never logged, at any level."""
    worker = make_worker(Flaky, max_retries=1)
    EventLogger(worker, events={lc.RetriesExhausted})
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    _run(worker, 4)

    assert [text.split()[0] for _, text in _lines(caplog)] == ["RetriesExhausted"] * 2


def test_levels_override_the_defaults(
    make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """``levels={Succeeded: INFO}`` logs each success at INFO."""
    worker = make_worker(Flaky)
    EventLogger(worker, levels={lc.Succeeded: logging.INFO})
    caplog.set_level(logging.INFO, logger=LOGGER)

    _run(worker, 3)  # n = 0 and 2 succeed; 1 fails and is dead (max_retries=0)

    lines = _lines(caplog)
    assert [text.split()[0] for _, text in lines].count("Succeeded") == 2
    assert (logging.INFO, lines[0][1]) == lines[0]


def test_a_custom_logger_receives_the_lines(
    make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """``logger=`` sends the lines elsewhere than the worker's logger."""
    worker = make_worker(Flaky)
    EventLogger(worker, logger=logging.getLogger("audit"))
    caplog.set_level(logging.WARNING, logger="audit")

    _run(worker, 2)

    assert [r.name for r in caplog.records] == ["audit", "audit"]  # failed, dead


def test_a_multi_line_exception_message_stays_one_line(
    make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Newlines in an exception message are folded: one event, one line."""

    class Noisy(Worker):
        def work(self, task: Task) -> Any:
            raise RuntimeError("first line\nsecond line")

    worker = make_worker(Noisy)
    EventLogger(worker)
    caplog.set_level(logging.WARNING, logger=LOGGER)

    _run(worker, 1)

    [(_, text)] = _lines(caplog)
    assert "\n" not in text
    assert text.endswith("RuntimeError: first line second line")


def test_nothing_is_formatted_below_the_threshold(
    make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """With the logger at ERROR, a dropped failure produces no record at all."""

    class Dropper(Flaky):
        def on_failure(self, task: Task, exception: BaseException) -> Any:
            return None

    worker = make_worker(Dropper)
    EventLogger(worker)
    caplog.set_level(logging.ERROR, logger=LOGGER)

    _run(worker, 2)

    assert _lines(caplog) == []


def test_every_lifecycle_event_has_a_default_level() -> None:
    """No event type is forgotten by the defaults; only failures reach WARNING+."""
    loud = {kind for kind, level in DEFAULT_LEVELS.items() if level >= logging.WARNING}

    assert set(DEFAULT_LEVELS) == set(lc.EVENT_TYPES)
    assert loud == {lc.Failed, lc.TimedOut, lc.RetriesExhausted, lc.Rejected,
                    lc.LeaseExpired}  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"events": {str}}, "is not a lifecycle event"),
        ({"levels": {int: logging.INFO}}, "is not a lifecycle event"),
        ({"levels": {lc.Failed: "loud"}}, "level for Failed must be an int"),
    ],
)
def test_bad_configuration_is_a_config_error(
    make_worker: WorkerFactory, kwargs: dict[str, Any], message: str
) -> None:
    """Non-event types and non-int levels are refused at construction."""
    worker = make_worker(Flaky)

    with pytest.raises(ConfigError, match=message):
        EventLogger(worker, **kwargs)
