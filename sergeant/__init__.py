"""sergeant: fast, safe and simple distributed task queues in pure Python.

This package is the pure core: the task model, its lifecycle, the ports
(``sergeant.protocols``) and the worker. Backends live in ``sergeant.adapters``.
"""

from __future__ import annotations

from sergeant.config import (
    DeliveryMode,
    RetryPolicy,
    Starvation,
    Timeouts,
    WorkerConfig,
)
from sergeant.errors import (
    BrokerError,
    BrokerUnavailable,
    CodecError,
    ConfigError,
    DecodeError,
    EncodeError,
    ForeignPayloadError,
    IllegalTransition,
    LockError,
    PayloadTooLarge,
    SergeantError,
    SignatureError,
    TaskTimedOut,
    WatchdogError,
)
from sergeant.producer import Producer
from sergeant.protocols import QueueLengths
from sergeant.supervision import StopReason
from sergeant.task import Priority, Task
from sergeant.worker import Worker

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "CodecError",
    "ConfigError",
    "DecodeError",
    "DeliveryMode",
    "EncodeError",
    "ForeignPayloadError",
    "IllegalTransition",
    "LockError",
    "PayloadTooLarge",
    "Priority",
    "Producer",
    "QueueLengths",
    "RetryPolicy",
    "SergeantError",
    "SignatureError",
    "Starvation",
    "StopReason",
    "Task",
    "TaskTimedOut",
    "Timeouts",
    "WatchdogError",
    "Worker",
    "WorkerConfig",
]
