"""HmacSigner: signs payloads with a shared secret, and checks before decoding.

Why: decoding is where an attacker who can write to the broker strikes (a pickle
runs code when loaded, a compressed stream can be a decompression bomb). The
signer is always the outermost layer, and it verifies the HMAC-SHA256 of the
header and body, in constant time, before the inner codec sees a single byte; a
payload from anyone without the key is rejected with ``SignatureError`` and
dead-lettered by the worker, never unpickled or decompressed.

Key rotation: a signer signs with one key and may also accept others
(``also_accepted``), so producers and workers can move to a new key one process
at a time without dead-lettering what the old key signed (see ``docs/codecs.md``).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from sergeant.errors import ConfigError, DecodeError, SignatureError
from sergeant.task import Task

from . import _frame, _wire

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
        key: the shared secret, at least 16 bytes; every payload is signed with it.
        also_accepted: more keys whose signatures decode accepts, for rotation:
            the key being retired, or the next one before producers switch to it.
            Each is tried only after ``key`` fails to match.

    Raises:
        ConfigError: a key is not bytes or is shorter than 16 bytes (the message
            says which one, never its value), or ``inner`` is signed already.
    """

    def __init__(
        self,
        inner: _frame.Layer,
        *,
        key: bytes,
        also_accepted: Sequence[bytes] = (),
    ) -> None:
        _check_key(key, "key")
        if isinstance(also_accepted, bytes | bytearray | str) or not isinstance(
            also_accepted, Iterable
        ):
            raise ConfigError(
                "HmacSigner.also_accepted must be a sequence of keys (bytes), got "
                f"a {type(also_accepted).__name__}"
            )
        # Once, as a tuple: a generator checked below would be spent before the
        # keys are taken from it (rotation silently off).
        also_accepted = tuple(also_accepted)
        for index, other in enumerate(also_accepted):
            _check_key(other, f"also_accepted[{index}]")
        self.header = _frame.inner_header(inner, "HmacSigner").with_signature()
        self._inner = inner
        self._prefix = self.header.prefix
        self._body_at = self.header.body_offset
        # The MAC of every payload starts with the same header: hash it once and
        # copy the state per payload (cheaper than hmac.digest over header+body).
        self._mac = hmac.new(bytes(key), self._prefix, "sha256")
        self._accepted = tuple(
            hmac.new(bytes(other), self._prefix, "sha256") for other in also_accepted
        )

    @classmethod
    def from_env(
        cls,
        inner: _frame.Layer,
        variable: str = "SERGEANT_HMAC_KEY",
        accepted_variable: str = "SERGEANT_HMAC_ALSO_ACCEPTED",
    ) -> HmacSigner:
        """A signer whose key is the hex string in environment ``variable``.

        ``accepted_variable``, when set, holds more hex keys, comma-separated,
        that decode also accepts (``also_accepted``, for rotation). Keeps the
        secrets out of code and command lines (which ``ps`` shows). Error messages
        name the variable, never its value.

        Raises:
            ConfigError: ``variable`` is unset, or a key is not hex or too short.
        """
        text = os.environ.get(variable)
        if text is None:
            raise ConfigError(
                f"environment variable {variable} is not set: it must hold the "
                "HMAC key in hex (python -c 'import secrets; "
                "print(secrets.token_hex(32))')"
            )
        key = _hex_key(text, f"environment variable {variable}")
        source = f"environment variable {accepted_variable}"
        accepted = [
            _hex_key(part, source)
            for part in os.environ.get(accepted_variable, "").split(",")
            if part.strip()
        ]
        return cls(inner, key=key, also_accepted=accepted)

    @classmethod
    def from_file(cls, inner: _frame.Layer, path: str | os.PathLike[str]) -> HmacSigner:
        """A signer whose key is the hex string in file ``path`` (a mounted secret).

        The first non-empty line is the signing key; further non-empty lines are
        keys that decode also accepts (``also_accepted``, for rotation).
        Surrounding whitespace is ignored. Error messages name the file, never its
        content.

        Raises:
            ConfigError: the file cannot be read or holds no key, or a key is not
                hex or too short.
        """
        try:
            text = Path(path).read_text(encoding="ascii", errors="replace")
        except OSError as error:
            raise ConfigError(
                f"cannot read the HMAC key file {os.fspath(path)!r}: "
                f"{error.strerror or type(error).__name__}"
            ) from None
        source = f"key file {os.fspath(path)!r}"
        keys = [_hex_key(line, source) for line in text.splitlines() if line.strip()]
        if not keys:
            raise ConfigError(f"the {source} holds no HMAC key")
        return cls(inner, key=keys[0], also_accepted=keys[1:])

    def __repr__(self) -> str:
        extra = (
            f", also_accepted=<{len(self._accepted)} hidden>" if self._accepted else ""
        )
        return f"HmacSigner({self._inner!r}, key=<hidden>{extra})"

    @property
    def name(self) -> str:
        """What this codec writes, e.g. ``"pickle+zlib+hmac"``; used in errors."""
        return self.header.name

    def encode(self, task: Task) -> bytes:
        """Encode with the inner codec and sign.

        Raises:
            EncodeError: the inner serializer cannot encode a kwarg.
        """
        return self.encode_many((task,))[0]

    def encode_many(self, tasks: Sequence[Task]) -> list[bytes]:
        """``encode`` of every task (``SupportsBatchCoding``).

        Raises:
            EncodeError: as ``encode`` would, for the first task at fault.
        """
        prefix, signer = self._prefix, self._mac
        signed = []
        for body in _frame.encode_bodies(self._inner, tasks):
            mac = signer.copy()
            mac.update(body)
            signed.append(b"".join((prefix, mac.digest(), body)))
        return signed

    def decode(self, data: bytes) -> Task:
        """Verify the signature, then decode with the inner codec.

        Raises:
            SignatureError: the payload is unsigned, or its MAC does not match
                (tampered, truncated, or signed with another key).
            ForeignPayloadError: another codec composition wrote it.
            DecodeError: the signed body is corrupt (a bug or a key leak).
        """
        return _frame.single(self.decode_many((data,)))

    def decode_many(self, payloads: Sequence[bytes]) -> list[Task | DecodeError]:
        """``decode`` of every payload, its DecodeError in place of a task
        (``SupportsBatchCoding``). No byte of a payload whose signature fails
        reaches the inner codec."""
        bodies = [self._verified(data) for data in payloads]
        return _wire.tasks_of(self._inner.load_records(bodies))

    def _verified(self, data: bytes) -> bytes | _wire.Failed:
        """The body of ``data`` if its header and signature check out."""
        if (
            not isinstance(data, _frame.BYTES)
            or data[: _frame.HEADER_SIZE] != self._prefix
        ):
            return _wire.Failed(_frame.mismatch(data, self.header))
        body = data[self._body_at :]
        sent = data[_frame.HEADER_SIZE : self._body_at]
        mac = self._mac.copy()
        mac.update(body)
        if not hmac.compare_digest(mac.digest(), sent) and not self._accepts(
            body, sent
        ):
            return _wire.Failed(
                SignatureError(
                    f"payload signature does not match ({self.name}): tampered, "
                    "truncated, or signed with another key"
                )
            )
        return body

    def _accepts(self, body: bytes, sent: bytes) -> bool:
        """Whether one of the ``also_accepted`` keys signed ``body``."""
        for accepted in self._accepted:
            mac = accepted.copy()
            mac.update(body)
            if hmac.compare_digest(mac.digest(), sent):
                return True
        return False


def _check_key(key: object, name: str) -> None:
    """Raise ConfigError naming ``name`` when ``key`` is not a usable secret."""
    if not isinstance(key, bytes | bytearray):
        raise ConfigError(f"HmacSigner {name} must be bytes, got {type(key).__name__}")
    if len(key) < MIN_KEY_SIZE:
        raise ConfigError(
            f"HmacSigner {name} must be at least {MIN_KEY_SIZE} bytes, got "
            f"{len(key)}: use secrets.token_bytes(32)"
        )


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
