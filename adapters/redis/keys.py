"""The key-value capability: plain GET, SET PX and DEL under the namespace.

Each key lives on the node its name hashes to (see ``RedisBroker``); a ttl is
rounded to whole milliseconds, at least one.
"""

from __future__ import annotations

from ._node import Node


def _name(node: Node, key: str) -> str:
    return f"{node.namespace}:key:{key}"


def get_key(node: Node, key: str) -> bytes | None:
    """The value stored under ``key`` on ``node``, or None."""
    value: bytes | None = node.guard.call(node.client.get, _name(node, key))
    return value


def set_key(node: Node, key: str, value: bytes, ttl: float | None) -> None:
    """Store ``value`` under ``key`` on ``node``, lapsing after ``ttl`` seconds."""
    px = None if ttl is None else max(1, round(ttl * 1000))
    node.guard.call(node.client.set, _name(node, key), value, px=px)


def delete_key(node: Node, key: str) -> bool:
    """Remove ``key`` from ``node``; True when it existed."""
    return bool(node.guard.call(node.client.delete, _name(node, key)))
