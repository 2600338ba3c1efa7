"""MsgpackCodec: a compact, language-neutral serializer that never executes code.

Needs the ``msgpack`` package (``pip install sergeant[msgpack]``).

Decoding never runs code, but it does not make an open broker safe: a forged
payload can still carry any kwargs, or int-keyed maps built to collide in a dict
(msgpack's ``strict_map_key`` guard is off so that int keys round-trip). Sign with
``HmacSigner`` when untrusted parties can write to the broker.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence

import msgpack

from sergeant.errors import DecodeError, EncodeError
from sergeant.task import Task

from . import _frame, _wire


def _dump(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


class MsgpackCodec(_frame.FramedCodec):
    """Serializes tasks with MessagePack: compact, portable, never executes code.

    Carries None, bool, int (signed or unsigned 64-bit), float, str, bytes (they come
    back as bytes), lists and dicts (with str or int keys), nested. Tuples come back
    as lists, except as dict keys, where they come back as tuples. Anything else
    (sets, datetimes, objects, ints beyond 64 bits, strs with lone surrogates) is
    refused with ``EncodeError``.
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

    def dump_bodies(self, records: Sequence[_wire.Record]) -> list[bytes]:
        """The packed records (payloads without their header)."""
        packer = getattr(self._local, "packer", None)
        if packer is None:
            packer = self._packer()
        pack = packer.pack
        try:
            return [pack(record) for record in records]
        except Exception:  # TypeError, OverflowError, UnicodeEncodeError...
            packer.reset()  # a failed pack may leave half a record in its buffer
            raise

    def load_records(self, bodies: Sequence[bytes | _wire.Failed]) -> list[object]:
        """The unpacked records; ``Failed`` in place of a body that does not
        unpack (a ``Failed`` given stays).

        A map with an array key (a tuple key when packed) cannot be built as a
        dict with a list key; such a body, on the rare path of a failed one, is
        read again with its array keys made tuples.
        """
        records = _wire.load_each(bodies, _unpack, _unpack_error)
        for index, record in enumerate(records):
            body = bodies[index]
            if type(record) is _wire.Failed and type(body) is not _wire.Failed:
                try:
                    records[index] = _unpack_tuple_keys(body)
                except Exception:  # the first error stands
                    continue
        return records

    def encode_error(self, task: Task, error: Exception) -> EncodeError:
        """The error naming the kwarg of ``task`` that msgpack cannot pack."""
        return _wire.encode_error(self.name, task, error, _dump)


# strict_map_key=False: whatever encode accepts must decode, and packing allows
# int keys (see the module docstring for the cost). A partial stays in C.
_unpack = functools.partial(msgpack.unpackb, raw=False, strict_map_key=False)


def _tuple_keys(pairs: list[tuple[object, object]]) -> dict[object, object]:
    return {_frozen(key): value for key, value in pairs}


def _frozen(key: object) -> object:
    return tuple(_frozen(k) for k in key) if type(key) is list else key


_unpack_tuple_keys = functools.partial(
    msgpack.unpackb, raw=False, strict_map_key=False, object_pairs_hook=_tuple_keys
)


def _unpack_error(error: Exception) -> DecodeError:
    return DecodeError(
        f"cannot unpack msgpack payload: {type(error).__name__}: {error}"
    )
