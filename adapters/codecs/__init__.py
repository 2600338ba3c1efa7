"""Codecs: how tasks become bytes on the broker, composed by wrapping.

A serializer (``PickleCodec``, ``MsgpackCodec``, ``JsonCodec``), optionally wrapped
by one compressor (``ZlibCodec``, ``GzipCodec``, ``Bz2Codec``, ``LzmaCodec``),
optionally wrapped by ``HmacSigner``::

    HmacSigner(ZlibCodec(PickleCodec()), key=secret)

Every payload starts with a small header naming the composition, so a mismatch is a
clear ``ForeignPayloadError``. ``MsgpackCodec`` is imported lazily: importing this
package does not need the msgpack library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .bz2 import Bz2Codec
from .gzip import GzipCodec
from .hmac import HmacSigner
from .json import JsonCodec
from .lzma import LzmaCodec
from .pickle import PickleCodec
from .zlib import ZlibCodec

if TYPE_CHECKING:
    from .msgpack import MsgpackCodec

__all__ = [
    "Bz2Codec",
    "GzipCodec",
    "HmacSigner",
    "JsonCodec",
    "LzmaCodec",
    "MsgpackCodec",
    "PickleCodec",
    "ZlibCodec",
]


def __getattr__(name: str) -> Any:
    if name == "MsgpackCodec":
        from .msgpack import MsgpackCodec  # noqa: PLC0415 - msgpack is optional

        return MsgpackCodec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
