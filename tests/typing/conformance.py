"""Static proof that every adapter satisfies its port: checked by mypy, never run.

Each assignment below fails type checking if an adapter's signature drifts from its
Protocol. The modules are imported as the repository's top-level ``adapters``
package, not ``sergeant.adapters``: mypy cannot follow setuptools' package-dir
mapping, and this file is only ever read by mypy (``.ci/test.sh`` runs it).
"""

from __future__ import annotations

from typing import Protocol

from adapters.codecs import (
    Bz2Codec,
    GzipCodec,
    HmacSigner,
    JsonCodec,
    LzmaCodec,
    MsgpackCodec,
    PickleCodec,
    ZlibCodec,
)
from adapters.executors.asyncio import AsyncioExecutor
from adapters.executors.processes import ProcessExecutor
from adapters.executors.serial import SerialExecutor
from adapters.executors.threads import ThreadExecutor
from adapters.memory import MemoryBroker
from adapters.mongo import MongoBroker, MongoNodesBroker
from adapters.redis import RedisBroker
from adapters.sqlite import SqliteBroker
from adapters.watchdogs.null import NullWatchdog
from adapters.watchdogs.processes import ProcessWatchdog
from adapters.watchdogs.threads import ThreadWatchdog
from sergeant.protocols import (
    Broker,
    Codec,
    Executor,
    Lock,
    SupportsBatchCoding,
    SupportsInspection,
    SupportsKeys,
    SupportsLocks,
    SupportsPrefetch,
    Watchdog,
)


def brokers(
    memory: MemoryBroker,
    sqlite: SqliteBroker,
    mongo: MongoBroker,
    mongo_nodes: MongoNodesBroker,
    redis: RedisBroker,
) -> None:
    """Every broker is a Broker with inspection, locks and keys."""
    for_broker: list[Broker] = [memory, sqlite, mongo, mongo_nodes, redis]
    inspecting: list[SupportsInspection] = [memory, sqlite, mongo, mongo_nodes, redis]
    locking: list[SupportsLocks] = [memory, sqlite, mongo, mongo_nodes, redis]
    keys: list[SupportsKeys] = [memory, sqlite, mongo, mongo_nodes, redis]
    prefetching: list[SupportsPrefetch] = [memory, redis]  # optional capability
    locks: list[Lock] = [
        memory.lock("a"),
        sqlite.lock("a"),
        mongo.lock("a"),
        redis.lock("a"),
    ]
    del for_broker, inspecting, locking, keys, prefetching, locks


class _BatchCodec(Codec, SupportsBatchCoding, Protocol):
    """A codec that also takes batches: every codec of ours."""


def codecs(pickle: PickleCodec, key: bytes) -> None:
    """Serializers, compressors and the signer are all Codecs, taking batches."""
    every: list[_BatchCodec] = [
        pickle,
        MsgpackCodec(),
        JsonCodec(),
        ZlibCodec(pickle),
        GzipCodec(pickle),
        Bz2Codec(pickle),
        LzmaCodec(pickle),
        HmacSigner(pickle, key=key),
    ]
    del every


def executors_and_watchdogs() -> None:
    """Executors are Executors; watchdogs are Watchdogs."""
    executors: list[Executor] = [
        SerialExecutor(),
        ThreadExecutor(threads=2),
        ProcessExecutor(processes=2),
        AsyncioExecutor(concurrency=2),
    ]
    watchdogs: list[Watchdog] = [NullWatchdog(), ThreadWatchdog(), ProcessWatchdog()]
    del executors, watchdogs
