"""The MongoDB broker: durable, queryable task storage on pymongo.

``MongoBroker`` runs on one deployment (standalone, replica set or sharded);
``MongoNodesBroker`` spreads queues over several independent ones. ``from_url``
builds either from ``mongodb://`` / ``mongodb+srv://`` URLs. See ``docs/mongo.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .broker import MongoBroker
from .lock import MongoLock
from .nodes import MongoNodesBroker

__all__ = ["MongoBroker", "MongoLock", "MongoNodesBroker", "from_url"]


def from_url(
    url: str | Sequence[str], **options: Any
) -> MongoBroker | MongoNodesBroker:
    """A broker on ``url``, or a ``MongoNodesBroker`` over a list of URLs.

    A single URL may itself name several hosts (``mongodb://a,b,c/?replicaSet=rs``):
    that is one replica set, not several nodes. ``options`` go to ``MongoBroker``.
    """
    if isinstance(url, str):
        return MongoBroker.from_url(url, **options)
    return MongoNodesBroker([MongoBroker.from_url(u, **options) for u in url])
