"""HmacSigner: signs payloads with a shared secret, and checks before decoding.

Why: decoding is where an attacker who can write to the broker strikes (a pickle
runs code when loaded, a compressed stream can be a decompression bomb). The
signer is always the outermost layer, and it verifies the HMAC-SHA256 of the
header and body, in constant time, before the inner codec sees a single byte; a
payload from anyone without the key is rejected with ``SignatureError`` and
dead-lettered by the worker, never unpickled or decompressed.
"""

from __future__ import annotations

import hmac

from sergeant.errors import ConfigError, SignatureError
from sergeant.task import Task

from . import _frame

MIN_KEY_SIZE = 16


class HmacSigner:
    """Signs another codec's payloads: ``HmacSigner(ZlibCodec(PickleCodec()), key=k)``.

    Configure the key as random bytes shared by every producer and worker of the
    queue, at least 16 bytes (32 recommended, e.g. ``secrets.token_bytes(32)``),
    kept out of the code: load it from a secret store or an environment variable
    (``bytes.fromhex(os.environ["SERGEANT_KEY"])``). Anyone holding the key can
    forge tasks, so give it only to the processes that produce or consume them.

    Signing proves who wrote a payload, not that nobody read it: kwargs are still
    readable on the broker. Payloads are ``header | 32-byte MAC | body``; the MAC
    covers the header too, so a payload cannot be relabelled as another codec's.

    Args:
        inner: the codec to sign (a serializer, or a compressor around one).
        key: the shared secret, at least 16 bytes.

    Raises:
        ConfigError: the key is not bytes or is shorter than 16 bytes, or ``inner``
            is signed already.
    """

    def __init__(self, inner: _frame.Layer, *, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray):
            raise ConfigError(f"HmacSigner key must be bytes, got {type(key).__name__}")
        if len(key) < MIN_KEY_SIZE:
            raise ConfigError(
                f"HmacSigner key must be at least {MIN_KEY_SIZE} bytes, got "
                f"{len(key)}: use secrets.token_bytes(32)"
            )
        self.header = _frame.inner_header(inner, "HmacSigner").with_signature()
        self._inner = inner
        self._prefix = self.header.prefix
        self._body_at = self.header.body_offset
        # The MAC of every payload starts with the same header: hash it once and
        # copy the state per payload (cheaper than hmac.digest over header+body).
        self._mac = hmac.new(bytes(key), self._prefix, "sha256")

    def __repr__(self) -> str:
        return f"HmacSigner({self._inner!r}, key=<hidden>)"

    @property
    def name(self) -> str:
        """What this codec writes, e.g. ``"pickle+zlib+hmac"``; used in errors."""
        return self.header.name

    def encode(self, task: Task) -> bytes:
        """Encode with the inner codec and sign.

        Raises:
            EncodeError: the inner serializer cannot encode a kwarg.
        """
        body = self._inner.encode_body(task)
        mac = self._mac.copy()
        mac.update(body)
        return b"".join((self._prefix, mac.digest(), body))

    def decode(self, data: bytes) -> Task:
        """Verify the signature, then decode with the inner codec.

        Raises:
            SignatureError: the payload is unsigned, or its MAC does not match
                (tampered, truncated, or signed with another key).
            ForeignPayloadError: another codec composition wrote it.
            DecodeError: the signed body is corrupt (a bug or a key leak).
        """
        if data[: _frame.HEADER_SIZE] != self._prefix:
            raise _frame.mismatch(data, self.header)
        body = data[self._body_at :]
        mac = self._mac.copy()
        mac.update(body)
        if not hmac.compare_digest(
            mac.digest(), data[_frame.HEADER_SIZE : self._body_at]
        ):
            raise SignatureError(
                f"payload signature does not match ({self.name}): tampered, "
                "truncated, or signed with another key"
            )
        return self._inner.decode_body(body)
