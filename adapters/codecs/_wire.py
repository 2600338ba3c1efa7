"""A task as the serializers see it: a flat 9-tuple of plain values, and back.

Serializing a tuple of the fields, rather than the attrs object, keeps payloads
small (no class path, no field names) and lets msgpack and json carry a task at all.
Decoding validates the shape and the types, because for the serializers the body is
untrusted input: whatever comes out must be a well-formed Task or a DecodeError.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from math import isfinite as _isfinite
from typing import Any

import attrs

from sergeant.config import MAX_SECONDS
from sergeant.errors import DecodeError, EncodeError
from sergeant.task import Priority, Task, assemble_task

# The order of the fields on the wire. Changing it is a format version change.
FIELDS = (
    "kwargs",
    "queue",
    "id",
    "trace_id",
    "created_at",
    "attempt",
    "priority",
    "eta",
    "timeout",
)
if tuple(field.name for field in attrs.fields(Task)) != FIELDS:  # pragma: no cover
    # Task is built below without its __init__; a field added to Task must be added
    # to the wire format (and the format version bumped), never silently dropped.
    raise ImportError(f"the codecs' wire fields {FIELDS} no longer match Task's")

# A task on the wire: its fields in the order of FIELDS.
Record = tuple[Any, ...]

_PRIORITIES = {int(priority): priority for priority in Priority}
# Looked up by member or by equal int (IntEnum hashes like its value).
_PRIORITY_VALUES = {priority: int(priority) for priority in Priority}


def records(tasks: Iterable[Task]) -> list[Record]:
    """Each task's fields in wire order: kwargs as a plain dict, priority an int.

    One loop for the whole batch: this runs once per encoded task.

    Raises:
        EncodeError: a task's kwargs is not a mapping, or its priority is not a
            Priority; either would make a payload that no codec decodes.
    """
    out: list[Record] = []
    keep = out.append
    for task in tasks:
        kwargs = task.kwargs
        if type(kwargs) is not dict:
            # A Mapping subclass (OrderedDict, defaultdict...) travels as a plain
            # dict: pickle would otherwise keep the subclass, which decode refuses.
            if not isinstance(kwargs, Mapping):
                raise EncodeError(
                    f"task kwargs must be a dict, got {_type_name(kwargs)}"
                )
            kwargs = dict(kwargs)
        try:
            priority = _PRIORITY_VALUES[task.priority]
        except (KeyError, TypeError):
            raise EncodeError(
                f"task priority must be a Priority, got {task.priority!r}"
            ) from None
        keep((
            kwargs, task.queue, task.id, task.trace_id, task.created_at,
            task.attempt, priority, task.eta, task.timeout,
        ))  # fmt: skip
    return out


class Failed:
    """A payload that failed before it gave a record, in a batch of records.

    Not a DecodeError itself: a payload might decode into one of those, and that
    is a malformed record, not this codec's verdict on it.
    """

    __slots__ = ("error",)

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def load_each(
    bodies: Iterable[bytes | Failed],
    load: Callable[[bytes], object],
    failure: Callable[[Exception], DecodeError],
) -> list[object]:
    """``load(body)`` of each body, or ``Failed(failure(error))`` in its place;
    a ``Failed`` among ``bodies`` stays as it is.

    The one loop every serializer reads its records with: ``load`` is the
    library's own function (a C function for pickle and msgpack), so the loop
    makes no Python call per body on the way.
    """
    records: list[object] = []
    keep = records.append
    for body in bodies:
        try:
            keep(load(body))  # type: ignore[arg-type]
        except Exception as error:  # each library raises its own set of types
            # A Failed passed in lands here too (it is not bytes): only the error
            # path pays for telling the two apart.
            keep(body if type(body) is Failed else Failed(failure(error)))
    return records


#: A record's times must fit a float: an infinite eta or an int past a float's
#: range decoded fine, then failed a broker's checks when the task was pushed
#: again (a retry), losing it.
_FLOAT_MAX = sys.float_info.max


def tasks_of(decoded: Iterable[object]) -> list[Task | DecodeError]:
    """A task from each decoded record, after checking its shape and types.

    A record that is not a 9-item tuple or list of the right types gives a
    DecodeError in its place, for the body is untrusted input; a ``Failed``
    (a payload that could not even be read) gives its error.

    One loop with the checks written out, no helper call per record: this runs
    once per decoded task, and a Python call costs more than any one check
    (``python -m benchmark.codecs``).
    """
    out: list[Task | DecodeError] = []
    keep = out.append
    priorities, assemble = _PRIORITIES, assemble_task
    for fields in decoded:
        if (type(fields) is not tuple and type(fields) is not list) or len(fields) != 9:
            keep(fields.error if type(fields) is Failed else _not_a_record())
            continue
        kwargs, queue, id_, trace_id, created_at, attempt, priority, eta, timeout = (
            fields
        )
        # Ints and floats but NaN are valid times.
        if not (
            type(kwargs) is dict
            and type(queue) is str
            and type(id_) is str
            and type(trace_id) is str
            and (
                (type(created_at) is float and _isfinite(created_at))
                or (type(created_at) is int and -_FLOAT_MAX <= created_at <= _FLOAT_MAX)
            )
            and type(attempt) is int
            and attempt >= 0
            and type(priority) is int
            and priority in priorities
            and (
                eta is None
                or (type(eta) is float and _isfinite(eta))
                or (type(eta) is int and -_FLOAT_MAX <= eta <= _FLOAT_MAX)
            )
            and (
                timeout is None
                or (
                    (type(timeout) is float or type(timeout) is int)
                    and 0 <= timeout <= MAX_SECONDS  # NaN fails, so do inf and 10**400
                )
            )
        ):
            keep(_malformed(fields))
            continue
        keep(
            assemble(
                kwargs,
                queue,
                id_,
                trace_id,
                created_at,
                attempt,
                priorities[priority],
                eta,
                timeout,
            )
        )
    return out


def _not_a_record() -> DecodeError:
    return DecodeError("payload does not hold a task (expected a 9-field record)")


def _malformed(fields: Sequence[object]) -> DecodeError:
    types = ", ".join(
        f"{name}: {type(value).__name__}"
        for name, value in zip(FIELDS, fields, strict=True)
    )
    return DecodeError(
        f"payload holds a malformed task record (a wrong type or an out-of-range "
        f"value among {types})"
    )


def _type_name(value: object) -> str:
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def encode_error(
    codec: str, task: Task, error: Exception, dump: Callable[[Any], object]
) -> EncodeError:
    """An EncodeError naming the first kwarg ``dump`` cannot serialize, and its type.

    Called only after encoding ``task`` failed, so it may re-serialize each kwarg to
    find the culprit.
    """
    for name, value in task.kwargs.items():
        try:
            dump(value)
        except Exception as culprit:  # any failure marks the culprit
            return EncodeError(
                f"{codec} cannot encode kwarg {name!r} of type {_type_name(value)}: "
                f"{culprit}"
            )
    return EncodeError(f"{codec} cannot encode task {task.id!r}: {error}")
