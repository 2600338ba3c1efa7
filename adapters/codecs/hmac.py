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
import os
from pathlib import Path

from sergeant.errors import ConfigError, SignatureError
from sergeant.task import Task

from . import _frame

MIN_KEY_SIZE = 16


class HmacSigner:
    """Signs another codec's payloads: ``HmacSigner(ZlibCodec(PickleCodec()), key=k)``.

    Configure the key as random bytes shared by every producer and worker of the
    queue, at least 16 bytes (32 recommended, e.g. ``secrets.token_bytes(32)``),
    kept out of the code: ``HmacSigner.from_env(inner)`` reads it, in hex, from
    ``$SERGEANT_HMAC_KEY``, ``HmacSigner.from_file(inner, path)`` from a mounted
    secret file; neither ever puts the key in a message. Anyone holding the key can
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

    @classmethod
    def from_env(
        cls, inner: _frame.Layer, variable: str = "SERGEANT_HMAC_KEY"
    ) -> HmacSigner:
        """A signer whose key is the hex string in environment ``variable``.

        Keeps the secret out of code and command lines (which ``ps`` shows).
        Error messages name the variable, never its value.

        Raises:
            ConfigError: the variable is unset, not hex, or too short a key.
        """
        text = os.environ.get(variable)
        if text is None:
            raise ConfigError(
                f"environment variable {variable} is not set: it must hold the "
                "HMAC key in hex (python -c 'import secrets; "
                "print(secrets.token_hex(32))')"
            )
        return cls(inner, key=_hex_key(text, f"environment variable {variable}"))

    @classmethod
    def from_file(cls, inner: _frame.Layer, path: str | os.PathLike[str]) -> HmacSigner:
        """A signer whose key is the hex string in file ``path`` (a mounted secret).

        Surrounding whitespace (a trailing newline) is ignored. Error messages
        name the file, never its content.

        Raises:
            ConfigError: the file cannot be read, is not hex, or is too short a key.
        """
        try:
            text = Path(path).read_text(encoding="ascii", errors="replace")
        except OSError as error:
            raise ConfigError(
                f"cannot read the HMAC key file {os.fspath(path)!r}: "
                f"{error.strerror or type(error).__name__}"
            ) from None
        return cls(inner, key=_hex_key(text, f"key file {os.fspath(path)!r}"))

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


def _hex_key(text: str, source: str) -> bytes:
    """The key bytes of hex ``text``; errors say where it came from, not what it is."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigError(
            f"the HMAC key in the {source} is not a hex string (the value is not shown)"
        ) from None
    if len(key) < MIN_KEY_SIZE:
        raise ConfigError(
            f"the HMAC key in the {source} is {len(key)} bytes, at least "
            f"{MIN_KEY_SIZE} are needed: use secrets.token_hex(32)"
        )
    return key
