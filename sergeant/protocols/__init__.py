"""The ports of sergeant's hexagon: what the core needs from the outside world."""

from __future__ import annotations

from .broker import (
    Broker,
    DeadLetter,
    Delivery,
    OpenDelivery,
    PendingReserve,
    QueueLengths,
    SupportsInspection,
    SupportsPrefetch,
    check_eta,
    check_limit,
    check_reserve,
    check_seconds,
)
from .codec import Codec, SupportsBatchCoding, decode_all, encode_all
from .executor import Executor, Job
from .lock import Lock, SupportsKeys, SupportsLocks, check_ttl
from .watchdog import Watchdog

__all__ = [
    "Broker",
    "Codec",
    "DeadLetter",
    "Delivery",
    "Executor",
    "Job",
    "Lock",
    "OpenDelivery",
    "PendingReserve",
    "QueueLengths",
    "SupportsBatchCoding",
    "SupportsInspection",
    "SupportsKeys",
    "SupportsLocks",
    "SupportsPrefetch",
    "Watchdog",
    "check_eta",
    "check_limit",
    "check_reserve",
    "check_seconds",
    "check_ttl",
    "decode_all",
    "encode_all",
]
