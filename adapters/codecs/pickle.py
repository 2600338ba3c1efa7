"""PickleCodec: the default serializer; carries any picklable kwarg.

Security: unpickling runs code chosen by whoever wrote the payload. An unsigned
pickle codec is only for brokers that nobody untrusted can write to. Anywhere else,
sign: ``HmacSigner(PickleCodec(), key=...)`` rejects a forged payload before it is
unpickled.
"""

from __future__ import annotations

import pickle

from sergeant.errors import DecodeError
from sergeant.task import Task

from . import _frame, _wire
from ._frame import HEADER_SIZE

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

    # encode and decode repeat encode_body/decode_body with the header added, rather
    # than inheriting FramedCodec's, which call them: one Python call less per task
    # on the default codec's hot paths (bulk pushes, batch decodes).

    def encode(self, task: Task) -> bytes:
        """Serialize ``task`` into a framed payload (header + pickled fields).

        Raises:
            EncodeError: a kwarg cannot be pickled; the message names it and its type.
        """
        fields = _wire.to_fields(task)
        try:
            return self._prefix + pickle.dumps(fields, PROTOCOL)
        except Exception as error:  # pickle raises many types: TypeError, ...
            raise _wire.encode_error(self.name, task, error, _dump) from error

    def decode(self, data: bytes) -> Task:
        """Rebuild a task from a payload this codec wrote.

        Raises:
            DecodeError: corrupt or truncated data; ``ForeignPayloadError`` if
                another codec wrote it. Nothing else escapes.
        """
        if data[:HEADER_SIZE] != self._prefix:
            raise _frame.mismatch(data, self.header)
        try:
            fields = pickle.loads(data[HEADER_SIZE:])
        except Exception as error:  # corrupt pickles raise anything
            raise _unpickle_error(error) from error
        return _wire.from_fields(fields)

    def encode_body(self, task: Task) -> bytes:
        """The pickled field tuple (the payload without its header).

        Raises:
            EncodeError: a kwarg cannot be pickled; the message names it and its type.
        """
        fields = _wire.to_fields(task)
        try:
            return pickle.dumps(fields, PROTOCOL)
        except Exception as error:  # pickle raises many types: TypeError, ...
            raise _wire.encode_error(self.name, task, error, _dump) from error

    def decode_body(self, body: bytes) -> Task:
        """A task from a pickled field tuple.

        Raises:
            DecodeError: the body does not unpickle into a task record.
        """
        try:
            fields = pickle.loads(body)
        except Exception as error:  # corrupt pickles raise anything
            raise _unpickle_error(error) from error
        return _wire.from_fields(fields)


def _unpickle_error(error: Exception) -> DecodeError:
    return DecodeError(f"cannot unpickle payload: {type(error).__name__}: {error}")
