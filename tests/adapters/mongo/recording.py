"""A recording ``Database`` stand-in for the Mongo broker's tests.

mongomock has no query planner, so the tests record every call the broker makes
and check each filter, sort and update against the index specs: a query that
only works because mongomock scans everything shows up in review, not in
production.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import attrs
import mongomock
from bson import ObjectId
from pymongo.errors import AutoReconnect

from sergeant.protocols import Delivery

T = 1_000_000.0  # the fake wall clock's start
SORT = [("priority", 1), ("ready_at", 1), ("seq", 1)]
LEASE_FIELDS = {"lease_owner": "", "lease_id": ""}


@attrs.define
class Call:
    collection: str
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    cursor: list[tuple[str, tuple[Any, ...]]] = attrs.Factory(list)


class _Cursor:
    def __init__(self, inner: Any, call: Call) -> None:
        self._inner, self._call = inner, call

    def sort(self, *args: Any) -> _Cursor:
        self._call.cursor.append(("sort", args))
        self._inner = self._inner.sort(*args)
        return self

    def limit(self, n: int) -> _Cursor:
        self._call.cursor.append(("limit", (n,)))
        self._inner = self._inner.limit(n)
        return self

    def __iter__(self) -> Any:
        return iter(self._inner)


class _Collection:
    """Records each method call (and a find's cursor calls), then delegates."""

    def __init__(self, inner: Any, name: str, log: Recorder) -> None:
        self._inner, self._name, self._log = inner, name, log

    def __getattr__(self, attr: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self._log.fail_next:
                error = self._log.fail_next.pop(0)
                if error is not None:
                    raise error
            # Copied: mongomock mutates some arguments (it adds _id to projections).
            record = Call(self._name, attr, copy.deepcopy(args), copy.deepcopy(kwargs))
            self._log.calls.append(record)
            result = getattr(self._inner, attr)(*args, **kwargs)
            if self._log.lose_reply_of == attr:  # done, but the reply is lost
                self._log.lose_reply_of = None
                raise AutoReconnect("connection closed before the reply")
            return _Cursor(result, record) if attr == "find" else result

        return call


class Recorder:
    """A ``Database`` stand-in over a mongomock database that records every call.

    ``fail_next`` holds errors raised (without effect) by the next calls;
    ``lose_reply_of`` names a method whose next call takes effect and then fails,
    like a reply lost on the wire.
    """

    def __init__(self) -> None:
        self.db = mongomock.MongoClient()[f"t{uuid.uuid4().hex[:8]}"]
        self.calls: list[Call] = []
        self.options: dict[str, dict[str, Any]] = {}
        self.fail_next: list[Exception | None] = []
        self.lose_reply_of: str | None = None

    @property
    def client(self) -> Any:
        return self.db.client

    def get_collection(self, name: str, **options: Any) -> _Collection:
        short = name.rsplit(".", 1)[-1]
        self.options[short] = options
        return _Collection(self.db.get_collection(name, **options), short, self)

    def take(self) -> list[Call]:
        """The calls made since the last ``take`` (index creation excluded)."""
        calls = [c for c in self.calls if c.method != "create_index"]
        self.calls.clear()
        return calls


def ids(got: list[Delivery]) -> list[ObjectId]:
    return [ObjectId(d.receipt.partition(":")[0]) for d in got]


def token(got: list[Delivery]) -> str:
    return got[0].receipt.partition(":")[2]
