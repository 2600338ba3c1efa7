"""The Task value object, and ``assemble_task``, the hot paths' way to build one."""

from __future__ import annotations

import os
import pickle
import threading
import weakref

import attrs
import pytest

from sergeant.task import (
    Priority,
    Task,
    assemble_new_tasks,
    assemble_task,
    new_task_id,
)


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


def test_new_tasks_assembled_in_bulk_equal_the_constructed_ones() -> None:
    """assemble_new_tasks gives real, frozen Tasks: first attempts, each id its
    own trace id, the other fields shared."""
    kwargs_list = [{"n": 1}, {"n": 2}]
    tasks = assemble_new_tasks(
        kwargs_list, ["a", "b"], "q", 12.5, Priority.HIGH, 99.0, 3.0
    )

    assert [type(task) for task in tasks] == [Task, Task]
    assert tasks == [
        Task(kwargs={"n": n}, queue="q", id=i, created_at=12.5,
             priority=Priority.HIGH, eta=99.0, timeout=3.0)
        for n, i in ((1, "a"), (2, "b"))
    ]  # fmt: skip
    assert [task.trace_id for task in tasks] == ["a", "b"]
    assert tasks[0].kwargs is kwargs_list[0]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        tasks[0].attempt = 5  # type: ignore[misc]
    with pytest.raises(ValueError):  # one id per kwargs, or nothing is built
        assemble_new_tasks(kwargs_list, ["a"], "q", 1.0, Priority.NORMAL, None, None)


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


def test_ids_drawn_singly_in_bulk_and_from_threads_never_repeat() -> None:
    """``new_task_id()`` and ``new_task_id.many(n)`` share one counter: ids drawn
    either way, from several threads at once, are all distinct and one length."""
    drawn: list[str] = []

    def draw() -> None:
        for _ in range(200):
            drawn.extend(new_task_id.many(50))
            drawn.append(new_task_id())

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(drawn) == 4 * 200 * 51
    assert len(set(drawn)) == len(drawn)
    assert {len(task_id) for task_id in drawn} == {34}
    assert new_task_id.many(0) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_draws_ids_of_its_own() -> None:
    """A child starts from the parent's counter: without a new prefix after the
    fork both would hand out the same ids."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_task_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)

    assert len(child_id) == 34
    assert child_id[:24] != new_task_id()[:24]
