"""MsgpackCodec: a compact, language-neutral serializer that never executes code.

Needs the ``msgpack`` package (``pip install sergeant[msgpack]``).

Decoding never runs code, but it does not make an open broker safe: a forged
payload can still carry any kwargs, or int-keyed maps built to collide in a dict
(msgpack's ``strict_map_key`` guard is off so that int keys round-trip). Sign with
``HmacSigner`` when untrusted parties can write to the broker.
"""

from __future__ import annotations

import threading

import msgpack

from sergeant.errors import DecodeError
from sergeant.task import Task

from . import _frame, _wire


def _dump(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


class MsgpackCodec(_frame.FramedCodec):
    """Serializes tasks with MessagePack: compact, portable, never executes code.

    Carries None, bool, int (signed or unsigned 64-bit), float, str, bytes (they come
    back as bytes), lists and dicts (with str or int keys), nested. Tuples come back
    as lists. Anything else (sets, datetimes, objects, ints beyond 64 bits, strs
    with lone surrogates) is refused with ``EncodeError``.
    """

    def __init__(self) -> None:
        self._set_header(_frame.Header(_frame.MSGPACK))
        # A Packer reuses its buffer (twice as fast as packb) but is not safe to
        # share between threads, so each thread gets its own.
        self._local = threading.local()

    def __repr__(self) -> str:
        return "MsgpackCodec()"

    def _packer(self) -> msgpack.Packer:
        packer = msgpack.Packer(use_bin_type=True)
        self._local.packer = packer
        return packer

    def encode_body(self, task: Task) -> bytes:
        """The packed field array (the payload without its header).

        Raises:
            EncodeError: a kwarg cannot be packed; the message names it and its type.
        """
        packer = getattr(self._local, "packer", None)
        if packer is None:
            packer = self._packer()
        fields = _wire.to_fields(task)
        try:
            return packer.pack(fields)  # type: ignore[no-any-return]
        except Exception as error:  # TypeError, OverflowError, UnicodeEncodeError...
            packer.reset()
            raise _wire.encode_error(self.name, task, error, _dump) from error

    def decode_body(self, body: bytes) -> Task:
        """A task from a packed field array.

        Raises:
            DecodeError: the body does not unpack into a task record.
        """
        try:
            # strict_map_key=False: whatever encode accepts must decode, and
            # packing allows int keys (see the module docstring for the cost).
            fields = msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as error:  # corrupt input raises many types
            raise DecodeError(
                f"cannot unpack msgpack payload: {type(error).__name__}: {error}"
            ) from error
        return _wire.from_fields(fields)
