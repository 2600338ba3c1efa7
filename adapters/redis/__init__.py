"""The Redis broker: throughput, at least once, on one server, many, or a cluster.

``RedisBroker(client=redis.Redis(...))`` for one server or a
``redis.cluster.RedisCluster``; ``RedisBroker(clients=[...])`` for several
independent servers; ``RedisBroker.from_url("redis://...")`` as a convenience.
See ``docs/redis.md`` for the key layout, guarantees and tuning.
"""

from __future__ import annotations

from .broker import RedisBroker
from .faults import ConnectionGuard, RetryPolicy
from .lock import RedisLock

__all__ = ["ConnectionGuard", "RedisBroker", "RedisLock", "RetryPolicy"]
