"""The shared shape of the compressor wrappers (zlib, gzip, bz2, lzma)."""

from __future__ import annotations

from typing import ClassVar

from sergeant.errors import ConfigError, DecodeError
from sergeant.task import Task

from . import _frame


class CompressorCodec(_frame.FramedCodec):
    """Compresses the body of the codec it wraps; the header records both layers.

    Subclasses name their compressor id and provide ``_compress``/``_decompress``.
    """

    COMPRESSOR: ClassVar[int]
    LEVELS: ClassVar[range]

    def __init__(self, inner: _frame.Layer, level: int) -> None:
        cls = type(self).__name__
        header = _frame.inner_header(inner, cls)
        if type(level) is not int or level not in self.LEVELS:
            raise ConfigError(
                f"{cls} level must be in {self.LEVELS.start}..{self.LEVELS.stop - 1},"
                f" got {level!r}"
            )
        self._set_header(header.compressed(self.COMPRESSOR))
        self._inner = inner
        self.level = level

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r}, level={self.level})"

    def _compress(self, data: bytes) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decompress(self, data: bytes) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_body(self, task: Task) -> bytes:
        """The inner codec's body, compressed.

        Raises:
            EncodeError: the inner serializer cannot encode a kwarg.
        """
        return self._compress(self._inner.encode_body(task))

    def decode_body(self, body: bytes) -> Task:
        """Decompress, then let the inner codec decode.

        Raises:
            DecodeError: the body is not a valid stream of this compressor, or the
                inner codec rejects what it holds.
        """
        try:
            data = self._decompress(body)
        except Exception as error:  # each library has its own, version-dependent set
            reason = f"{type(error).__name__}: {error}"
            raise DecodeError(
                f"cannot decompress {self.name} payload: {reason}"
            ) from error
        return self._inner.decode_body(data)
