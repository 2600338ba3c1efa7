"""The SQLite broker: the embedded default, one file shared by a machine's processes.

Uses only the standard library's ``sqlite3`` (SQLite >= 3.35 for ``RETURNING``).
"""

from __future__ import annotations

from .broker import SqliteBroker
from .locks_keys import SqliteLock
from .url import parse_url

__all__ = ["SqliteBroker", "SqliteLock", "parse_url"]
