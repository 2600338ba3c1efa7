"""The shared shape of the compressor wrappers (zlib, gzip, bz2, lzma)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from sergeant.errors import ConfigError, DecodeError, EncodeError
from sergeant.task import Task

from . import _frame, _wire


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

    def dump_bodies(self, records: Sequence[_wire.Record]) -> list[bytes]:
        """The inner codec's bodies, compressed."""
        compress = self._compress
        return [compress(body) for body in self._inner.dump_bodies(records)]

    def load_records(self, bodies: Sequence[bytes | _wire.Failed]) -> list[object]:
        """Decompress, then let the inner codec read the records; ``Failed`` in
        place of a body that is not a valid stream of this compressor."""
        inner = _wire.load_each(bodies, self._decompress, self._failed)
        return self._inner.load_records(inner)  # type: ignore[arg-type]

    def encode_error(self, task: Task, error: Exception) -> EncodeError:
        """The inner serializer's error: it is the one that could not encode."""
        return self._inner.encode_error(task, error)

    def _failed(self, error: Exception) -> DecodeError:
        reason = f"{type(error).__name__}: {error}"
        return DecodeError(f"cannot decompress {self.name} payload: {reason}")
