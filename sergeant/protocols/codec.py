"""The Codec port: tasks to bytes and back.

A codec is a serializer (pickle, msgpack, json) optionally wrapped by a compressor
and a signer, all satisfying this one protocol:
``HmacSigner(ZlibCodec(PickleCodec()), key=...)``.
The encoded form starts with a small header naming the format version, serializer,
compressor and whether it is signed, so that a payload made by another codec fails
with an error naming both, never decodes into garbage.

Every implementation passes ``contract_tests/test_codec.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, cast, runtime_checkable

from sergeant.errors import DecodeError
from sergeant.task import Task


@runtime_checkable
class Codec(Protocol):
    """**Port**: turns a Task into bytes and back."""

    @property
    def name(self) -> str:
        """What this codec writes, e.g. ``"pickle+zlib+hmac"``; used in errors."""
        ...

    def encode(self, task: Task) -> bytes:
        """Serialize ``task``.

        Raises:
            EncodeError: a kwarg cannot be represented by this serializer.
        """
        ...

    def decode(self, data: bytes) -> Task:
        """Rebuild a task from ``data``.

        Raises:
            DecodeError: the data is corrupt, truncated, written by another codec
                (``ForeignPayloadError``) or not signed by the key (``SignatureError``).
                Only ``DecodeError`` escapes, whatever the bytes.
        """
        ...


@runtime_checkable
class SupportsBatchCoding(Protocol):
    """**Capability**: a codec that encodes and decodes a whole batch in one call.

    Producers push and workers reserve in batches; a codec that takes the batch
    at once pays its per-call overhead once, not once per task (for pickle that
    is about a fifth of decoding: ``python -m benchmark.codecs``). The results
    must equal encoding or decoding the items one by one. Callers go through
    ``encode_all`` and ``decode_all``, which fall back to ``encode``/``decode``
    for a codec without this capability.
    """

    def encode_many(self, tasks: Sequence[Task]) -> list[bytes]:
        """``[encode(task) for task in tasks]``.

        Raises:
            EncodeError: as ``encode`` would for the first task it cannot encode.
        """
        ...

    def decode_many(self, payloads: Sequence[bytes]) -> list[Task | DecodeError]:
        """What ``decode`` makes of each payload: its Task, or in its place the
        ``DecodeError`` that ``decode`` would raise (one bad payload must not cost
        the rest of a batch). Nothing else escapes."""
        ...


def encode_all(codec: Codec, tasks: Sequence[Task]) -> list[bytes]:
    """Every task encoded, through ``encode_many`` when the codec has it.

    Raises:
        EncodeError: a task cannot be encoded (nothing is returned for any).
    """
    many = getattr(codec, "encode_many", None)
    if many is not None:
        return cast("list[bytes]", many(tasks))
    encode = codec.encode
    return [encode(task) for task in tasks]


def decode_all(codec: Codec, payloads: Sequence[bytes]) -> list[Task | DecodeError]:
    """Every payload decoded, or its DecodeError in its place (see
    ``SupportsBatchCoding.decode_many``), in one call when the codec can."""
    many = getattr(codec, "decode_many", None)
    if many is not None:
        return cast("list[Task | DecodeError]", many(payloads))
    decode = codec.decode
    out: list[Task | DecodeError] = []
    for payload in payloads:
        try:
            out.append(decode(payload))
        except DecodeError as error:
            out.append(error)
    return out
