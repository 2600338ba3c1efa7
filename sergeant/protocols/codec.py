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

from typing import Protocol, runtime_checkable

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
