"""JsonCodec: tasks as UTF-8 JSON, readable by anything and by people."""

from __future__ import annotations

import json

from sergeant.errors import DecodeError
from sergeant.task import Task

from . import _frame, _wire

# Built once: json.dumps with non-default options builds an encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_DECODER = json.JSONDecoder()


def _dump(value: object) -> str:
    return _ENCODER.encode(value)


class JsonCodec(_frame.FramedCodec):
    """Serializes tasks as compact UTF-8 JSON; slower than msgpack, but plain text.

    Carries None, bool, int (any size), float (including inf and nan, written as
    JSON's common ``Infinity``/``NaN`` extension), str, lists and dicts with str
    keys, nested. Tuples come back as lists; non-str dict keys come back as strs
    (JSON's own rule). **bytes are not supported** (JSON has no binary type: encode
    them yourself, e.g. base64, or use msgpack) and raise ``EncodeError``, as do
    sets, datetimes, other objects and strs with lone surrogates.
    """

    def __init__(self) -> None:
        self._set_header(_frame.Header(_frame.JSON))

    def __repr__(self) -> str:
        return "JsonCodec()"

    def encode_body(self, task: Task) -> bytes:
        """The JSON array of the fields (the payload without its header).

        Raises:
            EncodeError: a kwarg is not JSON-serializable; the message names it and
                its type.
        """
        fields = _wire.to_fields(task)
        try:
            return _ENCODER.encode(fields).encode()
        except Exception as error:  # TypeError, ValueError, UnicodeEncodeError...
            raise _wire.encode_error(self.name, task, error, _dump) from error

    def decode_body(self, body: bytes) -> Task:
        """A task from a JSON array of its fields.

        Raises:
            DecodeError: the body is not UTF-8 JSON holding a task record.
        """
        try:
            # Decode as UTF-8 explicitly: json.loads(bytes) would guess UTF-16/32
            # from the first bytes, and a corrupt payload should not be guessed at.
            fields = _DECODER.decode(str(body, "utf-8"))
        except Exception as error:  # UnicodeDecodeError, JSONDecodeError, Recursion...
            raise DecodeError(
                f"cannot parse JSON payload: {type(error).__name__}: {error}"
            ) from error
        return _wire.from_fields(fields)
