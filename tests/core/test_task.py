"""The Task value object, and ``assemble_task``, the hot paths' way to build one."""

from __future__ import annotations

import pickle
import weakref

import attrs
import pytest

from sergeant.task import Priority, Task, assemble_task


def _fields() -> dict[str, object]:
    return {
        "kwargs": {"n": 1},
        "queue": "q",
        "id": "abc",
        "trace_id": "trace",
        "created_at": 12.5,
        "attempt": 2,
        "priority": Priority.HIGH,
        "eta": 99.0,
        "timeout": 3.0,
    }


def test_an_assembled_task_equals_the_constructed_one() -> None:
    """assemble_task gives a real Task, equal to Task(...) with the same fields."""
    assembled = assemble_task(*_fields().values())  # type: ignore[arg-type]

    assert type(assembled) is Task
    assert assembled == Task(**_fields())  # type: ignore[arg-type]
    assert attrs.asdict(assembled, recurse=False) == _fields()


def test_an_assembled_task_is_frozen() -> None:
    """Once built, an assembled task refuses writes like any other Task."""
    task = assemble_task(*_fields().values())  # type: ignore[arg-type]

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        task.attempt = 5  # type: ignore[misc]


def test_an_assembled_task_evolves_pickles_and_is_weakly_referenceable() -> None:
    """evolve, next_attempt, pickling and weak references work as on any Task."""
    task = assemble_task(*_fields().values())  # type: ignore[arg-type]

    assert task.next_attempt(eta=None).attempt == 3
    assert attrs.evolve(task, queue="other").queue == "other"
    assert pickle.loads(pickle.dumps(task)) == task
    assert weakref.ref(task)() is task


def test_tasks_get_unique_ids_and_the_id_as_trace_id_by_default() -> None:
    """The public constructor fills id, trace_id and created_at."""
    first, second = Task(queue="q"), Task(queue="q")

    assert first.id != second.id
    assert first.trace_id == first.id
    assert first.created_at > 0
