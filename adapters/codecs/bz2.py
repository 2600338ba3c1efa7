"""Bz2Codec: bzip2 compression around another codec."""

from __future__ import annotations

import bz2
from typing import Any

from . import _compressor, _frame


class Bz2Codec(_compressor.CompressorCodec):
    """Compresses another codec's output with bzip2: ``Bz2Codec(PickleCodec())``.

    Smaller than zlib on large, repetitive payloads and several times slower; on
    small tasks its ~40-byte stream overhead makes payloads *larger*.

    Args:
        inner: the codec to wrap (a serializer).
        level: 1 to 9 (block size in 100 kB units); 9 by default.
        max_inflated: the most bytes one payload may inflate to; a payload past
            it is refused (DecodeError), as is a task that encodes past it.

    Raises:
        ConfigError: bad level or max_inflated, or ``inner`` is compressed or
            signed already.
    """

    COMPRESSOR = _frame.BZ2
    LEVELS = range(1, 10)
    DEFAULT_LEVEL = 9

    def _compress(self, data: bytes) -> bytes:
        return bz2.compress(data, self.level)

    def _decompressor(self) -> Any:
        return bz2.BZ2Decompressor()
