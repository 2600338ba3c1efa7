"""Fixtures for the mongo backend: mongomock always, a real server when one is named.

No MongoDB server can be installed on our machines, so the contract suites run
against ``mongomock`` (rows ``mongo-mock`` and ``mongo-mock-nodes``; lower
fidelity: no query planner, no indexes, no real concurrency) and, when
``SERGEANT_TEST_MONGO_URL`` is set, against that server too (row ``mongo``). A URL
that is set but unreachable fails the tests; it never skips them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import mongomock
import pymongo
import pytest
from sergeant.adapters.mongo import MongoBroker, MongoNodesBroker

MONGO_URL_VAR = "SERGEANT_TEST_MONGO_URL"


def mongo_url() -> str | None:
    """The real server's URL from the environment, or None when not set."""
    return os.environ.get(MONGO_URL_VAR) or None


def _fresh_name() -> str:
    return f"sergeant_test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def mongo_mock_broker() -> Iterator[MongoBroker]:
    """A broker on a fresh mongomock client and database, closed afterwards."""
    broker = MongoBroker(mongomock.MongoClient(), database=_fresh_name())
    yield broker
    broker.close()


@pytest.fixture
def mongo_mock_nodes_broker() -> Iterator[MongoNodesBroker]:
    """A nodes broker over two separate mongomock deployments, closed afterwards."""
    nodes = [MongoBroker(mongomock.MongoClient(), database=_fresh_name()) for _ in "ab"]
    broker = MongoNodesBroker(nodes)
    yield broker
    broker.close()


@pytest.fixture(scope="session")
def mongo_server_client() -> Iterator[pymongo.MongoClient[Any]]:
    """A client on ``SERGEANT_TEST_MONGO_URL``, proven reachable (or the test fails)."""
    url = mongo_url()
    if url is None:
        pytest.fail(f"{MONGO_URL_VAR} is not set: no real MongoDB server to test")
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=5000
    )
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as error:
        client.close()
        pytest.fail(f"{MONGO_URL_VAR}={url!r} is set but unreachable: {error}")
    yield client
    client.close()


@pytest.fixture
def mongo_broker(
    mongo_server_client: pymongo.MongoClient[Any],
) -> Iterator[MongoBroker]:
    """A broker on a fresh database of the real server, dropped afterwards."""
    name = _fresh_name()
    broker = MongoBroker(mongo_server_client, database=name)
    yield broker
    broker.close()
    mongo_server_client.drop_database(name)
