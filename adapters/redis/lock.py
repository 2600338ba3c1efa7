"""Named locks on Redis: SET NX PX with a random token, token-checked in Lua.

Only the object that took a lock may release it or change its ttl: both check the
token and act in one script, so a holder whose ttl lapsed cannot remove the lock
a second process has taken since.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from sergeant.protocols.lock import check_ttl
from sergeant.waiting import poll

from ._node import Node

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# A retried release: its first attempt may have deleted the lock and lost the
# reply; a lock nobody holds counts as released by this handle.
_RELEASE_AGAIN = """
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then return redis.call('DEL', KEYS[1]) end
if held then return 0 end
return 1
"""

# A retried acquire: its first attempt may have taken the lock and lost the reply,
# so the lock held under this handle's own token counts as taken (ttl set again).
_RETAKE = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""

_SET_TTL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def _millis(seconds: float) -> int:
    # PX takes whole milliseconds and refuses 0; a positive ttl keeps at least 1 ms.
    return max(1, round(seconds * 1000))


class RedisLock:
    """A handle, with its own token, on the lock called ``name``.

    Made by ``RedisBroker.lock(name)``; the lock lives on the node its name hashes
    to. Not meant to be shared between threads (one holder, one handle).
    """

    def __init__(self, node: Node, name: str) -> None:
        self._node = node
        self._name = name
        self._key = f"{node.namespace}:lock:{name}"
        self._token = secrets.token_hex(16)
        self._release = node.client.register_script(_RELEASE)
        self._set_ttl = node.client.register_script(_SET_TTL)
        self._retake = node.client.register_script(_RETAKE)
        self._release_again = node.client.register_script(_RELEASE_AGAIN)

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._name

    def acquire(
        self,
        *,
        timeout: float | None = None,
        check_interval: float = 0.05,
        ttl: float | None = 60.0,
    ) -> bool:
        """Take the lock, polling every ``check_interval`` s for up to ``timeout`` s.

        Returns True when taken, False when the timeout passed. ``ttl`` makes the
        lock lapse by itself; None keeps it until released.
        """
        check_ttl(ttl)
        px = None if ttl is None else _millis(ttl)
        guard = self._node.guard
        return poll(
            lambda: bool(guard.call(self._take_once(px))),
            timeout=timeout,
            check_interval=check_interval,
        )

    def _take_once(self, px: int | None) -> Callable[[], Any]:
        """One try to take the lock, for the guard to call (again on a fault).

        The first call is a plain SET NX. A repeat is the guard retrying after a
        fault, and the first may have taken the lock before its reply was lost:
        a plain SET NX would then fail against this handle's own token, and the
        lock would stay taken by nobody who knows it (for good without a ttl).
        """
        calls = 0

        def take() -> Any:
            nonlocal calls
            calls += 1
            if calls == 1:
                return self._node.client.set(self._key, self._token, nx=True, px=px)
            return self._retake([self._key], [self._token, "" if px is None else px])

        return take

    def release(self) -> bool:
        """Release the lock if this handle holds it; False (no change) otherwise.

        A retry after a lost reply (the first attempt may have run) finds the
        lock free or held by another: free counts as released.
        """
        calls = 0

        def release() -> Any:
            nonlocal calls
            calls += 1
            script = self._release if calls == 1 else self._release_again
            return script([self._key], [self._token])

        return bool(self._node.guard.call(release))

    def is_locked(self) -> bool:
        """Whether anyone holds the lock now."""
        return bool(self._node.guard.call(self._node.client.exists, self._key))

    def get_ttl(self) -> float | None:
        """Seconds before the lock lapses; None when not held or held without ttl."""
        millis = self._node.guard.call(self._node.client.pttl, self._key)
        return None if millis < 0 else millis / 1000.0

    def set_ttl(self, ttl: float) -> bool:
        """Change the ttl if this handle holds the lock; False otherwise."""
        check_ttl(ttl)
        args = [self._token, _millis(ttl)]
        return bool(self._node.guard.call(self._set_ttl, [self._key], args))
