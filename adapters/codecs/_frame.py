"""The frame every sergeant codec writes, and the layer interface codecs compose by.

An encoded task is ``header | [mac] | body``. The header is six bytes::

    offset  size  field
    0       2     magic b"SG": "this is a sergeant payload"
    2       1     format version (1)
    3       1     serializer id (1 pickle, 2 msgpack, 3 json)
    4       1     compressor id (0 none, 1 zlib, 2 gzip, 3 bz2, 4 lzma)
    5       1     flags; bit 0 = signed (a 32-byte HMAC-SHA256 follows the header);
                  the other bits are reserved and must be zero

Why a header at all: a worker reading a queue filled by a producer with another
codec must fail with an error naming both codecs, not unpickle msgpack bytes into
garbage (or worse). Each layer's header is fixed when the codec is built (a
compressor derives its header from the codec it wraps), so decoding checks the
whole header with one byte comparison and only the error path parses it.

This is the only module that knows the layout; the codecs use ``Header`` and
``mismatch``.
"""

from __future__ import annotations

import struct
from typing import Protocol

import attrs

from sergeant.errors import (
    ConfigError,
    DecodeError,
    ForeignPayloadError,
    SignatureError,
)
from sergeant.task import Task

MAGIC = b"SG"
VERSION = 1
HEADER_SIZE = 6
MAC_SIZE = 32  # HMAC-SHA256
SIGNED = 0x01

PICKLE, MSGPACK, JSON = 1, 2, 3
NO_COMPRESSION, ZLIB, GZIP, BZ2, LZMA = 0, 1, 2, 3, 4

SERIALIZERS = {PICKLE: "pickle", MSGPACK: "msgpack", JSON: "json"}
COMPRESSORS = {NO_COMPRESSION: "", ZLIB: "zlib", GZIP: "gzip", BZ2: "bz2", LZMA: "lzma"}

_STRUCT = struct.Struct(">2sBBBB")


def _describe(serializer: int, compressor: int, flags: int) -> str:
    """A codec name for header values, including ones this version does not know."""
    parts = [SERIALIZERS.get(serializer, f"unknown serializer #{serializer}")]
    if compressor != NO_COMPRESSION:
        parts.append(COMPRESSORS.get(compressor, f"unknown compressor #{compressor}"))
    if flags & SIGNED:
        parts.append("hmac")
    if flags & ~SIGNED:
        parts.append(f"unknown flags {flags & ~SIGNED:#04x}")
    return "+".join(parts)


@attrs.frozen
class Header:
    """What a codec writes in (and expects from) the first bytes of a payload.

    Attributes:
        serializer: serializer id (``PICKLE``, ``MSGPACK``, ``JSON``).
        compressor: compressor id, ``NO_COMPRESSION`` for a bare serializer.
        signed: whether an HMAC follows the header.
    """

    serializer: int
    compressor: int = NO_COMPRESSION
    signed: bool = False

    @property
    def name(self) -> str:
        """The codec name, inner layer first: ``"pickle+zlib+hmac"``."""
        return _describe(self.serializer, self.compressor, SIGNED * self.signed)

    @property
    def prefix(self) -> bytes:
        """The header bytes; codecs compute them once and keep them."""
        flags = SIGNED if self.signed else 0
        return _STRUCT.pack(MAGIC, VERSION, self.serializer, self.compressor, flags)

    @property
    def body_offset(self) -> int:
        """Where the body starts: after the header and, if signed, the MAC."""
        return HEADER_SIZE + MAC_SIZE * self.signed

    def compressed(self, compressor: int) -> Header:
        """This header with ``compressor`` added.

        Raises:
            ConfigError: already compressed, or already signed (the signer must be
                the outermost layer so the MAC is checked before decompression).
        """
        what = COMPRESSORS[compressor]
        if self.signed:
            raise ConfigError(
                f"cannot compress {self.name} with {what}: sign last, e.g. "
                f"HmacSigner({what.capitalize()}Codec(...)), so that the signature "
                "is checked before anything is decompressed"
            )
        if self.compressor != NO_COMPRESSION:
            raise ConfigError(f"cannot compress {self.name} again with {what}")
        return attrs.evolve(self, compressor=compressor)

    def with_signature(self) -> Header:
        """This header, signed.

        Raises:
            ConfigError: it is signed already.
        """
        if self.signed:
            raise ConfigError(f"{self.name} is signed already")
        return attrs.evolve(self, signed=True)


def mismatch(data: object, expected: Header) -> DecodeError:
    """The error for a payload that does not start with ``expected.prefix``.

    Only called on the error path, so it can afford to parse and explain.
    """
    reads = expected.name
    if not isinstance(data, bytes | bytearray | memoryview):
        return DecodeError(f"payload must be bytes, got {type(data).__name__}")
    if len(data) < HEADER_SIZE:
        return DecodeError(
            f"payload of {len(data)} bytes is shorter than sergeant's "
            f"{HEADER_SIZE}-byte header (truncated?); this codec reads {reads}"
        )
    magic, version, serializer, compressor, flags = _STRUCT.unpack_from(data)
    if magic != MAGIC:
        return DecodeError(
            f"payload does not start with sergeant's header (magic {magic!r}); "
            f"this codec reads {reads}"
        )
    if version != VERSION:
        return ForeignPayloadError(
            f"payload has format version {version}, this codec ({reads}) reads "
            f"version {VERSION}"
        )
    writer = _describe(serializer, compressor, flags)
    same_layers = (serializer, compressor) == (expected.serializer, expected.compressor)
    if expected.signed and same_layers and flags == 0:
        return SignatureError(
            f"payload is not signed: written by {writer}, this codec reads {reads}"
        )
    return ForeignPayloadError(
        f"payload was written by {writer}, this codec reads {reads}"
    )


class Layer(Protocol):
    """What a wrapping codec needs from the codec it wraps.

    Every serializer and compressor in this package provides it: wrappers call the
    inner codec's body methods directly, so each layer adds one header, not one
    header per layer, and no payload is re-framed on the way through.
    """

    @property
    def header(self) -> Header: ...

    def encode_body(self, task: Task) -> bytes: ...

    def decode_body(self, body: bytes) -> Task: ...


def inner_header(inner: object, wrapper: str) -> Header:
    """The header of the codec a wrapper is given, or a ConfigError saying why not.

    Raises:
        ConfigError: ``inner`` is not one of sergeant's framed codecs.
    """
    header = getattr(inner, "header", None)
    if not isinstance(header, Header):
        raise ConfigError(
            f"{wrapper} wraps one of sergeant's codecs (PickleCodec, MsgpackCodec, "
            f"JsonCodec, or a compressor around one), got {inner!r}"
        )
    return header


class FramedCodec:
    """Shared ``encode``/``decode`` of the serializers and compressors.

    Subclasses set ``header`` and implement ``encode_body``/``decode_body``; this
    class adds and checks the six header bytes. Private base class: the port is
    structural, nothing outside this package should rely on it.
    """

    header: Header
    _prefix: bytes

    def _set_header(self, header: Header) -> None:
        self.header = header
        self._prefix = header.prefix

    @property
    def name(self) -> str:
        """What this codec writes, e.g. ``"msgpack+zlib"``; used in error messages."""
        return self.header.name

    def encode(self, task: Task) -> bytes:
        """Serialize ``task`` into a framed payload.

        Raises:
            EncodeError: a kwarg cannot be represented by this serializer.
        """
        return self._prefix + self.encode_body(task)

    def decode(self, data: bytes) -> Task:
        """Rebuild a task from a payload this composition wrote.

        Raises:
            DecodeError: corrupt or truncated data; ``ForeignPayloadError`` if
                another codec wrote it. Nothing else escapes.
        """
        if data[:HEADER_SIZE] != self._prefix:
            raise mismatch(data, self.header)
        # A bytes slice, not a memoryview: for task-sized payloads the copy is
        # cheaper than the view (measured), and every library takes either.
        return self.decode_body(data[HEADER_SIZE:])

    def encode_body(self, task: Task) -> bytes:  # pragma: no cover - abstract
        """The payload without its header."""
        raise NotImplementedError

    def decode_body(self, body: bytes) -> Task:  # pragma: no cover - abstract
        """A task from a payload without its header."""
        raise NotImplementedError
