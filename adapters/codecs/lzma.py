"""LzmaCodec: LZMA (xz) compression around another codec."""

from __future__ import annotations

import lzma

from . import _compressor, _frame


class LzmaCodec(_compressor.CompressorCodec):
    """Compresses another codec's output in the xz format: ``LzmaCodec(PickleCodec())``.

    The best ratio on large payloads, and the slowest: setting up the compressor
    dominates on small tasks (around a millisecond per task at presets 1 to 6, tens
    of milliseconds at 9), so use it for big kwargs, not for many small ones. The xz
    stream carries a CRC-64.

    Args:
        inner: the codec to wrap (a serializer).
        level: the xz preset, 0 (fast) to 9 (smallest).
        max_inflated: the most bytes one payload may inflate to; a payload past
            it is refused (DecodeError), as is a task that encodes past it.

    Raises:
        ConfigError: bad level or max_inflated, or ``inner`` is compressed or
            signed already.
    """

    COMPRESSOR = _frame.LZMA
    LEVELS = range(10)

    def __init__(
        self,
        inner: _frame.Layer,
        *,
        level: int = 6,
        max_inflated: int = _compressor.MAX_INFLATED,
    ) -> None:
        super().__init__(inner, level, max_inflated)

    def _compress(self, data: bytes) -> bytes:
        return lzma.compress(data, preset=self.level)

    def _inflate(self, data: bytes, limit: int) -> bytes:
        stream = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        out = stream.decompress(data, max_length=limit + 1)
        if len(out) <= limit and not stream.eof:
            raise ValueError("incomplete or truncated xz stream")
        return out
