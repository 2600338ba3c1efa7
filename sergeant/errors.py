"""The exceptions sergeant raises.

Adapters translate their driver's exceptions into these, so user code and the worker
loop handle one family whatever the backend (limits' ``_wrap_errors`` idea).
"""

from __future__ import annotations


class SergeantError(Exception):
    """Base of every error sergeant raises on purpose."""


class ConfigError(SergeantError, ValueError):
    """A configuration value is invalid; the message names the field."""


class BrokerError(SergeantError):
    """A broker operation failed for a reason other than reachability."""


class BrokerUnavailable(BrokerError):
    """The broker could not be reached; callers may retry with back-off."""


class CodecError(SergeantError):
    """Base of encoding and decoding errors."""


class EncodeError(CodecError, ValueError):
    """A task could not be encoded (for example a kwarg the serializer cannot hold)."""


class DecodeError(CodecError, ValueError):
    """A payload could not be decoded; the worker dead-letters it with this message."""


class ForeignPayloadError(DecodeError):
    """The payload was written by a different codec; the message names both."""


class SignatureError(DecodeError):
    """The payload's signature is missing or wrong: not written by a key holder."""


class PayloadTooLarge(CodecError, ValueError):
    """A payload exceeds the configured size limit."""


class IllegalTransition(SergeantError):
    """A lifecycle event is not allowed in the task's current state."""


class LockError(SergeantError):
    """A lock operation was refused (for example releasing a lock held by another)."""


class WatchdogError(SergeantError):
    """A watchdog could not arm, disarm or enforce a deadline."""


class TaskTimedOut(BaseException):
    """Raised inside a running task by a watchdog when its deadline passes.

    A ``BaseException`` so that a task's own ``except Exception`` does not swallow it.
    """
