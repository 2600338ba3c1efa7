"""The task: an immutable value object, the unit of work that travels through brokers.

What a broker stores is the *encoded* task (see the ``Codec`` port); the broker itself
keeps one more number beside it, the delivery count, which lives on the ``Delivery``
receipt and never in the task, because crash redeliveries are not retries.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import attrs


class Priority(enum.IntEnum):
    """Ordering class of a task: ready HIGH tasks are handed out before NORMAL ones."""

    HIGH = 0
    NORMAL = 1


class _IdSource:
    """Unique ids, cheaply: a random per-process prefix and a counter.

    ``uuid4()`` costs a system call per id, which shows at 100k pushes a second; a
    96-bit random prefix drawn once per process (again after ``fork``) plus a counter
    is as unique in practice and several times cheaper. The counter is written in
    decimal and starts at 10**9, so ids keep one length (34 characters) for the
    first nine billion of a process: ``str`` of an int and a concatenation cost
    about half of a ``%08x`` format (``python -m benchmark.codecs``, the id row),
    and a bulk push draws one id per task. ``many`` draws ids for a bulk push.
    """

    _FIRST = 10**9

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.prefix = os.urandom(12).hex()
        # A fresh lock too: another thread may have held the parent's at the fork.
        self._lock = threading.Lock()
        self._next = self._FIRST

    def _block(self, n: int) -> int:
        """The first of ``n`` consecutive counter values, none handed out before."""
        with self._lock:
            start = self._next
            self._next = start + n
        return start

    def __call__(self) -> str:
        return self.prefix + str(self._block(1))

    def many(self, n: int) -> list[str]:
        """``n`` new ids (in one list comprehension, no call per id)."""
        prefix, start = self.prefix, self._block(n)
        return [prefix + str(i) for i in range(start, start + n)]


new_task_id = _IdSource()
os.register_at_fork(after_in_child=new_task_id.reseed)


class _TaskSlots:
    """Where a Task's fields live: slots shared with ``_OpenTask`` (see
    ``assemble_task``). attrs reuses slots a base class declares, so Task adds none.
    """

    __slots__ = (
        "__weakref__",
        "attempt",
        "created_at",
        "eta",
        "id",
        "kwargs",
        "priority",
        "queue",
        "timeout",
        "trace_id",
    )
    kwargs: dict[str, Any]
    queue: str
    id: str
    trace_id: str
    created_at: float
    attempt: int
    priority: Priority
    eta: float | None
    timeout: float | None


@attrs.frozen(kw_only=True, slots=True)
class Task(_TaskSlots):
    """One unit of work.

    Attributes:
        kwargs: the keyword arguments for the worker's ``work``; what the user sends.
        queue: name of the queue the task was pushed to.
        id: unique id, kept across retries so users can deduplicate.
        trace_id: correlation id for logs and tracing (defaults to ``id``); kept
            across retries.
        created_at: wall-clock time of the first push, in seconds since the epoch.
        attempt: how many retries preceded this run (0 on the first run); requeues
            and crash redeliveries do not count.
        priority: HIGH tasks are reserved before NORMAL ones (a ``Priority``; codecs
            rebuild the enum, producers validate it).
        eta: wall-clock time before which the task must not run, or None.
        timeout: per-task timeout in seconds overriding the worker's, or None.
    """

    kwargs: dict[str, Any] = attrs.field(factory=dict)
    queue: str = ""
    id: str = attrs.field(factory=new_task_id)
    trace_id: str = attrs.field(
        default=attrs.Factory(lambda self: self.id, takes_self=True)
    )
    created_at: float = attrs.field(factory=time.time)
    attempt: int = 0
    priority: Priority = Priority.NORMAL
    eta: float | None = None
    timeout: float | None = None

    def next_attempt(self, *, eta: float | None = None) -> Task:
        """The same task, one retry further, due at ``eta``."""
        return attrs.evolve(self, attempt=self.attempt + 1, eta=eta)

    def requeued(self) -> Task:
        """The same task, due now, with its attempt count unchanged."""
        return self if self.eta is None else attrs.evolve(self, eta=None)


class _OpenTask(_TaskSlots):
    """A Task under construction: the same slots, without the frozen ``__setattr__``.

    Setting a frozen attrs instance's slots goes through their descriptors, one
    Python-level call each; on this class the same stores are plain attribute
    writes. ``assemble_task`` fills one and turns it into a Task, which the shared
    layout allows. ``python -m benchmark.codecs`` prints the rate: about 0.2 µs a
    task (the descriptor calls took about 0.5 µs: that script's rows, copied onto
    commit c981659), on paths that build a Task per pushed or decoded task.
    """

    __slots__ = ()


_FIELDS = tuple(field.name for field in attrs.fields(Task))
_new = object.__new__


def assemble_task(  # noqa: PLR0917 - positional on purpose: a hot path
    kwargs: dict[str, Any],
    queue: str,
    id: str,  # noqa: A002 - the field's name
    trace_id: str,
    created_at: float,
    attempt: int,
    priority: Priority,
    eta: float | None,
    timeout: float | None,
) -> Task:
    """Build a Task from fields already known to be valid, without ``__init__``.

    The hot paths (bulk pushes, decoding a batch) build a Task per item, and attrs'
    frozen ``__init__`` costs about a microsecond more per task. Every field must be
    given, in declaration order; nothing is checked.
    """
    task = _new(_OpenTask)
    task.kwargs = kwargs
    task.queue = queue
    task.id = id
    task.trace_id = trace_id
    task.created_at = created_at
    task.attempt = attempt
    task.priority = priority
    task.eta = eta
    task.timeout = timeout
    task.__class__ = Task  # type: ignore[assignment]
    return task  # type: ignore[return-value]


def assemble_new_tasks(  # noqa: PLR0917 - positional on purpose: a hot path
    kwargs_list: Sequence[dict[str, Any]],
    ids: Sequence[str],
    queue: str,
    created_at: float,
    priority: Priority,
    eta: float | None,
    timeout: float | None,
) -> list[Task]:
    """``assemble_task`` of a batch of new tasks (first attempt, each its own
    trace), alike but for their kwargs and ids, as a bulk push makes them.

    The fields are set in the loop's body rather than by a call per task:
    ``python -m benchmark.codecs`` built 1,000-task batches at 3.8 to 4.0 million
    tasks a second with ``assemble_task`` in a list comprehension and 4.5 million
    this way (2026-12-06, two runs), some 0.04 µs a task, about 2% of a bulk
    push. Nothing is checked.
    """
    out: list[Task] = []
    keep = out.append
    for kwargs, id_ in zip(kwargs_list, ids, strict=True):
        task = _new(_OpenTask)
        task.kwargs = kwargs
        task.queue = queue
        task.id = id_
        task.trace_id = id_
        task.created_at = created_at
        task.attempt = 0
        task.priority = priority
        task.eta = eta
        task.timeout = timeout
        task.__class__ = Task  # type: ignore[assignment]
        keep(task)  # type: ignore[arg-type]
    return out


def _every_field_set(task: Task) -> bool:
    """Whether every slot of ``task`` holds a value (reading an unset one raises)."""
    try:
        for name in _FIELDS:
            getattr(task, name)
    except AttributeError:
        return False
    return True


if (
    not _every_field_set(
        assemble_new_tasks([{}], ["id"], "q", 0.0, Priority.NORMAL, None, None)[0]
    )
    or assemble_task.__code__.co_varnames[:9] != _FIELDS
    or set(_TaskSlots.__slots__) != {*_FIELDS, "__weakref__"}
    # attrs may copy the base's slot descriptors into Task, never make its own:
    or any(getattr(Task, name).__objclass__ is not _TaskSlots for name in _FIELDS)
):  # pragma: no cover
    raise ImportError("Task's fields, its slots and assemble_task no longer agree")
