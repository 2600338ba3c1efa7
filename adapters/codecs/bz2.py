"""Bz2Codec: bzip2 compression around another codec."""

from __future__ import annotations

import bz2

from . import _compressor, _frame


class Bz2Codec(_compressor.CompressorCodec):
    """Compresses another codec's output with bzip2: ``Bz2Codec(PickleCodec())``.

    Smaller than zlib on large, repetitive payloads and several times slower; on
    small tasks its ~40-byte stream overhead makes payloads *larger*.

    Args:
        inner: the codec to wrap (a serializer).
        level: 1 to 9 (block size in 100 kB units).
        max_inflated: the most bytes one payload may inflate to; a payload past
            it is refused (DecodeError), as is a task that encodes past it.

    Raises:
        ConfigError: bad level or max_inflated, or ``inner`` is compressed or
            signed already.
    """

    COMPRESSOR = _frame.BZ2
    LEVELS = range(1, 10)

    def __init__(
        self,
        inner: _frame.Layer,
        *,
        level: int = 9,
        max_inflated: int = _compressor.MAX_INFLATED,
    ) -> None:
        super().__init__(inner, level, max_inflated)

    def _compress(self, data: bytes) -> bytes:
        return bz2.compress(data, self.level)

    def _inflate(self, data: bytes, limit: int) -> bytes:
        stream = bz2.BZ2Decompressor()
        out = stream.decompress(data, max_length=limit + 1)
        if len(out) <= limit and not stream.eof:
            raise ValueError("incomplete or truncated bzip2 stream")
        return out
