"""GzipCodec: gzip-format compression around another codec."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

from . import _compressor, _frame


class GzipCodec(_compressor.CompressorCodec):
    """Compresses another codec's output in the gzip format: ``GzipCodec(JsonCodec())``.

    Same DEFLATE as zlib in a gzip wrapper with a CRC-32 (12 bytes more); choose it
    when something outside sergeant reads the bodies with gzip tools. The gzip
    timestamp is fixed at 0 so equal tasks encode to equal bytes.

    Args:
        inner: the codec to wrap (a serializer).
        level: 0 (store) to 9 (smallest); 6 by default.
        max_inflated: the most bytes one payload may inflate to; a payload past
            it is refused (DecodeError), as is a task that encodes past it.

    Raises:
        ConfigError: bad level or max_inflated, or ``inner`` is compressed or
            signed already.
    """

    COMPRESSOR = _frame.GZIP
    LEVELS = range(10)
    DEFAULT_LEVEL = 6

    def _compress(self, data: bytes) -> bytes:
        return gzip.compress(data, self.level, mtime=0)

    def _decompressor(self) -> Any:
        return zlib.decompressobj(wbits=31)  # one gzip member, as encode writes
