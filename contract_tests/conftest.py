"""The adapter tables: a row per adapter, and the port fixtures parametrized over them.

Adding an adapter means adding its row here (and its backend fixture under
``tests/support/``); every suite in this folder then runs against it unchanged.
Suites take only the port fixtures below and never import a concrete adapter.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

# name -> (backend fixture name, capabilities claimed, marks)
# capabilities: "inspection" (SupportsInspection), "locks" (SupportsLocks),
# "keys" (SupportsKeys). Every broker row must claim all three to be complete.
# "prefetch" (SupportsPrefetch) is optional: only brokers that gain from it.
BROKERS: dict[str, tuple[str, frozenset[str], tuple[Any, ...]]] = {
    "memory": (
        "memory_broker",
        frozenset({"inspection", "locks", "keys", "prefetch"}),
        (),
    ),
    "sqlite": ("sqlite_broker", frozenset({"inspection", "locks", "keys"}), ()),
    "mongo-mock": (
        "mongo_mock_broker",
        frozenset({"inspection", "locks", "keys"}),
        (pytest.mark.mongo,),
    ),
    "mongo-mock-nodes": (
        "mongo_mock_nodes_broker",
        frozenset({"inspection", "locks", "keys"}),
        (pytest.mark.mongo,),
    ),
    "redis": (
        "redis_broker",
        frozenset({"inspection", "locks", "keys", "prefetch"}),
        (pytest.mark.redis,),
    ),
    "redis-nodes": (
        "redis_nodes_broker",
        frozenset({"inspection", "locks", "keys", "prefetch"}),
        (pytest.mark.redis,),
    ),
    "redis-cluster": (
        "redis_cluster_broker",
        frozenset({"inspection", "locks", "keys", "prefetch"}),
        (pytest.mark.redis,),
    ),
}
# A real MongoDB only when one is named (none can be installed here); see
# tests/support/mongo_backend.py. Set but unreachable fails; it never skips.
if os.environ.get("SERGEANT_TEST_MONGO_URL"):
    BROKERS["mongo"] = (
        "mongo_broker",
        frozenset({"inspection", "locks", "keys"}),
        (pytest.mark.mongo,),
    )

# name -> (fixture name building the codec, claims). Rows are compositions, not only
# classes. Claims: the kwarg kinds the codec round-trips exactly (the sample names in
# contract_tests/test_codec.py; any other kind must raise EncodeError or come back
# changed, e.g. a tuple as a list), and "signed" if every tampering is rejected.
_JSON_KINDS = frozenset(
    {"none", "bool", "int", "bigint", "float", "inf", "str", "list", "dict"}
)
_MSGPACK_KINDS = (_JSON_KINDS - {"bigint"}) | {"bytes", "int_keys"}
_PICKLE_KINDS = _JSON_KINDS | _MSGPACK_KINDS | {"tuple", "set", "datetime"}
CODECS: dict[str, tuple[str, frozenset[str]]] = {
    "pickle": ("pickle_codec", _PICKLE_KINDS),
    "msgpack": ("msgpack_codec", _MSGPACK_KINDS),
    "json": ("json_codec", _JSON_KINDS),
    "zlib+msgpack": ("zlib_msgpack_codec", _MSGPACK_KINDS),
    "lzma+pickle": ("lzma_pickle_codec", _PICKLE_KINDS),
    "gzip+json": ("gzip_json_codec", _JSON_KINDS),
    "bz2+pickle": ("bz2_pickle_codec", _PICKLE_KINDS),
    "hmac+zlib+pickle": ("hmac_zlib_pickle_codec", _PICKLE_KINDS | {"signed"}),
}

# name -> fixture name building the executor
EXECUTORS: dict[str, str] = {
    "serial": "serial_executor",
    "threads": "thread_executor",
    "asyncio": "asyncio_executor",
    "process": "process_executor",
}

# name -> (fixture name building a watchdog that fires, claims). Claims gate the
# tests that not every watchdog can take inside pytest's own process:
# "any_thread": arm() works from any thread, not only the main one;
# "in_process_escalation": after the grace it raises in the task once more, rather
# than killing the process. ProcessWatchdog SIGKILLs the process, which would end
# pytest: its escalation is covered in fresh interpreters by
# tests/adapters/test_process_watchdog.py and test_process_watchdog_supervised.py.
WATCHDOGS: dict[str, tuple[str, frozenset[str]]] = {
    "threads": ("thread_watchdog", frozenset({"any_thread", "in_process_escalation"})),
    "process": ("process_watchdog", frozenset()),
}


def _broker_params(capability: str | None = None) -> list[Any]:
    return [
        pytest.param(fixture, id=name, marks=marks)
        for name, (fixture, caps, marks) in BROKERS.items()
        if capability is None or capability in caps
    ]


def _params(table: dict[str, str]) -> list[Any]:
    return [pytest.param(fixture, id=name) for name, fixture in table.items()]


def _watchdog_params(claim: str | None = None) -> list[Any]:
    return [
        pytest.param(fixture, id=name)
        for name, (fixture, claims) in WATCHDOGS.items()
        if claim is None or claim in claims
    ]


@pytest.fixture(params=_broker_params())
def broker(request: pytest.FixtureRequest) -> Any:
    """A fresh, empty broker of every registered kind."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_broker_params("inspection"))
def inspecting_broker(request: pytest.FixtureRequest) -> Any:
    """A fresh broker that claims ``SupportsInspection``."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_broker_params("prefetch"))
def prefetching_broker(request: pytest.FixtureRequest) -> Any:
    """A fresh broker that claims ``SupportsPrefetch``."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_broker_params("locks"))
def lock_broker(request: pytest.FixtureRequest) -> Any:
    """A fresh broker that claims ``SupportsLocks``."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_broker_params("keys"))
def keys_broker(request: pytest.FixtureRequest) -> Any:
    """A fresh broker that claims ``SupportsKeys``."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=[pytest.param(name, id=name) for name in CODECS])
def codec_row(request: pytest.FixtureRequest) -> str:
    """The name of the ``CODECS`` row under test."""
    return str(request.param)


@pytest.fixture
def codec(request: pytest.FixtureRequest, codec_row: str) -> Any:
    """Every registered codec composition."""
    return request.getfixturevalue(CODECS[codec_row][0])


@pytest.fixture
def codec_claims(codec_row: str) -> frozenset[str]:
    """What the codec under test claims: the kwarg kinds it carries, "signed"."""
    return CODECS[codec_row][1]


@pytest.fixture
def foreign_codec(request: pytest.FixtureRequest, codec_row: str) -> Any:
    """The codec of the next row in ``CODECS``: another composition."""
    names = list(CODECS)
    other = names[(names.index(codec_row) + 1) % len(names)]
    return request.getfixturevalue(CODECS[other][0])


@pytest.fixture(params=_params(EXECUTORS))
def executor(request: pytest.FixtureRequest) -> Any:
    """Every registered executor, shut down after the test."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_watchdog_params())
def watchdog(request: pytest.FixtureRequest) -> Any:
    """Every registered watchdog that enforces deadlines, closed after the test."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_watchdog_params("any_thread"))
def any_thread_watchdog(request: pytest.FixtureRequest) -> Any:
    """A watchdog that claims "any_thread": it can be armed from any thread."""
    return request.getfixturevalue(request.param)


@pytest.fixture(params=_watchdog_params("in_process_escalation"))
def in_process_escalating_watchdog(request: pytest.FixtureRequest) -> Any:
    """A watchdog that claims "in_process_escalation": it escalates in the task."""
    return request.getfixturevalue(request.param)
