"""PickleCodec: the default serializer; carries any picklable kwarg.

Security: unpickling runs code chosen by whoever wrote the payload. An unsigned
pickle codec is only for brokers that nobody untrusted can write to. Anywhere else,
sign: ``HmacSigner(PickleCodec(), key=...)`` rejects a forged payload before it is
unpickled.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence

from sergeant.errors import DecodeError, EncodeError
from sergeant.task import Task

from . import _frame, _wire

PROTOCOL = 5


def _dump(value: object) -> bytes:
    return pickle.dumps(value, PROTOCOL)


class PickleCodec(_frame.FramedCodec):
    """Serializes tasks with pickle (protocol 5): the fastest codec, and the default.

    Carries every picklable value exactly: tuples stay tuples, sets, bytes,
    datetimes, big ints and module-level classes included.

    **Only for trusted brokers.** Decoding unpickles, and unpickling a payload can
    execute arbitrary code. If anyone but your own producers can write to the broker,
    wrap it: ``HmacSigner(PickleCodec(), key=...)`` verifies the signature before
    unpickling anything.
    """

    def __init__(self) -> None:
        self._set_header(_frame.Header(_frame.PICKLE))

    def __repr__(self) -> str:
        return "PickleCodec()"

    def dump_bodies(self, records: Sequence[_wire.Record]) -> list[bytes]:
        """The pickled records (payloads without their header)."""
        dumps = pickle.dumps
        return [dumps(record, PROTOCOL) for record in records]

    def load_records(self, bodies: Sequence[bytes | _wire.Failed]) -> list[object]:
        """The unpickled records; ``Failed`` in place of a body that does not
        unpickle (a ``Failed`` given stays)."""
        return _wire.load_each(bodies, pickle.loads, _unpickle_error)

    def encode_error(self, task: Task, error: Exception) -> EncodeError:
        """The error naming the kwarg of ``task`` that pickle cannot serialize."""
        return _wire.encode_error(self.name, task, error, _dump)


def _unpickle_error(error: Exception) -> DecodeError:
    return DecodeError(f"cannot unpickle payload: {type(error).__name__}: {error}")
