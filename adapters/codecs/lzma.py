"""LzmaCodec: LZMA (xz) compression around another codec."""

from __future__ import annotations

import lzma
from typing import Any

from . import _compressor, _frame


class LzmaCodec(_compressor.CompressorCodec):
    """Compresses another codec's output in the xz format: ``LzmaCodec(PickleCodec())``.

    The best ratio on large payloads, and the slowest: setting up the compressor
    dominates on small tasks (around a millisecond per task at presets 1 to 6, tens
    of milliseconds at 9), so use it for big kwargs, not for many small ones. The xz
    stream carries a CRC-64.

    Args:
        inner: the codec to wrap (a serializer).
        level: the xz preset, 0 (fast) to 9 (smallest); 6 by default.
        max_inflated: the most bytes one payload may inflate to; a payload past
            it is refused (DecodeError), as is a task that encodes past it.

    Raises:
        ConfigError: bad level or max_inflated, or ``inner`` is compressed or
            signed already.
    """

    COMPRESSOR = _frame.LZMA
    LEVELS = range(10)
    DEFAULT_LEVEL = 6

    def _compress(self, data: bytes) -> bytes:
        return lzma.compress(data, preset=self.level)

    def _decompressor(self) -> Any:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
