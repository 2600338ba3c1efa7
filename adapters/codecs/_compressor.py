"""The shared shape of the compressor wrappers (zlib, gzip, bz2, lzma)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from sergeant.errors import ConfigError, DecodeError, EncodeError
from sergeant.task import Task

from . import _frame, _wire

# The default bound on what one payload may inflate to. A forged payload of a few
# kilobytes can otherwise inflate to gigabytes (a decompression bomb) in the
# worker, which ``max_payload_bytes`` cannot see: it measures the stored size.
MAX_INFLATED = 64 * 2**20


class CompressorCodec(_frame.FramedCodec):
    """Compresses the body of the codec it wraps; the header records both layers.

    Subclasses name their compressor id and provide ``_compress`` and
    ``_decompressor()``: a fresh streaming decompressor (zlib's, bz2's or lzma's
    shape: ``decompress(data, max_length=)`` and ``eof``), which lets inflating
    stop past ``max_inflated``.
    """

    COMPRESSOR: ClassVar[int]
    LEVELS: ClassVar[range]
    DEFAULT_LEVEL: ClassVar[int]

    def __init__(
        self,
        inner: _frame.Layer,
        *,
        level: int | None = None,
        max_inflated: int = MAX_INFLATED,
    ) -> None:
        if level is None:
            level = self.DEFAULT_LEVEL
        cls = type(self).__name__
        header = _frame.inner_header(inner, cls)
        if type(level) is not int or level not in self.LEVELS:
            raise ConfigError(
                f"{cls} level must be in {self.LEVELS.start}..{self.LEVELS.stop - 1},"
                f" got {level!r}"
            )
        if type(max_inflated) is not int or max_inflated < 1:
            raise ConfigError(
                f"{cls} max_inflated must be an int >= 1 (bytes), got {max_inflated!r}"
            )
        self._set_header(header.compressed(self.COMPRESSOR))
        self._inner = inner
        self.level = level
        self.max_inflated = max_inflated

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._inner!r}, level={self.level})"

    def _compress(self, data: bytes) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decompressor(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decompress(self, data: bytes) -> bytes:
        """The whole stream ``data`` holds, refused past ``max_inflated`` bytes."""
        limit = self.max_inflated
        stream = self._decompressor()
        out: bytes = stream.decompress(data, max_length=limit + 1)
        if len(out) > limit:
            raise ValueError(f"inflates past max_inflated ({limit} bytes)")
        if not stream.eof:
            raise ValueError("incomplete or truncated stream")
        return out

    def dump_bodies(self, records: Sequence[_wire.Record]) -> list[bytes]:
        """The inner codec's bodies, compressed.

        Raises:
            EncodeError: a body over ``max_inflated``: it could not be decoded.
        """
        compress, limit = self._compress, self.max_inflated
        bodies = self._inner.dump_bodies(records)
        for body in bodies:
            if len(body) > limit:
                raise EncodeError(
                    f"a task encodes to {len(body)} bytes before compression, over "
                    f"{type(self).__name__}.max_inflated ({limit}): no worker could "
                    "decode it"
                )
        return [compress(body) for body in bodies]

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
