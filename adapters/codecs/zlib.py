"""ZlibCodec: DEFLATE compression around another codec; the fast general choice."""

from __future__ import annotations

import zlib
from typing import Any

from . import _compressor, _frame


class ZlibCodec(_compressor.CompressorCodec):
    """Compresses another codec's output with zlib: ``ZlibCodec(MsgpackCodec())``.

    The zlib stream carries an Adler-32 checksum, so most corruption is caught.

    Args:
        inner: the codec to wrap (a serializer).
        level: 0 (store) to 9 (smallest); 6 (the default) is zlib's balance of
            speed and size.
        max_inflated: the most bytes one payload may inflate to; a payload past
            it is refused (DecodeError), as is a task that encodes past it.

    Raises:
        ConfigError: bad level or max_inflated, or ``inner`` is compressed or
            signed already.
    """

    COMPRESSOR = _frame.ZLIB
    LEVELS = range(10)
    DEFAULT_LEVEL = 6

    def _compress(self, data: bytes) -> bytes:
        return zlib.compress(data, self.level)

    def _decompressor(self) -> Any:
        return zlib.decompressobj()
