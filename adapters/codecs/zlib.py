"""ZlibCodec: DEFLATE compression around another codec; the fast general choice."""

from __future__ import annotations

import zlib

from . import _compressor, _frame


class ZlibCodec(_compressor.CompressorCodec):
    """Compresses another codec's output with zlib: ``ZlibCodec(MsgpackCodec())``.

    The zlib stream carries an Adler-32 checksum, so most corruption is caught.

    Args:
        inner: the codec to wrap (a serializer).
        level: 0 (store) to 9 (smallest); 6 is zlib's balance of speed and size.

    Raises:
        ConfigError: bad level, or ``inner`` is compressed or signed already.
    """

    COMPRESSOR = _frame.ZLIB
    LEVELS = range(10)

    def __init__(self, inner: _frame.Layer, *, level: int = 6) -> None:
        super().__init__(inner, level)

    def _compress(self, data: bytes) -> bytes:
        return zlib.compress(data, self.level)

    def _decompress(self, data: bytes) -> bytes:
        return zlib.decompress(data)
