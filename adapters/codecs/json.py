"""JsonCodec: tasks as UTF-8 JSON, readable by anything and by people."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sergeant.errors import DecodeError, EncodeError
from sergeant.task import Task

from . import _frame, _wire

# Built once: json.dumps with non-default options builds an encoder per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_DECODER = json.JSONDecoder()


def _dump(value: object) -> bytes:
    # The whole way a body takes (``dump_bodies``): a lone surrogate passes the
    # JSON encoder and fails only the UTF-8 step, which must name its kwarg too.
    return _ENCODER.encode(value).encode()


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

    def dump_bodies(self, records: Sequence[_wire.Record]) -> list[bytes]:
        """The JSON arrays of the records (payloads without their header)."""
        encode = _ENCODER.encode
        return [encode(record).encode() for record in records]

    def load_records(self, bodies: Sequence[bytes | _wire.Failed]) -> list[object]:
        """The parsed records; ``Failed`` in place of a body that is not UTF-8
        JSON (a ``Failed`` given stays)."""
        return _wire.load_each(bodies, _parse, _parse_error)

    def encode_error(self, task: Task, error: Exception) -> EncodeError:
        """The error naming the kwarg of ``task`` that JSON cannot represent."""
        return _wire.encode_error(self.name, task, error, _dump)


def _parse(body: bytes) -> object:
    # Decode as UTF-8 explicitly: json.loads(bytes) would guess UTF-16/32 from the
    # first bytes, and a corrupt payload should not be guessed at.
    return _DECODER.decode(str(body, "utf-8"))


def _parse_error(error: Exception) -> DecodeError:
    return DecodeError(f"cannot parse JSON payload: {type(error).__name__}: {error}")
