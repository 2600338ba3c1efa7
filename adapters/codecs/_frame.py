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
from collections.abc import Sequence
from typing import Protocol

import attrs

from sergeant.errors import (
    ConfigError,
    DecodeError,
    EncodeError,
    ForeignPayloadError,
    SignatureError,
)
from sergeant.task import Task

from . import _wire
from ._wire import Failed, Record

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


# What a payload may be: anything else is refused with a DecodeError, not a crash.
BYTES = (bytes, bytearray, memoryview)


def mismatch(data: object, expected: Header) -> DecodeError:
    """The error for a payload that does not start with ``expected.prefix``.

    Only called on the error path, so it can afford to parse and explain.
    """
    reads = expected.name
    if not isinstance(data, BYTES):
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
    """What a wrapping codec needs from the codec it wraps, a batch at a time.

    Every serializer and compressor in this package provides it: wrappers call the
    inner codec's body methods directly, so each layer adds one header, not one
    header per layer, and no payload is re-framed on the way through. The methods
    take whole batches because that is how producers push and workers reserve:
    one loop per layer instead of a chain of calls per task.
    """

    @property
    def header(self) -> Header: ...

    def dump_bodies(self, records: Sequence[Record]) -> list[bytes]:
        """The bodies (payloads without header) of ``records`` (``_wire.records``).

        May raise anything the serializer raises; ``encode_bodies`` turns that
        into an EncodeError naming the task and kwarg at fault.
        """
        ...

    def load_records(self, bodies: Sequence[bytes | Failed]) -> list[object]:
        """The record each body holds, or ``Failed`` with the reason in its place;
        a ``Failed`` among ``bodies`` stays as it is. Raises nothing."""
        ...

    def encode_error(self, task: Task, error: Exception) -> EncodeError:
        """The EncodeError for ``task``, which ``dump_bodies`` failed on with
        ``error``: it names the kwarg at fault."""
        ...


def encode_bodies(layer: Layer, tasks: Sequence[Task]) -> list[bytes]:
    """``layer``'s bodies of ``tasks``, or the EncodeError of the first at fault.

    Raises:
        EncodeError: a task's kwargs or priority cannot travel, or the serializer
            cannot encode one of its kwargs (the message names task and kwarg).
    """
    records = _wire.records(tasks)
    try:
        return layer.dump_bodies(records)
    except Exception as error:  # serializers raise many types: TypeError, ...
        # The error path: find the task at fault, one by one, so the message
        # can name it and its kwarg.
        for task, record in zip(tasks, records, strict=True):
            try:
                layer.dump_bodies((record,))
            except Exception as culprit:
                raise layer.encode_error(task, culprit) from culprit
        raise EncodeError(f"{layer.header.name} cannot encode: {error}") from error


def single(results: list[Task | DecodeError]) -> Task:
    """The one task of a one-payload ``decode_many``, or its error, raised."""
    task = results[0]
    if isinstance(task, DecodeError):
        raise task
    return task


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

    Subclasses set ``header`` and implement the ``Layer`` methods; this class adds
    and checks the six header bytes. Encoding or decoding one task goes through
    the same batch methods with one item: a single code path, and the batch
    (``SupportsBatchCoding``) is the common case. Private base class: the port is
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
        return self._prefix + encode_bodies(self, (task,))[0]

    def encode_many(self, tasks: Sequence[Task]) -> list[bytes]:
        """``encode`` of every task.

        Raises:
            EncodeError: as ``encode`` would, for the first task at fault.
        """
        prefix = self._prefix
        return [prefix + body for body in encode_bodies(self, tasks)]

    def decode(self, data: bytes) -> Task:
        """Rebuild a task from a payload this composition wrote.

        Raises:
            DecodeError: corrupt or truncated data; ``ForeignPayloadError`` if
                another codec wrote it. Nothing else escapes.
        """
        if not isinstance(data, BYTES) or data[:HEADER_SIZE] != self._prefix:
            raise mismatch(data, self.header)
        return single(_wire.tasks_of(self.load_records((data[HEADER_SIZE:],))))

    def decode_many(self, payloads: Sequence[bytes]) -> list[Task | DecodeError]:
        """``decode`` of every payload, its DecodeError in place of a task."""
        prefix, header = self._prefix, self.header
        # A bytes slice, not a memoryview: for task-sized payloads the copy is
        # cheaper than the view (measured), and every library takes either.
        try:
            bodies: list[bytes | Failed] = [
                data[HEADER_SIZE:]
                if data[:HEADER_SIZE] == prefix
                else Failed(mismatch(data, header))
                for data in payloads
            ]
        except TypeError:  # something that is not bytes: checked one by one
            bodies = [
                data[HEADER_SIZE:]
                if isinstance(data, BYTES) and data[:HEADER_SIZE] == prefix
                else Failed(mismatch(data, header))
                for data in payloads
            ]
        return _wire.tasks_of(self.load_records(bodies))

    # The Layer methods each subclass implements.

    def dump_bodies(self, records: Sequence[Record]) -> list[bytes]:
        """The payloads without their header (see ``Layer``)."""
        raise NotImplementedError  # pragma: no cover

    def load_records(self, bodies: Sequence[bytes | Failed]) -> list[object]:
        """Records from payloads without their header (see ``Layer``)."""
        raise NotImplementedError  # pragma: no cover

    def encode_error(self, task: Task, error: Exception) -> EncodeError:
        """The EncodeError naming the kwarg at fault (see ``Layer``)."""
        raise NotImplementedError  # pragma: no cover
