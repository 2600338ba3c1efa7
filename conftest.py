"""Registers the backend fixtures shared by ``tests/`` and ``contract_tests/``.

Each backend's fixtures live in their own module under ``tests/support/`` and start
(and tear down) whatever real service they need on free loopback ports.
"""

pytest_plugins = [
    "tests.support.memory_backend",
    "tests.support.sqlite_backend",
    "tests.support.redis_backend",
    "tests.support.mongo_backend",
    "tests.support.codec_fixtures",
    "tests.support.executor_fixtures",
]
